"""The ``diffusers-sde train`` subcommand: options of :class:`TrainingConfig`, parsed and handed to ``train``."""

import dataclasses

from .presets import UNET_PRESETS
from .trainer import MIXED_PRECISIONS, TrainingConfig, train
from .losses import LOSSES, REDUCTIONS, WEIGHTINGS
from ..sde import SDE_TYPES
from ..parameterization import PREDICTION_TYPES, TIMESTEP_TYPES


def _bool(text):
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def add_train_parser(commands):
    """Add the ``train`` subparser to the CLI's subcommands."""
    p = commands.add_parser("train", help="train a score-SDE UNet with continuous denoising score matching")
    p.add_argument("--output-dir", dest="output_dir", required=True, help="where the final pipeline is saved")
    p.add_argument("--data", default="digits", help="'digits' (embedded sklearn digits), a folder of same-size images, a"
                   " folder written by datasets' save_to_disk, or imagefolder:<path> (the last two need `datasets`)")
    p.add_argument("--random-flip", dest="random_flip", action="store_true", default=None,
                   help="mirror training images left-right with probability 1/2")
    p.add_argument("--sde-type", dest="sde_type", choices=SDE_TYPES, default="vp")
    for name in ("sigma_min", "sigma_max", "beta_min", "beta_max", "learning_rate", "grad_clip", "eps", "ema_decay"):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=float)
    for name in ("num_train_timesteps", "max_steps", "batch_size", "gradient_accumulation_steps", "warmup_steps",
                 "checkpointing_steps", "checkpoints_total_limit", "seed", "log_every", "sample_every", "num_samples"):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=int)
    p.add_argument("--prediction-type", dest="prediction_type", choices=PREDICTION_TYPES)
    p.add_argument("--timestep-type", dest="timestep_type", choices=TIMESTEP_TYPES)
    p.add_argument("--data-centered", dest="data_centered", type=_bool, help="true: data in [-1, 1]; false: [0, 1]")
    p.add_argument("--model-preset", dest="model_preset", choices=tuple(UNET_PRESETS))
    p.add_argument("--loss", choices=LOSSES, help="continuous (default, Eq. 7) or discrete (SMLD for VE, DDPM for VP)")
    p.add_argument("--weighting", choices=WEIGHTINGS)
    p.add_argument("--importance-sampling", dest="importance_sampling", action="store_true", default=None)
    p.add_argument("--reduction", choices=REDUCTIONS)
    p.add_argument("--mixed-precision", dest="mixed_precision", choices=MIXED_PRECISIONS)
    p.add_argument("--checkpoint-dir", dest="checkpoint_dir", help="default: <output-dir>/checkpoints")
    p.add_argument("--resume", help="'latest' or a checkpoint-N folder")
    p.add_argument("--push-to-hub", dest="push_to_hub", action="store_true", default=None,
                   help="push the saved pipeline to the Hub (after the local save)")
    p.add_argument("--hub-model-id", dest="hub_model_id", help="Hub repo for --push-to-hub (default: output folder name)")
    p.set_defaults(func=train_from_args)
    return p


def train_from_args(args):
    fields = {field.name for field in dataclasses.fields(TrainingConfig)}
    given = {name: value for name, value in vars(args).items() if name in fields and value is not None}
    return train(TrainingConfig(**given))
