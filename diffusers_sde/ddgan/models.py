"""The DDGAN networks: a generator G(x_k, z, t) that predicts x_0, and a time-conditional discriminator D(x_{k-1}, x_k, t).

The paper injects its latent z (dimension 100) through adaptive group norm: a mapping network turns z into a style that
scales and shifts every group norm. Here the generator is a diffusers ``UNet2DModel`` with
``resnet_time_scale_shift="scale_shift"`` (each ResNet block's group norm is scaled and shifted by a projection of its
conditioning embedding, i.e. adaptive group norm) and ``class_embed_type="identity"``, through which a small mapping MLP
of z is added to the time embedding: the conditioning embedding that modulates the norms carries both t and z.
"""

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from ..validation import check_integer


class DDGANGenerator(ModelMixin, ConfigMixin):
    """G(x_k, t, z) -> the x_0 prediction: a ``UNet2DModel`` whose time embedding also carries the latent z.

    Args:
        sample_size (`int`), in_channels (`int`): the data's shape.
        latent_dim (`int`): the dimension of z (the paper's nz = 100).
        block_out_channels, down_block_types, up_block_types, layers_per_block, norm_num_groups, attention_head_dim:
            the ``UNet2DModel``'s (``diffusers_sde.training.UNET_PRESETS`` has sizes by name).
    """

    @register_to_config
    def __init__(self, sample_size=8, in_channels=1, latent_dim=100, block_out_channels=(32, 64),
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 layers_per_block=1, norm_num_groups=8, attention_head_dim=32):
        super().__init__()
        check_integer("latent_dim", latent_dim, minimum=1)
        embedding_dim = block_out_channels[0] * 4  # UNet2DModel's time-embedding width
        self.unet = UNet2DModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
            time_embedding_type="positional", class_embed_type="identity", resnet_time_scale_shift="scale_shift",
            block_out_channels=tuple(block_out_channels), down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types), layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim)
        # The paper's mapping network (z -> style), smaller: two layers.
        self.latent_mapping = nn.Sequential(nn.Linear(latent_dim, embedding_dim), nn.SiLU(),
                                            nn.Linear(embedding_dim, embedding_dim))

    def forward(self, sample, timestep, latent, return_dict=True):
        """Predict x_0.

        Args:
            sample (`torch.Tensor`): x_k, (B, C, H, W).
            timestep (`torch.Tensor` or `float`): the network time of level k (``DDGANScheduler.model_time``).
            latent (`torch.Tensor`): z, (B, latent_dim).
        """
        output = self.unet(sample, timestep, class_labels=self.latent_mapping(latent.to(self.dtype))).sample
        return UNet2DOutput(sample=output) if return_dict else (output,)


class DDGANDiscriminator(ModelMixin, ConfigMixin):
    """D(x_{k-1}, x_k, t) -> one logit per sample: is x_{k-1} a real denoising of x_k at level k?

    Strided 3x3 convolutions with LeakyReLU(0.2) over the pair stacked on channels, each block shifted by a projection
    of the time embedding; then, as in the paper's discriminators, the minibatch standard deviation (Karras et al. 2018)
    appended as one more channel, so a batch of near-identical fakes is told apart from varied real pairs (mode
    collapse); a last convolution, a sum over positions and a linear layer. Much smaller than the paper's.

    Args:
        in_channels (`int`): channels of one image (the network sees twice as many).
        block_out_channels (`tuple[int]`): channels of each block; every block after the first halves the resolution.
        time_embedding_dim (`int`): width of the sinusoidal time embedding and its MLP.
        minibatch_std_group_size (`int`): samples per group of the minibatch standard deviation (0: none); a batch
            whose size it does not divide uses the largest divisor below it.
    """

    @register_to_config
    def __init__(self, in_channels=1, block_out_channels=(32, 64, 128), time_embedding_dim=128,
                 minibatch_std_group_size=4):
        super().__init__()
        check_integer("minibatch_std_group_size", minibatch_std_group_size, minimum=0)
        self.time_proj = Timesteps(time_embedding_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_embedding_dim, time_embedding_dim)
        self.convolutions, self.time_shifts = nn.ModuleList(), nn.ModuleList()
        channels = 2 * in_channels
        for index, out_channels in enumerate(block_out_channels):
            self.convolutions.append(nn.Conv2d(channels, out_channels, 3, stride=1 if index == 0 else 2, padding=1))
            self.time_shifts.append(nn.Linear(time_embedding_dim, out_channels))
            channels = out_channels
        self.activation = nn.LeakyReLU(0.2)
        extra = 1 if minibatch_std_group_size else 0
        self.final_convolution = nn.Conv2d(channels + extra, channels, 3, padding=1)
        self.output = nn.Linear(channels, 1)

    def forward(self, previous_sample, sample, timestep):
        """Logits (B,) for the pairs (``previous_sample`` = x_{k-1}, ``sample`` = x_k) at network time ``timestep``."""
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.expand(sample.shape[0]) if timestep.dim() == 0 else timestep
        embedding = self.time_embedding(self.time_proj(timestep).to(self.dtype))
        hidden = torch.cat([previous_sample, sample], dim=1).to(self.dtype)
        for convolution, shift in zip(self.convolutions, self.time_shifts):
            hidden = self.activation(convolution(hidden) + shift(embedding)[:, :, None, None])
        if self.config.minibatch_std_group_size:
            hidden = torch.cat([hidden, _minibatch_std(hidden, self.config.minibatch_std_group_size)], dim=1)
        hidden = self.activation(self.final_convolution(hidden))
        return self.output(hidden.sum(dim=(2, 3))).squeeze(1)


def _minibatch_std(hidden, group_size):
    """One feature map per sample: the standard deviation of the features across its group of the batch (samples
    i, i + B/G, i + 2 B/G, ...), averaged over channels and positions."""
    batch = hidden.shape[0]
    group = max(size for size in range(1, min(group_size, batch) + 1) if batch % size == 0)
    grouped = hidden.reshape(group, batch // group, *hidden.shape[1:])
    deviation = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B / G,)
    return deviation.repeat(group)[:, None, None, None].expand(batch, 1, *hidden.shape[2:])
