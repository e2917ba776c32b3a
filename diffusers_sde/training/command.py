"""The ``diffusers-sde train`` subcommand: options of :class:`TrainingConfig`, parsed and handed to ``train``."""

import argparse
import dataclasses
import sys
import warnings

from .presets import UNET_PRESETS
from .trainer import DEGRADATIONS, MIXED_PRECISIONS, PushToHubError, TrainingConfig, TrainingInterrupted, TrainingWarning, train
from .losses import LOSSES, REDUCTIONS, WEIGHTINGS
from .. import command_options
from ..command_options import option_name, parse_bool
from ..sde import SDE_TYPES
from ..parameterization import PREDICTION_TYPES, TIMESTEP_TYPES

_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainingConfig)}
_FLAGS = ("random_flip", "importance_sampling", "push_to_hub", "mask_random_center")  # store_true options

# One help line per option; "(default: ...)" is added from TrainingConfig where the default is a value.
_HELP = {
    "output_dir": "where the final pipeline (EMA weights) is saved",
    "data": "'digits' (embedded sklearn digits, train split), 'digits-tinted' (the same in random colours), a folder of same-size images, a folder written by"
            " datasets' save_to_disk, or imagefolder:<path> (the last two need `datasets`)",
    "random_flip": "mirror training images left-right with probability 1/2",
    "sde_type": "the SDE",
    "sigma_min": "VE: smallest noise level",
    "sigma_max": "VE: largest noise level",
    "beta_min": "VP and sub-VP: beta(0)",
    "beta_max": "VP and sub-VP: beta(1)",
    "num_train_timesteps": "N: the time grid of the discrete loss and of discrete time inputs t (N - 1)",
    "prediction_type": "what the network predicts (default: the SDE's paper choice, epsilon for VP / sub-VP, score for VE)",
    "timestep_type": "what the network is fed as time (default: discrete for VP / sub-VP, sigma for VE)",
    "data_centered": "true: data in [-1, 1]; false: [0, 1] (default: true for VP / sub-VP, false for VE)",
    "model_preset": "UNet2DModel size (digits-tiny: 8x8 images on a CPU; digits-mini: the same at half the width)",
    "num_classes": "K: a class-conditional network for classifier-free guidance (labelled data: digits, or"
                   " imagefolder:<path> with class subfolders); label K is the unconditional one",
    "label_dropout": "with --num-classes: probability of replacing a label by the unconditional one (default: 0.1)",
    "loss": "continuous (Eq. 7) or discrete (SMLD for VE, DDPM for VP)",
    "weighting": "lambda(t) of the continuous loss: std (s(t)^2) or likelihood (g(t)^2)",
    "importance_sampling": "with --weighting likelihood: draw t uniformly in the log noise-to-signal ratio",
    "reduction": "mean or sum of each sample's squared errors",
    "eps": "smallest training time t",
    "max_steps": "optimizer steps",
    "batch_size": "images per process and micro-batch",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "mixed_precision": "accelerate's mixed precision",
    "learning_rate": "Adam learning rate (default: 1e-3 for digits-tiny, the paper's 2e-4 for the other presets)",
    "warmup_steps": "steps of linear learning-rate warm-up (default: 100 for digits-tiny, the paper's 5000 otherwise)",
    "grad_clip": "gradient norm clipping",
    "ema_decay": "EMA decay, with diffusers' warm-up (default: 0.999 for VE, 0.9999 for VP / sub-VP)",
    "checkpointing_steps": "save checkpoint-N every this many steps (0: never)",
    "checkpoint_dir": "where checkpoints go (default: <output-dir>/checkpoints)",
    "checkpoints_total_limit": "keep this many newest checkpoints",
    "resume": "'latest' or a checkpoint-N folder; the model options must match the checkpoint's",
    "seed": "seeds the network initialization, the data order and the noise",
    "log_every": "print the mean loss every this many steps (0: never)",
    "sample_every": "write <output-dir>/samples/step-N.png every this many steps (0: never)",
    "num_samples": "samples per grid of --sample-every",
    "push_to_hub": "push the saved pipeline to the Hub (after the local save)",
    "hub_model_id": "Hub repo for --push-to-hub (default: the output folder's name)",
    "vae": "an AutoencoderKL folder (diffusers-sde train-vae): train on its scaled latents, encoded once, and save a"
           " ScoreSDELatentPipeline",
    "degradation": "train a Cold Diffusion restoration network (L1 loss) for this degradation and save a"
                   " ColdDiffusionPipeline, instead of a score model",
    "degradation_steps": "with --degradation: T, the number of degradation steps (default: the degradation's: blur 300,"
                         " mask 100, downsample 4, fade 100)",
    "blur_kernel_size": "--degradation blur: odd kernel width (default: 27; at most 2 H - 1 for H x H images)",
    "blur_kernel_std": "--degradation blur: the first step's kernel std in pixels (default: 1.0)",
    "blur_kernel_std_rate": "--degradation blur: std_t = std exp(rate (t - 1)) (default: 0.01)",
    "mask_std": "--degradation mask: the first step's Gaussian mask std in pixels (default: 1.0)",
    "mask_std_growth": "--degradation mask: std_t = std + growth (t - 1) (default: 0.1)",
    "mask_random_center": "--degradation mask: train on masks centred at a random point of each image (the paper's"
                          " inpainting training); sampling uses the image centre",
    "fade_value": "--degradation fade: the constant images fade to, in the data range (default: 0.0)",
    "channel_mean_components": "with --degradation: K, the Gaussian mixture fitted to the training images' channel"
                               " means that generation starts from (default: 1)",
}
_CHOICES = {"sde_type": SDE_TYPES, "prediction_type": PREDICTION_TYPES, "timestep_type": TIMESTEP_TYPES,
            "model_preset": tuple(UNET_PRESETS), "loss": LOSSES, "weighting": WEIGHTINGS, "reduction": REDUCTIONS,
            "mixed_precision": MIXED_PRECISIONS, "degradation": tuple(DEGRADATIONS)}



class _HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action):
        default = _DEFAULTS.get(action.dest)
        if action.dest in _FLAGS:
            return f"{action.help} (default: off)"
        if default is dataclasses.MISSING:
            return f"{action.help} (required)"
        if default is None:  # the help line says what an unset value means, or there is none
            return action.help if "default" in action.help else f"{action.help} (default: none)"
        return f"{action.help} (default: {default})"


def add_train_parser(commands):
    """Add the ``train`` subparser to the CLI's subcommands: one option per :class:`TrainingConfig` field."""
    p = commands.add_parser("train", help="train a score-SDE UNet with continuous denoising score matching, or (--degradation) a Cold"
                            " Diffusion restoration network",
                            formatter_class=_HelpFormatter)
    types = {float: float, int: int, str: str, bool: parse_bool}
    for field in dataclasses.fields(TrainingConfig):
        if field.name in _FLAGS:
            p.add_argument(option_name(field.name), dest=field.name, action="store_true", default=None,
                           help=_HELP[field.name])
            continue
        kind = types[field.type]
        p.add_argument(option_name(field.name), dest=field.name, type=kind, choices=_CHOICES.get(field.name),
                       required=field.name == "output_dir", help=_HELP[field.name])
    p.set_defaults(func=train_from_args)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    if issubclass(category, TrainingWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def train_from_args(args):
    fields = {field.name for field in dataclasses.fields(TrainingConfig)}
    config = TrainingConfig(**{name: value for name, value in vars(args).items() if name in fields and value is not None})
    warnings.showwarning = _show_warning
    try:
        return train(config)
    except TrainingInterrupted as interrupted:
        command_options.exit_interrupted(interrupted, "train", config, flags=_FLAGS)
    except (FloatingPointError, PushToHubError) as error:
        sys.exit(f"error: {error}")
