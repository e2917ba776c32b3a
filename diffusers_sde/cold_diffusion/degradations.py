"""Deterministic degradations D(x0, t) of Cold Diffusion (Bansal et al. 2022, "Cold Diffusion: Inverting Arbitrary
Image Transforms Without Noise").

Time is the paper's discrete setting: integer steps t = 0..T (``num_steps`` = T), with D(x0, 0) = x0 and the image more
degraded as t grows. A degradation is a small object: ``degradation(x0, t)`` with ``t`` an integer (one level for the
batch) or an integer tensor of shape (B,) (one level per sample), and a JSON-able :attr:`Degradation.config`
(``to_config()`` / :meth:`Degradation.from_config`) so a scheduler stores it in ``scheduler_config.json``. Where the
degradation defines it naturally, real t in [0, T] is accepted too (``continuous_time``): the fade interpolates; blur and
mask take a fraction of the next step's operation (a Gaussian of variance ``frac * sigma^2``, a mask factor raised to
``frac``), so D is continuous in t and equal to the paper's on the integer steps. Downsampling's halvings stay discrete.

Every degradation is checked when it is built: its schedule must be monotone, and its t = 0 must be the identity on
a random probe (a subclass that breaks this is refused at construction, whatever its ``__init__`` does).
"""

import math

import torch
import torch.nn.functional as F

from ..validation import check_integer, check_number

_DEGRADATIONS = {}  # class name -> class, filled by Degradation.__init_subclass__ (for from_config)
_PROBE_SHAPE = (2, 3, 16, 16)  # the random probe the t = 0 identity is checked on
_IDENTITY_TOLERANCE = 1e-6  # relative, on a float64 probe


class _CheckedAtConstruction(type):
    """Runs :meth:`Degradation._check_identity` after the full ``__init__`` of any (sub)class."""

    def __call__(cls, *args, **kwargs):
        degradation = super().__call__(*args, **kwargs)
        degradation._check_identity()
        return degradation


class Degradation(metaclass=_CheckedAtConstruction):
    """Base class of a Cold Diffusion degradation D(x0, t), t = 0..``num_steps``.

    A subclass sets ``self.num_steps`` in its ``__init__``, implements :meth:`_degrade` for one integer level and
    returns its constructor arguments from :meth:`_arguments`; validation of ``t``, per-sample levels and the config
    live here.

    Args:
        num_steps (`int`): T, the most degraded level (>= 1).
    """

    is_linear = True  # D(., t) is a linear map for every t (fade to a non-zero constant is affine; see FadeDegradation)
    # D(x0, t) is defined for real t in [0, T], not only on the steps, where the degradation defines it naturally: the
    # fade's interpolation, blur's and mask's fractional last step; downsampling's halvings are discrete.
    continuous_time = False

    def __init__(self, num_steps):
        self.num_steps = check_integer("num_steps (T, the number of degradation steps)", num_steps, minimum=1)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _DEGRADATIONS[cls.__name__] = cls

    # --- public -----------------------------------------------------------------------------------------------
    def __call__(self, x0, t):
        """D(x0, t).

        Args:
            x0 (`torch.Tensor`): images (B, C, H, W).
            t (`int` or `torch.Tensor`): the level, an integer in 0..T for the whole batch, or an integer tensor (B,)
                of levels, one per sample; any real number in [0, T] where ``continuous_time`` (fade, blur, mask).
        """
        if not isinstance(x0, torch.Tensor) or x0.dim() != 4 or not x0.is_floating_point():
            raise ValueError(f"x0 must be a floating tensor (B, C, H, W), got {_describe(x0)}.")
        levels = self._check_levels(t, x0.shape[0])
        if not isinstance(levels, torch.Tensor):
            return self._degrade(x0, levels)
        return self._degrade_levels(x0, levels)

    def training_input(self, x0, t, generator=None):
        """The training input D(x0, t); a degradation with training-time randomness (the mask's random centres) draws
        it from ``generator``. Same arguments as calling the degradation, plus:

        Args:
            generator (`torch.Generator`, *optional*): source of that randomness.
        """
        return self(x0, t)

    @property
    def config(self):
        """The JSON-able config: ``{"type": class name, **constructor arguments}``."""
        return self.to_config()

    def to_config(self):
        """The config dict that :meth:`from_config` rebuilds this degradation from."""
        return {"type": type(self).__name__, **self._arguments()}

    @classmethod
    def from_config(cls, config):
        """Rebuild a degradation from :meth:`to_config`'s dict (a :class:`Degradation` is returned as it is).

        Args:
            config (`dict`): ``{"type": one of the degradation class names, **its constructor arguments}``.
        """
        if isinstance(config, Degradation):
            return config
        if not isinstance(config, dict) or config.get("type") not in _DEGRADATIONS:
            name = config.get("type") if isinstance(config, dict) else _describe(config)
            raise ValueError(f"degradation config must be a dict with 'type' one of {tuple(_DEGRADATIONS)}, got {name!r}.")
        arguments = {key: value for key, value in config.items() if key != "type"}
        return _DEGRADATIONS[config["type"]](**arguments)

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self._arguments().items())
        return f"{type(self).__name__}({arguments})"

    # --- for subclasses ---------------------------------------------------------------------------------------
    def _degrade(self, x0, t):
        """D(x0, t) for one integer level ``t`` in 0..T."""
        raise NotImplementedError

    def _degrade_levels(self, x0, levels):
        """D(x0_i, t_i) for a (B,) CPU integer tensor of levels: one pass per distinct level in the batch."""
        out = torch.empty_like(x0)
        for level in levels.unique().tolist():
            chosen = (levels == level).to(x0.device)
            out[chosen] = self._degrade(x0[chosen], level)
        return out

    def _arguments(self):
        return {"num_steps": self.num_steps}

    # --- checks -----------------------------------------------------------------------------------------------
    def _check_levels(self, t, batch_size):
        if self.continuous_time:
            allowed = f"a number in [0, {self.num_steps}] (num_steps) or a tensor of shape ({batch_size},) of them"
        else:
            allowed = f"an integer in 0..{self.num_steps} (num_steps) or an integer tensor of shape ({batch_size},)"
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            fractional = t.is_floating_point() and not bool((t == t.round()).all())
            if t.shape != (batch_size,) or fractional and not self.continuous_time:
                raise ValueError(f"t must be {allowed}, got a tensor of shape {tuple(t.shape)} and dtype {t.dtype}.")
            if bool(((t < 0) | (t > self.num_steps)).any()):
                raise ValueError(f"t must be {allowed}, got levels from {t.min().item()} to {t.max().item()}.")
            return t.double().cpu() if fractional else t.long().cpu()
        if isinstance(t, torch.Tensor):
            t = t.item()
        if isinstance(t, float) and t.is_integer():
            t = int(t)
        number = int if not self.continuous_time else (int, float)
        if isinstance(t, bool) or not isinstance(t, number) or not 0 <= t <= self.num_steps:
            raise ValueError(f"t must be {allowed}, got {t!r}.")
        return t

    def _check_identity(self):
        probe = torch.randn(_PROBE_SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        error = (self._degrade(probe.clone(), 0) - probe).abs().max().item()
        if not error <= _IDENTITY_TOLERANCE * probe.abs().max().item():
            raise ValueError(
                f"{type(self).__name__}: D(x0, 0) must be x0 (t = 0 is the clean image), but on a random probe it differs"
                f" by up to {error:.3g} (allowed: {_IDENTITY_TOLERANCE:g} relative). Check its t = 0 case."
            )


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def _check_schedule(name, values, num_steps):
    """A per-step schedule: ``num_steps`` finite positive numbers, non-decreasing; returns a list of floats."""
    values = [check_number(f"{name}[{i}]", value, minimum=0) for i, value in enumerate(values)]
    if len(values) != num_steps:
        raise ValueError(f"{name} must hold one value per step, num_steps={num_steps} values, got {len(values)}.")
    for i in range(1, len(values)):
        if values[i] < values[i - 1]:
            raise ValueError(
                f"{name} must be non-decreasing (the image must get more degraded with t), but {name}[{i}]={values[i]:g}"
                f" < {name}[{i - 1}]={values[i - 1]:g}."
            )
    return values


def _exponential_schedule(start, rate, num_steps):
    """start * exp(rate * (t - 1)) for t = 1..T."""
    return [start * math.exp(rate * step) for step in range(num_steps)]


class BlurDegradation(Degradation):
    """Gaussian blur applied repeatedly: D(x0, t) = G_t * ... * G_1 * x0, with G_s a Gaussian kernel of std sigma_s.

    The paper's generation setting is the default: a 27x27 kernel over T = 300 steps with the exponential schedule
    sigma_s = exp(0.01 (s - 1)) (``kernel_std=1.0``, ``kernel_std_rate=0.01``). Each kernel is normalized to sum 1 and
    applied as a depthwise (per-channel) separable conv2d with **reflect padding**: a constant image stays constant, so
    the fully blurred image of a Gaussian-blurred picture tends to its channel means (what generation starts from),
    and zero padding would instead darken the borders step after step. Reflect padding needs images larger than half
    the kernel (H, W > kernel_size // 2). D(., t) is linear.

    Real t = n + f (0 < f < 1) blurs n steps and then with the Gaussian of std sqrt(f) sigma_{n+1}: untruncated
    Gaussian variances add, so the blur's variance grows linearly across the step, from D(x0, n) to D(x0, n + 1).

    Args:
        num_steps (`int`): T (default 300).
        kernel_size (`int`): odd kernel width and height (default 27).
        kernel_std (`float`): sigma_1, the first step's std in pixels (default 1.0).
        kernel_std_rate (`float`): growth rate of the exponential schedule sigma_s = kernel_std exp(rate (s - 1));
            must be >= 0 (a decreasing schedule is refused). Default 0.01.
        kernel_stds (`list[float]`, *optional*): an explicit schedule, one std per step, non-decreasing; replaces
            ``kernel_std`` / ``kernel_std_rate``.
    """

    continuous_time = True

    def __init__(self, num_steps=300, kernel_size=27, kernel_std=1.0, kernel_std_rate=0.01, kernel_stds=None):
        super().__init__(num_steps)
        self.kernel_size = check_integer("kernel_size", kernel_size, minimum=1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 1 (the kernel is centered), got {kernel_size}.")
        self.kernel_std = check_number("kernel_std", kernel_std, minimum=0)
        # >= 0: a negative rate would make the blur std decrease with t (a schedule that is not monotone).
        self.kernel_std_rate = check_number("kernel_std_rate", kernel_std_rate, minimum=0, strict_minimum=False)
        explicit = kernel_stds is not None
        stds = kernel_stds if explicit else _exponential_schedule(self.kernel_std, self.kernel_std_rate, self.num_steps)
        self.kernel_stds = _check_schedule("kernel_stds", list(stds), self.num_steps)
        self._explicit = explicit
        offsets = torch.arange(self.kernel_size, dtype=torch.float64) - self.kernel_size // 2
        # The separable 1-D Gaussian of each step, normalized to sum 1 (so constants are preserved).
        kernels = torch.exp(-offsets[None] ** 2 / (2 * torch.tensor(self.kernel_stds, dtype=torch.float64)[:, None] ** 2))
        self._kernels = kernels / kernels.sum(dim=1, keepdim=True)

    def _arguments(self):
        if self._explicit:
            return {"num_steps": self.num_steps, "kernel_size": self.kernel_size, "kernel_stds": list(self.kernel_stds)}
        return {"num_steps": self.num_steps, "kernel_size": self.kernel_size, "kernel_std": self.kernel_std,
                "kernel_std_rate": self.kernel_std_rate}

    def _degrade(self, x0, t):
        steps = math.floor(t)
        x = x0
        for step in range(steps):  # D(x0, t) = G_t * D(x0, t - 1)
            x = self._blur(x, self._kernels[step])
        return x if t == steps else self._blur(x, self._fractional_kernel(steps, t - steps))

    def _degrade_levels(self, x0, levels):
        # Blurs compose step after step, so one pass over the steps serves every level: step s blurs the samples whose
        # level is beyond it (T steps per batch instead of one chain per distinct level).
        steps = levels.floor().long()
        x = x0.clone()
        for step in range(int(steps.max())):
            active = (steps > step).to(x0.device)
            x[active] = self._blur(x[active], self._kernels[step])
        for i in (levels != steps).nonzero().flatten().tolist():  # real levels: their fractional last step
            x[i : i + 1] = self._blur(x[i : i + 1], self._fractional_kernel(int(steps[i]), float(levels[i] - steps[i])))
        return x

    def _fractional_kernel(self, step, fraction):
        """The 1-D Gaussian of std sqrt(fraction) sigma_{step + 1}, normalized: a fraction of that step's blur."""
        offsets = torch.arange(self.kernel_size, dtype=torch.float64) - self.kernel_size // 2
        kernel = torch.exp(-offsets**2 / (2 * fraction * self.kernel_stds[step] ** 2))
        return kernel / kernel.sum()

    def _blur(self, x, kernel):
        """The separable Gaussian of a 1-D ``kernel`` applied to x, reflect-padded, per channel."""
        channels, height, width = x.shape[1:]
        pad = self.kernel_size // 2
        if pad >= min(height, width):
            raise ValueError(f"images of size {height}x{width} are too small for kernel_size={self.kernel_size} with"
                             f" reflect padding; allowed: H, W > kernel_size // 2 = {pad}.")
        kernel = kernel.to(device=x.device, dtype=x.dtype).expand(channels, 1, self.kernel_size)
        x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), kernel[:, :, None, :], groups=channels)
        return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), kernel[:, :, :, None], groups=channels)


class MaskDegradation(Degradation):
    """Progressive Gaussian-shaped masking, the paper's inpainting degradation: D(x0, t) = x0 * prod_{s<=t} m_s with
    m_s(i, j) = 1 - exp(-d(i, j)^2 / (2 beta_s^2)), d the distance to the image center. Each factor is 0 at the center
    and tends to 1 far from it, so the hidden (zeroed) region grows with t, and faster with a larger beta_s. Linear.
    Real t = n + f (0 < f < 1) multiplies the first n factors by m_{n+1}^f, continuous from D(x0, n) to D(x0, n + 1).

    Args:
        num_steps (`int`): T (default 100).
        mask_std (`float`): beta_1 in pixels (default 1.0).
        mask_std_growth (`float`): beta_s = mask_std + mask_std_growth (s - 1), >= 0 (default 0.1).
        mask_stds (`list[float]`, *optional*): an explicit non-decreasing schedule of beta_s, one per step.
        center (`list[float]`, *optional*): the mask's centre (row, column) in pixels, (0, 0) the top-left pixel;
            default the image centre ((H - 1) / 2, (W - 1) / 2). What restoration and generation use.
        random_center (`bool`): for training (:meth:`training_input`), a centre drawn uniformly over the image for
            each sample, as the paper trains its inpainting models; calling the degradation still uses ``center``.
    """

    continuous_time = True

    def __init__(self, num_steps=100, mask_std=1.0, mask_std_growth=0.1, mask_stds=None, center=None,
                 random_center=False):
        super().__init__(num_steps)
        self.mask_std = check_number("mask_std", mask_std, minimum=0)
        # >= 0: a negative growth would make beta_s decrease with t (a schedule that is not monotone).
        self.mask_std_growth = check_number("mask_std_growth", mask_std_growth, minimum=0, strict_minimum=False)
        explicit = mask_stds is not None
        stds = mask_stds if explicit else [self.mask_std + self.mask_std_growth * s for s in range(self.num_steps)]
        self.mask_stds = _check_schedule("mask_stds", list(stds), self.num_steps)
        self._explicit = explicit
        if center is not None:
            if not isinstance(center, (list, tuple)) or len(center) != 2:
                raise ValueError(f"center must be a (row, column) pair of numbers in pixels, got {center!r}.")
            center = [check_number(f"center[{i}]", value, minimum=-float("inf")) for i, value in enumerate(center)]
        self.center = center
        if not isinstance(random_center, bool):
            raise ValueError(f"random_center must be True or False, got {random_center!r}.")
        self.random_center = random_center

    def _arguments(self):
        if self._explicit:
            arguments = {"num_steps": self.num_steps, "mask_stds": list(self.mask_stds)}
        else:
            arguments = {"num_steps": self.num_steps, "mask_std": self.mask_std, "mask_std_growth": self.mask_std_growth}
        if self.center is not None:
            arguments["center"] = list(self.center)
        if self.random_center:
            arguments["random_center"] = True
        return arguments

    def mask(self, t, height, width, device=None, dtype=torch.float32, centers=None):
        """The cumulative mask prod_{s<=t} m_s (H, W), 1 where the image is kept (real t = n + f: times m_{n+1}^f); with
        ``centers`` (B, 2), one mask per centre (B, H, W)."""
        one = centers is None
        if one:
            centers = torch.tensor([self.center or [(height - 1) / 2, (width - 1) / 2]], dtype=torch.float64)
        centers = centers.to(device=device, dtype=torch.float64)
        rows = torch.arange(height, device=device, dtype=torch.float64)[None] - centers[:, :1]  # (B, H)
        cols = torch.arange(width, device=device, dtype=torch.float64)[None] - centers[:, 1:]  # (B, W)
        squared_distance = rows[:, :, None] ** 2 + cols[:, None] ** 2  # (B, H, W)
        steps = math.ceil(t)
        betas = torch.tensor(self.mask_stds[:steps], device=device, dtype=torch.float64)
        factors = 1 - torch.exp(-squared_distance[:, None] / (2 * betas[None, :, None, None] ** 2))
        if steps != t:  # the last factor to the fraction of its step that t covers
            factors[:, -1] = factors[:, -1] ** (t - (steps - 1))
        masks = factors.prod(dim=1).to(dtype)
        return masks[0] if one else masks

    def sample_centers(self, batch_size, height, width, generator=None):
        """Random mask centres (B, 2), uniform over the image: rows in [0, H - 1], columns in [0, W - 1]."""
        uniform = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
        return uniform * torch.tensor([height - 1, width - 1], dtype=torch.float64)

    def training_input(self, x0, t, generator=None):
        if not self.random_center:
            return self(x0, t)
        if not isinstance(x0, torch.Tensor) or x0.dim() != 4 or not x0.is_floating_point():
            raise ValueError(f"x0 must be a floating tensor (B, C, H, W), got {_describe(x0)}.")
        levels = self._check_levels(t, x0.shape[0])
        levels = torch.full((x0.shape[0],), levels) if not isinstance(levels, torch.Tensor) else levels
        centers = self.sample_centers(x0.shape[0], *x0.shape[2:], generator=generator)
        out = torch.empty_like(x0)
        for level in levels.unique().tolist():  # one batch of masks per level, each at its sample's centre
            chosen = levels == level
            masks = self.mask(level, *x0.shape[2:], device=x0.device, dtype=x0.dtype, centers=centers[chosen])
            out[chosen.to(x0.device)] = x0[chosen.to(x0.device)] * masks[:, None]
        return out

    def _degrade(self, x0, t):
        if t == 0:
            return x0
        return x0 * self.mask(t, *x0.shape[2:], device=x0.device, dtype=x0.dtype)


class DownsampleDegradation(Degradation):
    """Super-resolution's degradation: t halvings of the resolution (2x2 average pooling, repeated) then nearest
    upsampling back to the full size, D(x0, t) = up_{2^t}(avgpool_{2^t}(x0)). Images need H and W divisible by 2^t.
    Linear (an orthogonal projection onto images constant on 2^t x 2^t blocks).

    Args:
        num_steps (`int`): T, the number of halvings at the most degraded level (default 4).
    """

    def __init__(self, num_steps=4):
        super().__init__(num_steps)

    def _degrade(self, x0, t):
        if t == 0:
            return x0
        factor = 2 ** t
        height, width = x0.shape[2:]
        if height % factor or width % factor:
            raise ValueError(f"t={t} halvings need image height and width divisible by 2**t = {factor}, got"
                             f" {height}x{width}.")
        return F.interpolate(F.avg_pool2d(x0, factor), scale_factor=factor, mode="nearest")


class FadeDegradation(Degradation):
    """Fade to a constant: D(x0, t) = (1 - t/T) x0 + (t/T) c. Linear when ``value`` = 0, affine otherwise. The
    interpolation defines D for any real t in [0, T] too (``continuous_time``): ``fade(x0, 2.5)`` is allowed.

    Args:
        num_steps (`int`): T (default 100).
        value (`float`): the constant c the image fades to, in the model's data space (default 0.0).
    """

    continuous_time = True

    def __init__(self, num_steps=100, value=0.0):
        super().__init__(num_steps)
        self.value = check_number("value", value, minimum=-float("inf"))
        self.is_linear = self.value == 0.0

    def _arguments(self):
        return {"num_steps": self.num_steps, "value": self.value}

    def _degrade(self, x0, t):
        if t == 0:
            return x0
        weight = t / self.num_steps
        return (1 - weight) * x0 + weight * self.value


class ComposedDegradation(Degradation):
    """Degradations applied one after another at the same level: D(x0, t) = D_n(... D_1(x0, t) ..., t).

    Args:
        degradations (`list`): :class:`Degradation` objects or their configs, all with the same ``num_steps``.
    """

    def __init__(self, degradations):
        if not isinstance(degradations, (list, tuple)) or not degradations:
            raise ValueError(f"degradations must be a non-empty list of degradations or configs, got {degradations!r}.")
        self.degradations = [Degradation.from_config(degradation) for degradation in degradations]
        steps = [degradation.num_steps for degradation in self.degradations]
        if len(set(steps)) != 1:
            raise ValueError(f"degradations must share num_steps (one level t for all), got num_steps {steps}.")
        super().__init__(steps[0])
        self.is_linear = all(degradation.is_linear for degradation in self.degradations)
        self.continuous_time = all(degradation.continuous_time for degradation in self.degradations)

    def _arguments(self):
        return {"degradations": [degradation.to_config() for degradation in self.degradations]}

    def _degrade(self, x0, t):
        for degradation in self.degradations:
            x0 = degradation._degrade(x0, t)
        return x0
