"""NCSN++ / DDPM++ (Song et al. 2021, App. H) and the DDPM U-Net (Ho et al. 2020) as one diffusers model."""

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..validation import check_choice
from .layers import (ACTIVATIONS, AttentionBlock, Combine, GaussianFourierProjection, Resample, ResnetBlock, conv2d,
                     group_norm, linear, positional_embedding,
                     rescaled_sum)

RESBLOCK_TYPES = ("ddpm", "biggan")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
PROGRESSIVE_COMBINE = ("sum", "cat")
EMBEDDING_TYPES = ("fourier", "positional")


@dataclass
class NCSNppOutput(BaseOutput):
    """Output of :class:`NCSNppModel`.

    Args:
        sample (`torch.Tensor`): the network output, shaped like the input sample.
    """

    sample: torch.Tensor


class NCSNppModel(ModelMixin, ConfigMixin):
    """The NCSN++ / DDPM++ network of score_sde, and (``norm_num_groups=32``, ``resblock_type="ddpm"``) the DDPM U-Net.

    Config names are those of the original configs' ``model`` and ``data`` sections, so a config reads across.

    Args:
        sample_size (`int`): image side (``data.image_size``); attention applies at ``attn_resolutions`` of it.
        in_channels (`int`): image channels (``data.num_channels``); the output has as many.
        nf (`int`): base channel count; ``ch_mult`` multiplies it per resolution.
        ch_mult (`tuple[int]`): channel multiplier of each resolution, highest first.
        num_res_blocks (`int`): residual blocks per resolution on the way down (one more on the way up).
        attn_resolutions (`tuple[int]`): image sides at which self-attention is applied.
        dropout (`float`): dropout inside residual blocks.
        resamp_with_conv (`bool`): whether DDPM-type resampling layers carry a 3x3 convolution.
        conditional (`bool`): whether the network takes the time input at all.
        fir (`bool`): FIR (``fir_kernel``) resampling instead of nearest / average pooling.
        fir_kernel (`tuple[int]`): the FIR kernel, [1, 3, 3, 1] in every paper config.
        skip_rescale (`bool`): divide residual sums by sqrt(2).
        resblock_type (`str`): one of ``RESBLOCK_TYPES``; BigGAN blocks also do the resampling.
        progressive (`str`): output pyramid, one of ``PROGRESSIVE``.
        progressive_input (`str`): input pyramid, one of ``PROGRESSIVE_INPUT``.
        progressive_combine (`str`): how ``input_skip`` merges, one of ``PROGRESSIVE_COMBINE``.
        embedding_type (`str`): ``"fourier"`` (the time input is sigma; features of log sigma) or ``"positional"``
            (the time input is a, possibly fractional, index into the noise levels).
        fourier_scale (`float`): scale of the Fourier frequencies.
        init_scale (`float`): initial scale of the last layer of each block (0 means 1e-10).
        scale_by_sigma (`bool`): divide the output by sigma (NCSN's score parameterization): by the time input when
            ``embedding_type="fourier"``, by the geometric noise level of the index when ``"positional"``.
        sigma_min (`float`), sigma_max (`float`), num_scales (`int`): the geometric noise levels, sigma_max at index 0;
            used only with ``scale_by_sigma`` and a positional embedding.
        centered (`bool`): whether inputs are in [-1, 1] (``data.centered``); if not, [0, 1] is mapped to [-1, 1].
        nonlinearity (`str`): one of ``ACTIVATIONS``.
        norm_num_groups (`int`, *optional*): fixed GroupNorm group count (DDPM: 32); None: min(C // 4, 32) (NCSN++).
        sigma_input (`bool`): with a positional embedding, take sigma as the time input and look up the index of the
            nearest noise level, round((N - 1) log(sigma_max / sigma) / log(sigma_max / sigma_min)), which is
            score_sde's round((1 - t)(N - 1)) for a discrete VE model. Lets discrete VE networks be sampled like
            continuous ones (``timestep_type="sigma"``).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        fir: bool = True,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "residual",
        progressive_combine: str = "sum",
        embedding_type: str = "fourier",
        fourier_scale: float = 16.0,
        init_scale: float = 0.0,
        scale_by_sigma: bool = True,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
        centered: bool = False,
        nonlinearity: str = "swish",
        norm_num_groups: Optional[int] = None,
        sigma_input: bool = False,
    ):
        super().__init__()
        check_choice("resblock_type", resblock_type, RESBLOCK_TYPES)
        check_choice("progressive", progressive, PROGRESSIVE)
        check_choice("progressive_input", progressive_input, PROGRESSIVE_INPUT)
        check_choice("progressive_combine", progressive_combine, PROGRESSIVE_COMBINE)
        check_choice("embedding_type", embedding_type, EMBEDDING_TYPES)
        check_choice("nonlinearity", nonlinearity, tuple(ACTIVATIONS))
        if sample_size % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"sample_size={sample_size} must be divisible by 2**(len(ch_mult) - 1) for ch_mult={ch_mult}.")
        self.act = ACTIVATIONS[nonlinearity]()
        # Modules are created in the original code's order; `original_module_paths` lists them, one entry per item of
        # the original `all_modules` list, which is what checkpoint conversion maps key by key.
        self.original_module_paths = []
        fir_kernel = list(fir_kernel) if fir else None
        temb_channels = 4 * nf if conditional else None
        block = dict(temb_channels=temb_channels, kind=resblock_type, act=self.act, dropout=dropout,
                     skip_rescale=skip_rescale, init_scale=init_scale, num_groups=norm_num_groups)
        if resblock_type == "biggan":
            block["fir_kernel"] = fir_kernel

        def attention(channels):
            return AttentionBlock(channels, skip_rescale, init_scale, norm_num_groups)

        def resampler(direction, channels):
            # DDPM resamples in a layer of its own; BigGAN blocks resample inside a residual block.
            if resblock_type == "ddpm":
                return Resample(direction, channels, with_conv=resamp_with_conv, fir_kernel=fir_kernel)
            return ResnetBlock(channels, channels, resample=direction, **block)

        if embedding_type == "fourier":
            self.fourier_projection = self._keep("fourier_projection", GaussianFourierProjection(nf, fourier_scale))
        if conditional:
            embed_dim = 2 * nf if embedding_type == "fourier" else nf
            self.time_dense = nn.ModuleList([linear(embed_dim, 4 * nf), linear(4 * nf, 4 * nf)])
            self._keep("time_dense.0")
            self._keep("time_dense.1")
        if sigma_input and embedding_type != "positional":
            raise ValueError(f"sigma_input=True needs embedding_type='positional', got {embedding_type!r}.")
        if (scale_by_sigma or sigma_input) and embedding_type == "positional":
            sigmas = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64))
            self.register_buffer("sigmas", sigmas.float(), persistent=False)

        # Parameter-free resampling of the input and output pyramids.
        self.pyramid_downsample = Resample("down", in_channels, fir_kernel=fir_kernel)
        self.pyramid_upsample = Resample("up", in_channels, fir_kernel=fir_kernel)
        self.conv_in = self._keep("conv_in", conv2d(in_channels, nf))
        skip_channels, channels, pyramid_channels = [nf], nf, in_channels
        resolutions = [sample_size // 2**level for level in range(len(ch_mult))]
        self.down_levels = nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            path = f"down_levels.{level}"
            stage = nn.Module()
            stage.resnets, stage.attentions = nn.ModuleList(), nn.ModuleList()
            for index in range(num_res_blocks):
                stage.resnets.append(self._keep(f"{path}.resnets.{index}", ResnetBlock(channels, nf * mult, **block)))
                channels = nf * mult
                if resolutions[level] in attn_resolutions:
                    stage.attentions.append(self._keep(f"{path}.attentions.{index}", attention(channels)))
                skip_channels.append(channels)
            if level != len(ch_mult) - 1:
                stage.downsample = self._keep(f"{path}.downsample", resampler("down", channels))
                if progressive_input == "input_skip":
                    stage.pyramid = self._keep(f"{path}.pyramid", Combine(pyramid_channels, channels, progressive_combine))
                    channels *= 2 if progressive_combine == "cat" else 1
                elif progressive_input == "residual":
                    stage.pyramid = self._keep(f"{path}.pyramid", Resample(
                        "down", pyramid_channels, channels, with_conv=True, fir_kernel=fir_kernel))
                    pyramid_channels = channels
                skip_channels.append(channels)
            self.down_levels.append(stage)

        self.mid = nn.ModuleList([ResnetBlock(channels, channels, **block), attention(channels),
                                  ResnetBlock(channels, channels, **block)])
        for index in range(3):
            self._keep(f"mid.{index}")

        self.up_levels = nn.ModuleList([nn.Module() for _ in ch_mult])
        for level in reversed(range(len(ch_mult))):
            path, stage = f"up_levels.{level}", self.up_levels[level]
            stage.resnets = nn.ModuleList()
            for index in range(num_res_blocks + 1):
                out_channels = nf * ch_mult[level]
                stage.resnets.append(self._keep(
                    f"{path}.resnets.{index}", ResnetBlock(channels + skip_channels.pop(), out_channels, **block)))
                channels = out_channels
            if resolutions[level] in attn_resolutions:
                stage.attention = self._keep(f"{path}.attention", attention(channels))
            top = level == len(ch_mult) - 1
            if progressive == "output_skip" or (progressive == "residual" and top):
                # output_skip: every level adds an image to the upsampled pyramid; residual: the top level starts it.
                out, scale = (in_channels, init_scale) if progressive == "output_skip" else (channels, 1.0)
                stage.pyramid_norm = self._keep(f"{path}.pyramid_norm", group_norm(channels))
                stage.pyramid_conv = self._keep(f"{path}.pyramid_conv", conv2d(channels, out, init_scale=scale))
                pyramid_channels = out
            elif progressive == "residual":
                stage.pyramid_upsample = self._keep(f"{path}.pyramid_upsample", Resample(
                    "up", pyramid_channels, channels, with_conv=True, fir_kernel=fir_kernel))
                pyramid_channels = channels
            if level != 0:
                stage.upsample = self._keep(f"{path}.upsample", resampler("up", channels))

        if progressive != "output_skip":
            self.norm_out = self._keep("norm_out", group_norm(channels, norm_num_groups))
            self.conv_out = self._keep("conv_out", conv2d(channels, in_channels, init_scale=init_scale))

    def _keep(self, path, module=None):
        self.original_module_paths.append(path)
        return module

    def _time_embedding(self, timestep):
        if self.config.embedding_type == "fourier":
            embedding = self.fourier_projection(torch.log(timestep))
        else:
            embedding = positional_embedding(timestep, self.config.nf)
        embedding = embedding.to(self.time_dense[0].weight.dtype)
        return self.time_dense[1](self.act(self.time_dense[0](embedding)))

    def _noise_level_index(self, sigma):
        span = math.log(self.config.sigma_max / self.config.sigma_min)
        position = torch.log(self.config.sigma_max / sigma.double()) / span * (self.config.num_scales - 1)
        return position.round().clamp(0, self.config.num_scales - 1).to(sigma.dtype)

    def forward(self, sample, timestep, return_dict=True):
        """Evaluate the network.

        Args:
            sample (`torch.Tensor`): images (B, C, H, W), in [-1, 1] if ``centered`` else in [0, 1].
            timestep (`torch.Tensor` or `float`): sigma (``embedding_type="fourier"``) or the noise-level index
                (``"positional"``), a scalar or one per sample.
            return_dict (`bool`): return an :class:`NCSNppOutput` rather than a tuple.
        """
        config = self.config
        timestep = torch.as_tensor(timestep, device=sample.device)
        # The time input stays at least float32 in half-precision models: bf16 cannot even hold the index 999.
        timestep = timestep.to(torch.promote_types(sample.dtype, torch.float32))
        timestep = timestep.reshape(-1).expand(sample.shape[0]) if timestep.numel() == 1 else timestep.reshape(-1)
        if config.sigma_input:
            timestep = self._noise_level_index(timestep)
        temb = self._time_embedding(timestep) if config.conditional else None
        x = sample if config.centered else 2 * sample - 1

        input_pyramid = x
        hs = [self.conv_in(x)]
        for level, stage in enumerate(self.down_levels):
            for index, resnet in enumerate(stage.resnets):
                h = resnet(hs[-1], temb)
                if len(stage.attentions):
                    h = stage.attentions[index](h)
                hs.append(h)
            if level == len(self.down_levels) - 1:
                break
            h = stage.downsample(hs[-1], temb)
            if config.progressive_input == "input_skip":
                input_pyramid = self.pyramid_downsample(input_pyramid)
                h = stage.pyramid(input_pyramid, h)
            elif config.progressive_input == "residual":
                input_pyramid = h = rescaled_sum(stage.pyramid(input_pyramid), h, config.skip_rescale)
            hs.append(h)

        h = self.mid[0](hs[-1], temb)
        h = self.mid[2](self.mid[1](h), temb)

        pyramid = None
        for level in reversed(range(len(self.up_levels))):
            stage = self.up_levels[level]
            for resnet in stage.resnets:
                h = resnet(torch.cat([h, hs.pop()], dim=1), temb)
            if hasattr(stage, "attention"):
                h = stage.attention(h)
            if hasattr(stage, "pyramid_conv"):
                out = stage.pyramid_conv(self.act(stage.pyramid_norm(h)))
                pyramid = out if pyramid is None else self.pyramid_upsample(pyramid) + out
            elif hasattr(stage, "pyramid_upsample"):
                pyramid = h = rescaled_sum(stage.pyramid_upsample(pyramid), h, config.skip_rescale)
            if level != 0:
                h = stage.upsample(h, temb)

        h = pyramid if config.progressive == "output_skip" else self.conv_out(self.act(self.norm_out(h)))
        if config.scale_by_sigma:
            sigma = timestep if config.embedding_type == "fourier" else self.sigmas[timestep.long()]
            h = h / sigma.reshape(-1, 1, 1, 1).to(h.dtype)
        return NCSNppOutput(sample=h) if return_dict else (h,)

