"""Train a DDGAN (Xiao et al. 2022) on accelerate and save a DDGANPipeline of the generator's EMA weights.

The run keeps the guarantees of ``diffusers-sde train`` by using its helpers: the data order and every random draw
(levels, noise, z) are pure functions of (seed, step, process), so ``resume="latest"`` continues the same trajectory;
checkpoints are written atomically; a non-finite loss stops the run naming the step and the last good checkpoint;
SIGINT / SIGTERM end it with :class:`~diffusers_sde.training.TrainingInterrupted`.
"""

import dataclasses
import json
import os

import torch
from tqdm.auto import tqdm

from ..sde import SDE_TYPES
from ..command_options import option_name, parse_channels
from ..saving import save_pipeline_atomically
from ..training.data import load_dataset
from ..training.presets import NCSNPP_PRESETS, UNET_PRESETS
from ..training.trainer import (
    TrainingInterrupted,
    _batch_indices,
    _micro_batch_seed,
    _SigtermAsInterrupt,
    checkpoint_if_due,
    resolve_resume,
)
from .losses import discriminator_loss, generator_loss, sample_fake_previous, sample_real_pairs
from .models import DDGANDiscriminator, DDGANGenerator
from .pipeline_ddgan import DDGANPipeline
from .scheduling_ddgan import DDGANScheduler

GENERATOR_PRESETS = tuple(name for name in UNET_PRESETS if name not in NCSNPP_PRESETS)
# What the networks compute: a checkpoint resumes only with the same values.
MODEL_FIELDS = ("num_timesteps", "sde_type", "beta_min", "beta_max", "sigma_min", "sigma_max", "data_centered",
                "model_preset", "latent_dim", "discriminator_channels")


@dataclasses.dataclass
class DDGANTrainingConfig:
    """Everything a DDGAN training run depends on; fields mirror ``diffusers-sde train-ddgan`` options.

    Args:
        output_dir (`str`): where the final pipeline (the generator's EMA weights) is saved.
        data (`str`): as ``diffusers-sde train --data`` (``"digits"``, an image folder, ...).
        num_timesteps (`int`): T, the denoising steps (paper: 4 on CIFAR-10).
        sde_type (`str`), beta_min, beta_max, sigma_min, sigma_max: the SDE whose chain is learnt (paper: VP, 0.1, 20).
        data_centered (`bool`): data in [-1, 1] (True) or [0, 1].
        model_preset (`str`): the generator's ``UNet2DModel`` size, a name in ``UNET_PRESETS``.
        latent_dim (`int`): dimension of z (paper: 100).
        discriminator_channels (`str`): the discriminator's block widths, comma-separated.
        r1_gamma (`float`): weight of the R1 penalty on real pairs (paper: 0.05 on CIFAR-10; 0 disables it).
        generator_learning_rate (`float`), discriminator_learning_rate (`float`): Adam with betas (0.5, 0.9). The
            defaults, 1e-4 and 5e-4 (a discriminator five times faster), train the digits; the paper's CIFAR-10 values,
            1.6e-4 and 1.25e-4, left the digits discriminator at chance (docs/ddgan.md).
        ema_decay (`float`): EMA of the generator, with diffusers' warm-up (paper: 0.9999 on CIFAR-10).
        max_steps (`int`), batch_size (`int`): one step updates D then G, each on its own batch of pairs.
        checkpointing_steps, checkpoint_dir, checkpoints_total_limit, resume, seed, log_every: as ``diffusers-sde train``.
    """

    output_dir: str
    data: str = "digits"
    num_timesteps: int = 4
    sde_type: str = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    data_centered: bool = True
    model_preset: str = "digits-tiny"
    latent_dim: int = 100
    discriminator_channels: str = "32,64,128"
    r1_gamma: float = 0.05
    generator_learning_rate: float = 1e-4
    discriminator_learning_rate: float = 5e-4
    ema_decay: float = 0.999
    max_steps: int = 4000
    batch_size: int = 64
    checkpointing_steps: int = 500
    checkpoint_dir: str = None
    checkpoints_total_limit: int = 2
    resume: str = None
    seed: int = 0
    log_every: int = 100

    def validate(self):
        checks = [
            ("num_timesteps", isinstance(self.num_timesteps, int) and self.num_timesteps >= 1, "an integer >= 1"),
            ("sde_type", self.sde_type in SDE_TYPES, f"one of {SDE_TYPES}"),
            ("model_preset", self.model_preset in GENERATOR_PRESETS, f"one of {GENERATOR_PRESETS}"),
            ("latent_dim", self.latent_dim >= 1, "an integer >= 1"),
            ("discriminator_channels", parse_channels(self.discriminator_channels) is not None,
             "comma-separated positive integers, e.g. 32,64,128"),
            ("r1_gamma", self.r1_gamma >= 0, ">= 0 (0 disables the penalty)"),
            ("generator_learning_rate", self.generator_learning_rate > 0, "> 0"),
            ("discriminator_learning_rate", self.discriminator_learning_rate > 0, "> 0"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("max_steps", self.max_steps >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("checkpointing_steps", self.checkpointing_steps >= 0, ">= 0 (0 disables checkpoints)"),
            ("checkpoints_total_limit", self.checkpoints_total_limit >= 1, ">= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{option_name(name)} must be {allowed}, got {getattr(self, name)!r}.")


def build_ddgan(config, data_shape):
    """(generator, discriminator, scheduler) of a config, for data of shape (C, H, W)."""
    channels, height, width = data_shape
    if height != width:
        raise ValueError(f"train-ddgan needs square images, got --data of {height}x{width}.")
    preset = UNET_PRESETS[config.model_preset]
    generator = DDGANGenerator(sample_size=height, in_channels=channels, latent_dim=config.latent_dim,
                               block_out_channels=preset["block_out_channels"],
                               down_block_types=preset["down_block_types"], up_block_types=preset["up_block_types"],
                               layers_per_block=preset["layers_per_block"], norm_num_groups=preset["norm_num_groups"],
                               attention_head_dim=preset.get("attention_head_dim", 8))
    discriminator = DDGANDiscriminator(in_channels=channels,
                                       block_out_channels=parse_channels(config.discriminator_channels))
    scheduler = DDGANScheduler(num_timesteps=config.num_timesteps, sde_type=config.sde_type, beta_min=config.beta_min,
                               beta_max=config.beta_max, sigma_min=config.sigma_min, sigma_max=config.sigma_max,
                               data_centered=config.data_centered)
    return generator, discriminator, scheduler


def train_ddgan(config):
    """Run a DDGAN training as described by a :class:`DDGANTrainingConfig`; returns the saved ``DDGANPipeline``.

    Raises :class:`~diffusers_sde.training.TrainingInterrupted` on SIGINT / SIGTERM and ``FloatingPointError`` on a
    non-finite loss."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    config.validate()
    checkpoint_dir = config.checkpoint_dir or os.path.join(config.output_dir, "checkpoints")
    resume_path = resolve_resume(config.resume, checkpoint_dir) if config.resume else None
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    data = load_dataset(config.data, config.data_centered)
    data_shape = list(data.shape[1:])
    state = None
    if resume_path:
        with open(os.path.join(resume_path, "training_state.json")) as handle:
            state = json.load(handle)
        _check_same_model(config, state, data_shape, resume_path)

    torch.manual_seed(config.seed)  # network initialization
    generator, discriminator, scheduler = build_ddgan(config, data_shape)
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=config.generator_learning_rate, betas=(0.5, 0.9))
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.discriminator_learning_rate,
                                               betas=(0.5, 0.9))
    generator, discriminator, generator_optimizer, discriminator_optimizer = accelerator.prepare(
        generator, discriminator, generator_optimizer, discriminator_optimizer)
    ema = EMAModel(accelerator.unwrap_model(generator).parameters(), decay=config.ema_decay, use_ema_warmup=True,
                   power=3 / 4)
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)
    step = 0
    if resume_path:
        accelerator.load_state(resume_path)
        step = state["step"]
        accelerator.print(f"resumed from {resume_path} at step {step}")
    last_checkpoint = resume_path

    data = data.to(accelerator.device)
    latent_dim = config.latent_dim
    generator.train()
    discriminator.train()
    running, running_steps = {"discriminator": 0.0, "generator": 0.0, "r1": 0.0}, 0
    progress = tqdm(total=config.max_steps, initial=step, desc="training ddgan", unit="step",
                    disable=not accelerator.is_local_main_process)
    try:
        with _SigtermAsInterrupt():
            while step < config.max_steps:
                indices = _batch_indices(len(data), config.batch_size, step, config.seed, accelerator.process_index,
                                         accelerator.num_processes)
                draws = torch.Generator().manual_seed(_micro_batch_seed(config.seed, step, accelerator.process_index))
                batch = data[indices]
                # Discriminator step: real pairs against the generator's posterior draws (Eq. 9 with R1).
                levels, real_previous, sample = sample_real_pairs(scheduler, batch, draws)
                real_previous.requires_grad_(config.r1_gamma > 0)
                time = scheduler.model_time(levels).to(accelerator.device)
                with torch.no_grad():
                    fake_previous = sample_fake_previous(generator, scheduler, sample, levels, latent_dim, draws)
                d_loss, r1 = discriminator_loss(discriminator, real_previous, fake_previous, sample, time,
                                                config.r1_gamma)
                _stop_if_not_finite("discriminator", d_loss, step + 1, last_checkpoint)
                discriminator_optimizer.zero_grad()
                accelerator.backward(d_loss)
                discriminator_optimizer.step()
                # Generator step, on fresh pairs and z (the paper redraws them too).
                levels, _, sample = sample_real_pairs(scheduler, batch, draws)
                time = scheduler.model_time(levels).to(accelerator.device)
                fake_previous = sample_fake_previous(generator, scheduler, sample, levels, latent_dim, draws)
                g_loss = generator_loss(discriminator, fake_previous, sample, time)
                _stop_if_not_finite("generator", g_loss, step + 1, last_checkpoint)
                generator_optimizer.zero_grad()
                accelerator.backward(g_loss)
                generator_optimizer.step()
                ema.step(accelerator.unwrap_model(generator).parameters())
                step += 1
                for name, value in (("discriminator", d_loss), ("generator", g_loss), ("r1", r1)):
                    running[name] += value.item()
                running_steps += 1
                progress.update(1)
                if config.log_every and step % config.log_every == 0:
                    # running_steps, not log_every: a run resumed off the logging grid has a shorter first window
                    means = {name: total / running_steps for name, total in running.items()}
                    accelerator.print(f"step {step}/{config.max_steps} mean D loss {means['discriminator']:.4f}"
                                      f" G loss {means['generator']:.4f} R1 {means['r1']:.4f}", flush=True)
                    running, running_steps = dict.fromkeys(running, 0.0), 0
                last_checkpoint = checkpoint_if_due(accelerator, checkpoint_dir, step, config, data_shape,
                                                    last_checkpoint)
    except KeyboardInterrupt as interrupt:
        raise TrainingInterrupted.at(interrupt, step, config, last_checkpoint) from interrupt
    finally:
        progress.close()

    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(generator)
    ema.copy_to(final.parameters())
    pipeline = DDGANPipeline(generator=final.eval(), scheduler=scheduler)
    if accelerator.is_main_process:
        save_pipeline_atomically(pipeline, config.output_dir)
        accelerator.print(f"saved the EMA DDGAN pipeline to {config.output_dir}")
    accelerator.end_training()
    return pipeline


def _check_same_model(config, state, data_shape, resume_path):
    stored = state.get("config", {})
    differing = [f"{option_name(name)} {stored[name]} -> {getattr(config, name)}" for name in MODEL_FIELDS
                 if name in stored and stored[name] != getattr(config, name)]
    if state.get("data_shape") not in (None, data_shape):
        differing.append(f"--data image shape {state['data_shape']} -> {data_shape}")
    if differing:
        raise ValueError(f"--resume {resume_path} holds a different model: {', '.join(differing)} (checkpoint -> now);"
                         " resume with the checkpoint's values, or train into another --output-dir.")


def _stop_if_not_finite(network, loss, step, last_checkpoint):
    if torch.isfinite(loss):
        return
    advice = (f"Last good checkpoint: {last_checkpoint} (resume with --resume latest, perhaps with lower learning rates"
              " or a larger --r1-gamma)." if last_checkpoint else
              "No checkpoint was saved before it: start again with lower learning rates or a larger --r1-gamma.")
    raise FloatingPointError(f"{network} loss is {loss.item()} at step {step}; stopped without saving. {advice}")
