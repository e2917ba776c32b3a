"""Linear measurement operators y = A x (+ noise) for inverse problems, with the orthogonal decomposition imputation needs.

Every operator knows its singular value decomposition A = U S V^T in a form that costs no more than A itself:
:meth:`LinearOperator.to_spectral` is V^T x (an orthogonal change of basis of the sample space, same shape as x),
:meth:`LinearOperator.from_spectral` is its inverse V c, and :meth:`LinearOperator.spectral_measurement` gives the
observed coordinates of V^T x that a noiseless measurement fixes, S^-1 U^T y, with :attr:`observed` marking them. The
paper's imputation (Song et al. 2021, App. I) replaces exactly those coordinates, so inpainting (V = I, a pixel
selection) and colorization (per pixel, an orthogonal 3 x 3 matrix whose first axis is the grey direction) are two
instances of one mechanism. Samples are (B, C, H, W) tensors; measurements are (B, ...) tensors of ``output_shape``.
"""

import math

import torch


class LinearOperator:
    """A linear map A from samples of ``sample_shape`` (C, H, W) to measurements of ``output_shape``.

    Subclasses implement :meth:`forward`, :meth:`transpose`, :meth:`to_spectral`, :meth:`from_spectral`,
    :meth:`spectral_measurement` and :attr:`observed`. :meth:`pseudo_inverse` follows from them.
    """

    sample_shape = None
    output_shape = None

    def forward(self, x):
        """A x for a batch x of shape (B, *sample_shape)."""
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def transpose(self, y):
        """A^T y for a batch y of shape (B, *output_shape)."""
        raise NotImplementedError

    def to_spectral(self, x):
        """V^T x: the sample in the orthonormal basis whose first coordinates A observes (same shape as x)."""
        raise NotImplementedError

    def from_spectral(self, coefficients):
        """V c, the inverse of :meth:`to_spectral`."""
        raise NotImplementedError

    def spectral_measurement(self, y):
        """S^-1 U^T y in the observed spectral coordinates (zero elsewhere), shape (B, *sample_shape)."""
        raise NotImplementedError

    @property
    def observed(self):
        """Boolean tensor of ``sample_shape`` (or broadcastable to it): the spectral coordinates A observes."""
        raise NotImplementedError

    def pseudo_inverse(self, y):
        """A^+ y = V S^-1 U^T y: the minimum-norm sample that explains a noiseless measurement."""
        return self.from_spectral(self.spectral_measurement(y))

    def check_measurement(self, measurement, name="measurement"):
        """The measurement must be a floating tensor (B, *output_shape)."""
        if not isinstance(measurement, torch.Tensor) or not measurement.is_floating_point() or \
                tuple(measurement.shape[1:]) != tuple(self.output_shape):
            shape = tuple(measurement.shape) if isinstance(measurement, torch.Tensor) else type(measurement).__name__
            raise ValueError(f"{name} must be a floating tensor (B, *{tuple(self.output_shape)}) for"
                             f" {type(self).__name__}, got {shape}.")

    @staticmethod
    def from_matrix(matrix, sample_shape):
        """Any dense A (M, D) over the flattened sample (D = prod(sample_shape)), decomposed once with an SVD."""
        return MatrixOperator(matrix, sample_shape)


class Masking(LinearOperator):
    """Inpainting: A keeps the pixels where ``mask`` is 0 (diffusers' convention: 1 = generate, 0 = keep).

    The measurement has the sample's shape (values at generated pixels are ignored); V = I, so imputation replaces
    the kept pixels themselves.

    Args:
        mask (`torch.Tensor`): (1 or C, H, W) or (B, 1 or C, H, W) of 0 and 1; a batch of masks applies per sample.
        sample_shape (`tuple`): (C, H, W).
    """

    def __init__(self, mask, sample_shape):
        self.sample_shape = self.output_shape = tuple(sample_shape)
        channels, height, width = self.sample_shape
        if not isinstance(mask, torch.Tensor) or mask.dim() not in (3, 4) or tuple(mask.shape[-2:]) != (height, width) \
                or mask.shape[-3] not in (1, channels):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a tensor (1 or {channels}, {height}, {width}) or (B, 1 or {channels},"
                             f" {height}, {width}) for samples of shape {self.sample_shape}, got {shape}.")
        self.keep = (mask < 0.5).expand(*mask.shape[:-3], *self.sample_shape)

    def forward(self, x):
        return x * self.keep.to(x.device)

    transpose = forward

    def to_spectral(self, x):
        return x

    from_spectral = to_spectral

    def spectral_measurement(self, y):
        return y * self.keep.to(y.device)

    @property
    def observed(self):
        return self.keep


def _grey_basis(channels, dtype, device):
    """An orthogonal C x C matrix whose first row is the grey direction (1, ..., 1) / sqrt(C) (Householder reflection)."""
    grey = torch.full((channels,), 1 / math.sqrt(channels), dtype=dtype, device=device)
    first = torch.zeros_like(grey)
    first[0] = 1.0
    direction = first - grey
    if direction.norm() < 1e-12:
        return torch.eye(channels, dtype=dtype, device=device)
    direction = direction / direction.norm()
    return torch.eye(channels, dtype=dtype, device=device) - 2 * torch.outer(direction, direction)  # maps e_0 <-> grey


class ChannelMean(LinearOperator):
    """Colorization: A x is the per-pixel mean over channels, a (1, H, W) grey image (paper App. I.3).

    Per pixel, V is an orthogonal C x C matrix whose first axis is the grey direction, S = 1 / sqrt(C): imputation in
    that basis fixes the grey axis and samples the C - 1 colour axes.

    Args:
        sample_shape (`tuple`): (C, H, W) with C >= 2.
    """

    def __init__(self, sample_shape):
        self.sample_shape = tuple(sample_shape)
        self.output_shape = (1, *self.sample_shape[1:])
        self.channels = self.sample_shape[0]
        self._observed = torch.zeros(self.sample_shape, dtype=torch.bool)
        self._observed[0] = True

    def forward(self, x):
        return x.mean(dim=1, keepdim=True)

    def transpose(self, y):
        return (y / self.channels).expand(-1, self.channels, -1, -1)

    def _basis(self, like):
        return _grey_basis(self.channels, like.dtype, like.device)

    def to_spectral(self, x):
        return torch.einsum("ij,bjhw->bihw", self._basis(x), x)

    def from_spectral(self, coefficients):
        return torch.einsum("ji,bjhw->bihw", self._basis(coefficients), coefficients)

    def spectral_measurement(self, y):
        coefficients = torch.zeros(y.shape[0], *self.sample_shape, dtype=y.dtype, device=y.device)
        coefficients[:, :1] = y * math.sqrt(self.channels)  # S^-1 U^T y with S = 1 / sqrt(C), U = 1
        return coefficients

    @property
    def observed(self):
        return self._observed


class Downsample(LinearOperator):
    """Super-resolution: average pooling by ``factor`` in H and W (each output pixel is the mean of a factor^2 block).

    Per block, V is an orthogonal factor^2 x factor^2 matrix whose first axis is the block's constant direction,
    S = 1 / factor.

    Args:
        factor (`int`): the pooling factor (H and W must be divisible by it).
        sample_shape (`tuple`): (C, H, W).
    """

    def __init__(self, factor, sample_shape):
        channels, height, width = sample_shape
        if not (isinstance(factor, int) and factor >= 1 and height % factor == 0 and width % factor == 0):
            raise ValueError(f"factor must be an integer >= 1 dividing H={height} and W={width}, got {factor!r}.")
        self.factor = factor
        self.sample_shape = tuple(sample_shape)
        self.output_shape = (channels, height // factor, width // factor)
        self._observed = torch.zeros(channels, factor * factor, height // factor, width // factor, dtype=torch.bool)
        self._observed[:, 0] = True

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, self.factor)

    def transpose(self, y):
        return torch.nn.functional.interpolate(y, scale_factor=self.factor, mode="nearest") / self.factor**2

    def _blocks(self, x):
        """(B, C, H, W) -> (B, C, factor^2, H / factor, W / factor)."""
        b, c, h, w = x.shape
        f = self.factor
        return x.view(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4).reshape(b, c, f * f, h // f, w // f)

    def _unblocks(self, blocks):
        b, c, _, h, w = blocks.shape
        f = self.factor
        return blocks.view(b, c, f, f, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * f, w * f)

    def _basis(self, like):
        return _grey_basis(self.factor**2, like.dtype, like.device)

    def to_spectral(self, x):
        return self._unblocks(torch.einsum("ij,bcjhw->bcihw", self._basis(x), self._blocks(x)))

    def from_spectral(self, coefficients):
        return self._unblocks(torch.einsum("ji,bcjhw->bcihw", self._basis(coefficients), self._blocks(coefficients)))

    def spectral_measurement(self, y):
        blocks = torch.zeros(y.shape[0], self.sample_shape[0], self.factor**2, *self.output_shape[1:], dtype=y.dtype,
                             device=y.device)
        blocks[:, :, 0] = y * self.factor  # S^-1 U^T y with S = 1 / factor
        return self._unblocks(blocks)

    @property
    def observed(self):
        return self._unblocks(self._observed[None])[0]


class MatrixOperator(LinearOperator):
    """A dense A (M, D) over the flattened sample, with its SVD computed once (for small samples and tests).

    Args:
        matrix (`torch.Tensor`): (M, D) with D = prod(sample_shape).
        sample_shape (`tuple`): (C, H, W).
    """

    def __init__(self, matrix, sample_shape):
        dim = math.prod(sample_shape)
        if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.shape[1] != dim:
            shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
            raise ValueError(f"matrix must be a 2-D tensor (M, {dim}) for samples of shape {tuple(sample_shape)},"
                             f" got {shape}.")
        self.matrix = matrix.to(torch.float64)
        self.sample_shape = tuple(sample_shape)
        self.output_shape = (matrix.shape[0],)
        u, s, vh = torch.linalg.svd(self.matrix, full_matrices=True)
        rank = int((s > s.max() * 1e-10).sum()) if len(s) else 0
        self._u, self._s, self._vh, self.rank = u[:, :rank], s[:rank], vh, rank
        self._observed = torch.zeros(dim, dtype=torch.bool)
        self._observed[:rank] = True

    def _flat(self, x):
        return x.reshape(x.shape[0], -1).to(torch.float64)

    def forward(self, x):
        return (self._flat(x) @ self.matrix.to(x.device).T).to(x.dtype)

    def transpose(self, y):
        return (y.to(torch.float64) @ self.matrix.to(y.device)).view(-1, *self.sample_shape).to(y.dtype)

    def to_spectral(self, x):
        return (self._flat(x) @ self._vh.to(x.device).T).view_as(x).to(x.dtype)

    def from_spectral(self, coefficients):
        vh = self._vh.to(coefficients.device)
        return (self._flat(coefficients) @ vh).view_as(coefficients).to(coefficients.dtype)

    def spectral_measurement(self, y):
        observed = (y.to(torch.float64) @ self._u.to(y.device)) / self._s.to(y.device)
        coefficients = torch.zeros(y.shape[0], math.prod(self.sample_shape), dtype=torch.float64, device=y.device)
        coefficients[:, : self.rank] = observed
        return coefficients.view(-1, *self.sample_shape).to(y.dtype)

    @property
    def observed(self):
        return self._observed.view(self.sample_shape)
