"""A noise-conditional classifier p_t(y | x_t) for classifier guidance: the encoder half of a small UNet.

It is fed exactly what the score network is fed, ``classifier(sample, timestep)``: the noisy sample and the scheduler's
network time (sigma for an NCSN++-style network, t (N - 1) for a DDPM-style one), embedded the way ``UNet2DModel``
embeds it, and returns logits (B, num_classes).
"""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import GaussianFourierProjection, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from diffusers.utils import BaseOutput
from torch import nn

from ..validation import check_choice

TIME_EMBEDDING_TYPES = ("positional", "fourier")


@dataclass
class NoiseConditionalClassifierOutput(BaseOutput):
    """Output of :class:`NoiseConditionalClassifier`.

    Args:
        logits (`torch.Tensor`): (B, num_classes) unnormalized log-probabilities of the classes given the noisy sample.
    """

    logits: torch.Tensor


class NoiseConditionalClassifier(ModelMixin, ConfigMixin):
    """Time-conditioned ResNet encoder with a linear head: the classifier of the paper's class-conditional sampling
    (Song et al. 2021, Sec. 5 and App. I.1, a Wide ResNet there), sized for small images.

    Args:
        in_channels (`int`), sample_size (`int`): the sample shape, named as in ``UNet2DModel``.
        num_classes (`int`): number of classes K; the output is (B, K) logits.
        block_out_channels (`tuple[int]`): channels per resolution; the image is halved between consecutive entries.
        layers_per_block (`int`): ResNet blocks per resolution.
        norm_num_groups (`int`): group-norm groups.
        time_embedding_type (`str`): ``"positional"`` (DDPM's sinusoidal embedding of the time input) or ``"fourier"``
            (NCSN++'s random Fourier features of log sigma, for networks fed sigma): pick the one of the score network
            the classifier guides.
    """

    @register_to_config
    def __init__(self, in_channels=1, sample_size=8, num_classes=10, block_out_channels=(32, 64), layers_per_block=1,
                 norm_num_groups=8, time_embedding_type="positional"):
        super().__init__()
        check_choice("time_embedding_type", time_embedding_type, TIME_EMBEDDING_TYPES)
        width = block_out_channels[0]
        if time_embedding_type == "fourier":
            self.time_proj = GaussianFourierProjection(embedding_size=width, scale=16)
            projected = 2 * width
        else:
            self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
            projected = width
        time_dim = 4 * width
        self.time_embedding = TimestepEmbedding(projected, time_dim)
        self.conv_in = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        blocks = []
        channels = width
        for index, out_channels in enumerate(block_out_channels):
            for _ in range(layers_per_block):
                blocks.append(ResnetBlock2D(in_channels=channels, out_channels=out_channels, temb_channels=time_dim,
                                            groups=norm_num_groups))
                channels = out_channels
            if index < len(block_out_channels) - 1:
                blocks.append(Downsample2D(channels, use_conv=True, padding=1, name="op"))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, sample, timestep, return_dict=True):
        """Logits of the classes of the noisy ``sample`` at network time ``timestep`` (one number or one per sample).

        Args:
            sample (`torch.Tensor`): (B, C, H, W) noisy samples.
            timestep (`float` or `torch.Tensor`): the network time the score network is fed.
            return_dict (`bool`): return a :class:`NoiseConditionalClassifierOutput` instead of a tuple.
        """
        timesteps = torch.as_tensor(timestep, device=sample.device)
        timesteps = timesteps.reshape(-1).expand(sample.shape[0]) if timesteps.numel() == 1 else timesteps.reshape(-1)
        embedding = self.time_embedding(self.time_proj(timesteps.float()).to(self.dtype))
        hidden = self.conv_in(sample)
        for block in self.blocks:
            hidden = block(hidden, embedding) if isinstance(block, ResnetBlock2D) else block(hidden)
        pooled = torch.nn.functional.silu(self.norm_out(hidden)).mean(dim=(2, 3))
        logits = self.head(pooled)
        return NoiseConditionalClassifierOutput(logits=logits) if return_dict else (logits,)
