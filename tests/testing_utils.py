"""Shared test helpers (imported by name: pytest puts each test folder on sys.path)."""

import torch
from diffusers import UNet2DModel

from diffusers_sde import GaussianMixtureModel

# One 16-dimensional test mixture (1 x 4 x 4 "images"): 3 components, unequal weights, anisotropic variances.
MIXTURE_SHAPE = (1, 4, 4)


def mixture_model(mixture, scheduler):
    """The exact network for `mixture`, speaking the scheduler's parameterization."""
    return GaussianMixtureModel.for_scheduler(mixture, scheduler, MIXTURE_SHAPE[0], MIXTURE_SHAPE[1])


def tiny_unet(channels=1, size=8, fourier=False, seed=0):
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
        time_embedding_type="fourier" if fourier else "positional",
    )
