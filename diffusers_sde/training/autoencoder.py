"""``diffusers-sde train-vae``: fit a small diffusers ``AutoencoderKL`` whose latent space a score model can learn
(latent diffusion, Rombach et al. 2022, on score SDEs: :class:`~diffusers_sde.pipelines.ScoreSDELatentPipeline`).

The loss per image is the squared reconstruction error summed over pixels plus ``kl_weight`` times the KL divergence
of the encoder's Gaussian posterior from N(0, I) (a beta-VAE with a small beta, as the paper's "KL-reg" autoencoders:
the latents stay close to the data, only mildly pulled towards a unit scale). After training, ``scaling_factor`` is set to
1 / std of the posterior modes over the training data (Rombach et al. 2022, Sec. 4.3.2), so the scaled latents the score
model sees have unit variance, matching the SDE's prior.
"""

import dataclasses

import torch

from ..command_options import add_config_parser, block_out_channels
from ..saving import save_pretrained_atomically
from ..validation import check_integer, check_number


@dataclasses.dataclass
class AutoencoderTrainingConfig:
    """Everything an autoencoder training run depends on; fields mirror ``diffusers-sde train-vae`` options.

    Args:
        output_dir (`str`): the ``AutoencoderKL`` is saved there (``save_pretrained``, written atomically).
        data (`str`): the images, as ``diffusers-sde train --data`` takes them (see ``training.data.load_dataset``);
            they are fed in [-1, 1], diffusers' convention for VAE images.
        block_out_channels (`str`): comma-separated channels per resolution; each resolution after the first halves
            the image side.
        latent_channels (`int`): channels of the latent.
        layers_per_block (`int`): ResNet layers per resolution.
        norm_num_groups (`int`): GroupNorm groups; must divide every entry of ``block_out_channels``.
        kl_weight (`float`): weight of the KL term against the summed squared error.
        max_steps (`int`), batch_size (`int`), learning_rate (`float`): Adam.
        seed (`int`): seeds the initialization, the data order and the posterior samples.
        log_every (`int`): print the mean losses every this many steps (0: never).
    """

    output_dir: str
    data: str = "digits"
    block_out_channels: str = "8,16"
    latent_channels: int = 2
    layers_per_block: int = 1
    norm_num_groups: int = 4
    kl_weight: float = 1e-3
    max_steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0
    log_every: int = 500

    def validate(self):
        check_integer("--latent-channels", self.latent_channels, minimum=1)
        check_integer("--layers-per-block", self.layers_per_block, minimum=1)
        check_integer("--norm-num-groups", self.norm_num_groups, minimum=1)
        check_integer("--max-steps", self.max_steps, minimum=1)
        check_integer("--batch-size", self.batch_size, minimum=1)
        check_integer("--log-every", self.log_every, minimum=0)
        check_number("--learning-rate", self.learning_rate, minimum=0)
        check_number("--kl-weight", self.kl_weight, minimum=0, strict_minimum=False)
        channels = self.channels()
        if any(value % self.norm_num_groups for value in channels):
            raise ValueError(f"--norm-num-groups {self.norm_num_groups} must divide every entry of"
                             f" --block-out-channels {self.block_out_channels!r}.")

    def channels(self):
        return block_out_channels(self.block_out_channels)


def build_autoencoder(config, in_channels, sample_size):
    """The untrained ``AutoencoderKL`` of ``config`` for images of ``in_channels`` channels and side ``sample_size``."""
    from diffusers import AutoencoderKL

    channels = config.channels()
    downsampling = 2 ** (len(channels) - 1)
    if sample_size % downsampling:
        raise ValueError(f"--block-out-channels {config.block_out_channels!r} halves the image side"
                         f" {len(channels) - 1} time(s); the images' side {sample_size} is not divisible by"
                         f" {downsampling}.")
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=channels,
        layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups, sample_size=sample_size)


def autoencoder_loss(vae, images, kl_weight, generator=None):
    """(loss, reconstruction error, KL), each the batch mean of a per-image sum: ||x - D(z)||^2 + kl_weight KL(q(z|x) ||
    N(0, I)), with z drawn from the posterior q(z|x) by the reparameterization trick."""
    posterior = vae.encode(images).latent_dist
    reconstruction = vae.decode(posterior.sample(generator=generator)).sample
    error = ((reconstruction - images) ** 2).flatten(1).sum(1).mean()
    kl = posterior.kl().mean()
    return error + kl_weight * kl, error, kl


@torch.no_grad()
def latent_scaling_factor(vae, images, batch_size=512):
    """1 / std of the posterior modes of ``images`` (all entries pooled): the ``scaling_factor`` that gives the scaled
    latents unit variance."""
    modes = torch.cat([vae.encode(images[i:i + batch_size]).latent_dist.mode() for i in range(0, len(images), batch_size)])
    return float(1 / modes.double().std())


def train_autoencoder(config):
    """Run an :class:`AutoencoderTrainingConfig`; returns the trained ``AutoencoderKL`` (saved to ``output_dir``)."""
    from .data import load_dataset

    config.validate()
    images = load_dataset(config.data, data_centered=True)
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"--data {config.data!r}: train-vae takes square images, got {tuple(images.shape[2:])}.")
    torch.manual_seed(config.seed)
    vae = build_autoencoder(config, images.shape[1], images.shape[2])
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    order, position = torch.randperm(len(images), generator=generator), 0
    running, running_steps = torch.zeros(3, dtype=torch.float64), 0
    vae.train()
    for step in range(1, config.max_steps + 1):
        if position + config.batch_size > len(order):
            order, position = torch.randperm(len(images), generator=generator), 0
        batch = images[order[position:position + config.batch_size]]
        position += config.batch_size
        loss, error, kl = autoencoder_loss(vae, batch, config.kl_weight, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train-vae: the loss is {loss.item()} at step {step}; lower --learning-rate.")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += torch.tensor([loss.item(), error.item(), kl.item()], dtype=torch.float64)
        running_steps += 1
        if config.log_every and step % config.log_every == 0:
            loss_mean, error_mean, kl_mean = (running / running_steps).tolist()
            print(f"step {step}/{config.max_steps} loss {loss_mean:.4f} squared error {error_mean:.4f} KL"
                  f" {kl_mean:.2f} (per image, [-1, 1] pixels)")
            running, running_steps = torch.zeros(3, dtype=torch.float64), 0
    vae.eval()
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, images))
    save_pretrained_atomically(vae, config.output_dir)
    print(f"saved the autoencoder (scaling_factor {vae.config.scaling_factor:.4f}) to {config.output_dir}")
    return vae


_HELP = {
    "output_dir": "where the AutoencoderKL is saved (then: diffusers-sde train --vae <output-dir>)",
    "data": "the images, as for diffusers-sde train --data (fed in [-1, 1])",
    "block_out_channels": "channels per resolution, comma-separated; each after the first halves the image side",
    "latent_channels": "channels of the latent",
    "layers_per_block": "ResNet layers per resolution",
    "norm_num_groups": "GroupNorm groups (must divide every channel count)",
    "kl_weight": "weight of the KL term against the per-image summed squared error",
    "max_steps": "optimizer steps",
    "batch_size": "images per step",
    "learning_rate": "Adam learning rate",
    "seed": "seeds the initialization, the data order and the posterior samples",
    "log_every": "print the mean losses every this many steps (0: never)",
}


def add_train_vae_parser(commands):
    """Add the ``train-vae`` subparser: one option per :class:`AutoencoderTrainingConfig` field."""
    return add_config_parser(commands, "train-vae", "train a small AutoencoderKL for a latent score model",
                             AutoencoderTrainingConfig, _HELP, train_autoencoder)
