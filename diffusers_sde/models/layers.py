"""Building blocks of NCSN++ / DDPM++ (Song et al. 2021, App. H) and of the DDPM U-Net (Ho et al. 2020).

FIR resampling follows StyleGAN2's ``upfirdn2d`` (upsample by zero insertion, pad, filter, downsample), here in plain
PyTorch so it runs on any device without a compiled extension. Every block records how its parameters were named in
the original score_sde code (``ORIGINAL_NAMES``) so that checkpoints convert key by key (see ``conversion.py``).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"swish": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2)}


def default_init_(weight, scale=1.0):
    """DDPM's initializer: variance scaling, fan_avg, uniform; a zero ``scale`` means 1e-10 (a near-zero last layer)."""
    scale = 1e-10 if scale == 0 else scale
    receptive_field = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive_field, weight.shape[0] * receptive_field
    bound = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        weight.uniform_(-bound, bound)
    return weight


def conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=None, init_scale=1.0):
    """A convolution with DDPM's initialization and zero bias."""
    padding = kernel_size // 2 if padding is None else padding
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def linear(in_features, out_features):
    layer = nn.Linear(in_features, out_features)
    default_init_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def group_norm(channels, num_groups=None):
    """GroupNorm with NCSN++'s min(C // 4, 32) groups, or DDPM's fixed ``num_groups``."""
    return nn.GroupNorm(num_groups or min(channels // 4, 32), channels, eps=1e-6)


# --- FIR resampling (StyleGAN2) --------------------------------------------------------------------------------
def fir_filter(kernel, gain=1.0):
    """The separable 2-D filter of a 1-D FIR kernel, normalized to sum to ``gain``."""
    k = torch.as_tensor(kernel, dtype=torch.float32)
    k = torch.outer(k, k) if k.dim() == 1 else k
    return k / k.sum() * gain


def upfirdn2d(x, filter_2d, up=1, down=1, pad=(0, 0)):
    """Upsample by zero insertion, pad by ``pad`` = (before, after) on both axes, convolve with ``filter_2d``, keep
    every ``down``-th pixel."""
    batch, channels, height, width = x.shape
    if up > 1:
        spread = x.new_zeros(batch, channels, height * up, width * up)
        spread[:, :, ::up, ::up] = x
        x = spread
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(filter_2d, (0, 1)).to(x)[None, None]
    x = F.conv2d(x.reshape(batch * channels, 1, *x.shape[2:]), weight)
    x = x.reshape(batch, channels, *x.shape[2:])
    return x[:, :, ::down, ::down]


def fir_upsample(x, kernel, factor=2):
    k = fir_filter(kernel, gain=factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def fir_downsample(x, kernel, factor=2):
    k = fir_filter(kernel)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def fir_upsample_conv(x, weight, kernel, factor=2):
    """Fused FIR upsample then 3x3 convolution: a strided transposed convolution, then the filter (StyleGAN2)."""
    k = fir_filter(kernel, gain=factor**2)
    size = weight.shape[-1]
    p = (k.shape[0] - factor) - (size - 1)
    transposed = torch.flip(weight, (2, 3)).transpose(0, 1)
    x = F.conv_transpose2d(x, transposed, stride=factor)
    return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def fir_conv_downsample(x, weight, kernel, factor=2):
    """Fused FIR filter then strided convolution (StyleGAN2)."""
    k = fir_filter(kernel)
    p = (k.shape[0] - factor) + (weight.shape[-1] - 1)
    return F.conv2d(upfirdn2d(x, k, pad=((p + 1) // 2, p // 2)), weight, stride=factor)


def naive_upsample(x, factor=2):
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def naive_downsample(x, factor=2):
    return F.avg_pool2d(x, factor)


def rescaled_sum(x, h, skip_rescale):
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


# --- blocks ------------------------------------------------------------------------------------------------------
class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log sigma: [sin(2 pi W log sigma), cos(2 pi W log sigma)] (Tancik et al. 2020)."""

    ORIGINAL_NAMES = {"W": "W"}

    def __init__(self, embedding_size, scale):
        super().__init__()
        self.register_buffer("W", torch.randn(embedding_size) * scale)

    def forward(self, log_sigma):
        projection = log_sigma[:, None] * self.W[None, :].to(log_sigma.dtype) * 2 * math.pi
        return torch.cat([torch.sin(projection), torch.cos(projection)], dim=-1)


def positional_embedding(timesteps, dim, max_positions=10000):
    """The Transformer sinusoidal embedding of a (possibly fractional) time index, as DDPM uses it."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_positions) / (half - 1) * torch.arange(half, device=timesteps.device))
    angles = timesteps.float()[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(embedding, (0, dim % 2))


class Resample(nn.Module):
    """Up- or down-sampling by 2, optionally with a 3x3 convolution, by FIR filtering or nearest / average pooling.

    Args:
        direction (`str`): ``"up"`` or ``"down"``.
        in_channels (`int`), out_channels (`int`): channels (``out_channels`` only with a convolution).
        with_conv (`bool`): fuse a 3x3 convolution.
        fir_kernel (`list[int]` or None): the FIR kernel, or None for nearest / average pooling.
    """

    ORIGINAL_NAMES = {"Conv_0": "conv", "Conv2d_0": "conv"}

    def __init__(self, direction, in_channels, out_channels=None, with_conv=False, fir_kernel=None):
        super().__init__()
        self.direction, self.fir_kernel = direction, fir_kernel
        self.conv = None
        if with_conv:
            stride, padding = (2, 0) if direction == "down" and fir_kernel is None else (1, 1)
            self.conv = conv2d(in_channels, out_channels or in_channels, stride=stride, padding=padding)

    def forward(self, x, temb=None):
        """Resample ``x``; ``temb`` is accepted, and ignored, so that this and a resampling ``ResnetBlock`` are
        called alike."""
        up = self.direction == "up"
        if self.fir_kernel is None:
            if up:
                x = naive_upsample(x)
                return x if self.conv is None else self.conv(x)
            if self.conv is None:
                return naive_downsample(x)
            return self.conv(F.pad(x, (0, 1, 0, 1)))  # TensorFlow's 'SAME' padding of a stride-2 convolution
        if self.conv is None:
            return fir_upsample(x, self.fir_kernel) if up else fir_downsample(x, self.fir_kernel)
        fused = fir_upsample_conv if up else fir_conv_downsample
        return fused(x, self.conv.weight, self.fir_kernel) + self.conv.bias[None, :, None, None]


class ResnetBlock(nn.Module):
    """The residual block of DDPM (``kind="ddpm"``) or BigGAN (``kind="biggan"``, which can itself resample).

    Args:
        in_channels (`int`), out_channels (`int`): channels in and out.
        temb_channels (`int` or None): width of the time embedding, None when unconditional.
        kind (`str`): ``"ddpm"`` (skip: a 1x1 projection when channels change) or ``"biggan"`` (skip: a 1x1
            convolution when channels change or the block resamples).
        resample (`str` or None): ``"up"``, ``"down"`` or None (BigGAN blocks only).
        fir_kernel (`list[int]` or None): FIR kernel of the resampling; None for nearest / average pooling.
        dropout (`float`), act (`nn.Module`), skip_rescale (`bool`): as in the original configs.
        init_scale (`float`): initial scale of the last convolution (0 means 1e-10).
        num_groups (`int` or None): fixed GroupNorm groups (DDPM) or None for min(C // 4, 32).
    """

    ORIGINAL_NAMES = {"GroupNorm_0": "norm1", "Conv_0": "conv1", "Dense_0": "time_proj", "GroupNorm_1": "norm2",
                      "Conv_1": "conv2", "Conv_2": "shortcut", "NIN_0": "shortcut"}

    def __init__(self, in_channels, out_channels, temb_channels, kind, act, dropout, skip_rescale, init_scale,
                 resample=None, fir_kernel=None, num_groups=None):
        super().__init__()
        self.kind, self.act, self.skip_rescale = kind, act, skip_rescale
        self.resample, self.fir_kernel = resample, fir_kernel
        self.norm1 = group_norm(in_channels, num_groups)
        self.conv1 = conv2d(in_channels, out_channels)
        self.time_proj = linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv2d(out_channels, out_channels, init_scale=init_scale)
        projects = in_channels != out_channels or (kind == "biggan" and resample is not None)
        # DDPM's shortcut is its "NIN" dense layer, initialized with scale 0.1; BigGAN's a plain 1x1 convolution.
        self.shortcut = conv2d(in_channels, out_channels, 1, init_scale=0.1 if kind == "ddpm" else 1.0) if projects else None

    def _resample(self, x):
        if self.resample == "up":
            return naive_upsample(x) if self.fir_kernel is None else fir_upsample(x, self.fir_kernel)
        return naive_downsample(x) if self.fir_kernel is None else fir_downsample(x, self.fir_kernel)

    def forward(self, x, temb=None):
        h = self.act(self.norm1(x))
        if self.resample is not None:
            h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        if temb is not None:
            h = h + self.time_proj(self.act(temb))[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return rescaled_sum(x, h, self.skip_rescale)


class AttentionBlock(nn.Module):
    """Self-attention over all pixels, one head, with 1x1 projections (DDPM)."""

    ORIGINAL_NAMES = {"GroupNorm_0": "norm", "NIN_0": "query", "NIN_1": "key", "NIN_2": "value", "NIN_3": "proj_out"}

    def __init__(self, channels, skip_rescale, init_scale, num_groups=None):
        super().__init__()
        self.skip_rescale = skip_rescale
        self.norm = group_norm(channels, num_groups)
        self.query, self.key, self.value = (conv2d(channels, channels, 1, init_scale=0.1) for _ in range(3))
        self.proj_out = conv2d(channels, channels, 1, init_scale=init_scale)

    def forward(self, x):
        batch, channels, height, width = x.shape
        h = self.norm(x)
        q, k, v = (layer(h).reshape(batch, channels, height * width) for layer in (self.query, self.key, self.value))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * channels**-0.5, dim=-1)  # (B, HW_query, HW_key)
        h = torch.bmm(v, weights.transpose(1, 2)).reshape(batch, channels, height, width)
        return rescaled_sum(x, self.proj_out(h), self.skip_rescale)


class Combine(nn.Module):
    """Merges the input pyramid into the features: a 1x1 convolution, then a sum or a concatenation."""

    ORIGINAL_NAMES = {"Conv_0": "conv"}

    def __init__(self, in_channels, out_channels, method):
        super().__init__()
        self.method = method
        self.conv = conv2d(in_channels, out_channels, 1)

    def forward(self, pyramid, h):
        projected = self.conv(pyramid)
        return torch.cat([projected, h], dim=1) if self.method == "cat" else projected + h
