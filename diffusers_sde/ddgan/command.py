"""The ``diffusers-sde train-ddgan`` subcommand: one option per :class:`DDGANTrainingConfig` field."""

import sys

from ..command_options import add_config_parser, exit_interrupted
from ..sde import SDE_TYPES
from ..training.trainer import TrainingInterrupted
from .training import GENERATOR_PRESETS, DDGANTrainingConfig, train_ddgan

_HELP = {
    "output_dir": "where the final DDGANPipeline (the generator's EMA weights) is saved",
    "data": "as for train: 'digits', a folder of same-size square images, ...",
    "num_timesteps": "T, the denoising steps (the paper: 4 on CIFAR-10)",
    "sde_type": "the SDE whose T-level chain is learnt (the paper: vp)",
    "beta_min": "VP and sub-VP: beta(0)",
    "beta_max": "VP and sub-VP: beta(1)",
    "sigma_min": "VE: smallest noise level",
    "sigma_max": "VE: largest noise level",
    "data_centered": "true: data in [-1, 1]; false: [0, 1]",
    "model_preset": "the generator's UNet2DModel size",
    "latent_dim": "dimension of the generator's latent z (the paper: 100)",
    "discriminator_channels": "the discriminator's block widths, comma-separated",
    "r1_gamma": "weight of the R1 penalty on real pairs (0: none; the paper: 0.05 on CIFAR-10)",
    "generator_learning_rate": "Adam (betas 0.5, 0.9) learning rate of the generator (the paper: 1.6e-4 on CIFAR-10)",
    "discriminator_learning_rate": "Adam (betas 0.5, 0.9) learning rate of the discriminator (the paper: 1.25e-4 on"
                                   " CIFAR-10)",
    "ema_decay": "EMA decay of the generator, with diffusers' warm-up",
    "max_steps": "steps, each one discriminator and one generator update",
    "batch_size": "images per update",
    "checkpointing_steps": "save checkpoint-N every this many steps (0: never)",
    "checkpoint_dir": "where checkpoints go (default: <output-dir>/checkpoints)",
    "checkpoints_total_limit": "keep this many newest checkpoints",
    "resume": "'latest' or a checkpoint-N folder; the model options must match the checkpoint's",
    "seed": "seeds the networks' initialization, the data order and every draw",
    "log_every": "print the mean losses every this many steps (0: never)",
}
_CHOICES = {"sde_type": SDE_TYPES, "model_preset": GENERATOR_PRESETS}


def add_train_ddgan_parser(commands):
    """Add ``train-ddgan`` to the CLI's subcommands."""
    return add_config_parser(commands, "train-ddgan", "train a Denoising Diffusion GAN (Xiao et al. 2022)",
                             DDGANTrainingConfig, _HELP, train_ddgan_from_config, choices=_CHOICES)


def train_ddgan_from_config(config):
    try:
        return train_ddgan(config)
    except TrainingInterrupted as interrupted:
        exit_interrupted(interrupted, "train-ddgan", config)
    except FloatingPointError as error:
        sys.exit(f"error: {error}")
