"""What every ``diffusers-sde`` command checks the same way: the --model name, the --device, --quiet, true/false
values; and the commands whose options are the fields of a config dataclass (the training commands)."""

import argparse
import dataclasses
import os
import shlex
import sys

import torch

from .pretrained_models import PRETRAINED_MODELS, pretrained_model_path


def resolve_model(model):
    """--model: a local folder wins; otherwise an embedded model's short name; otherwise a Hub repo id."""
    if model in PRETRAINED_MODELS and not os.path.exists(model):
        return pretrained_model_path(model)
    return model


def check_device(device):
    """Refuse an unusable --device before anything is loaded."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise SystemExit(f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps.") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: CUDA is not available here (torch {torch.__version__},"
                             " torch.cuda.is_available() is False); use --device cpu.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise SystemExit(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s),"
                             f" cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit(f"--device {device}: MPS is not available here; use --device cpu.")


def refuse_latent_model(model, command):
    """Commands on pixel images (likelihood, inpaint, colorize, img2img) refuse a latent model's folder (a
    ScoreSDELatentPipeline) before loading it, instead of failing later on the shape of its latents."""
    from diffusers import DiffusionPipeline

    try:
        name = DiffusionPipeline.load_config(resolve_model(model)).get("_class_name")
    except (OSError, ValueError):
        return  # the loader reports what is wrong with the folder
    if name == "ScoreSDELatentPipeline":
        raise SystemExit(f"--model {model!r} is a latent model (ScoreSDELatentPipeline); {command} takes a pixel-space"
                         " model. Use a latent model from Python (docs/latent.md).")


def silence_progress_bars():
    """--quiet: no bar at all, loading included (diffusers' and huggingface_hub's)."""
    import diffusers
    import huggingface_hub

    diffusers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def parse_bool(text):
    """An option's true/false value: 1/true/yes or 0/false/no, in any case."""
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def option_name(field_name):
    """A config field's command-line flag: ``max_steps`` -> ``--max-steps``."""
    return "--" + field_name.replace("_", "-")


def add_config_parser(commands, name, help, config_class, help_texts, run, choices=None):
    """A subcommand with one option per field of the dataclass ``config_class`` (its default shown in --help; fields
    without a default are required); ``run(config)`` executes it.

    Args:
        commands: the CLI's subparsers.
        name (`str`), help (`str`): the subcommand and its one-line help.
        config_class: the dataclass; its fields are typed ``str``, ``int``, ``float`` or ``bool``.
        help_texts (`dict`): field name -> help line, one per field.
        run (`callable`): called with the ``config_class`` instance built from the parsed options.
        choices (`dict`, *optional*): field name -> the values allowed.
    """
    p = commands.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for field in dataclasses.fields(config_class):
        required = field.default is dataclasses.MISSING
        p.add_argument(option_name(field.name), dest=field.name, type=parse_bool if field.type is bool else field.type,
                       required=required, default=None if required else field.default,
                       choices=(choices or {}).get(field.name), help=help_texts[field.name])
    p.set_defaults(func=lambda args: run(config_class(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(config_class)})))
    return p


def resume_command(name, config, flags=()):
    """The command line that resumes ``config``'s run from its latest checkpoint: ``diffusers-sde <name>`` with the
    config's non-default options (``flags``: fields given as bare switches) and ``--resume latest``."""
    parts = ["diffusers-sde", name]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "resume" or value == field.default:
            continue
        if field.name in flags:
            parts.append(option_name(field.name))
        else:
            parts += [option_name(field.name), str(value).lower() if isinstance(value, bool) else str(value)]
    return shlex.join(parts + ["--resume", "latest"])


def exit_interrupted(interrupted, name, config, flags=()):
    """End a command whose training run was interrupted (a ``TrainingInterrupted``): print why, with the command line
    that resumes it when a checkpoint was saved, and exit with 128 + the signal's number, as a shell does."""
    resume = f"; resume with: {resume_command(name, config, flags)}" if interrupted.last_checkpoint else ""
    print(f"{interrupted}{resume}", file=sys.stderr)
    sys.exit(128 + interrupted.signal_number)


def parse_channels(text):
    """A comma-separated list of positive integers (``"32,64"``, a --block-out-channels value) as a tuple; ``None``
    when the text is not one."""
    try:
        channels = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        return None
    return channels if channels and all(value >= 1 for value in channels) else None


def block_out_channels(text):
    """--block-out-channels as a tuple, or the error that names the option and the value."""
    channels = parse_channels(text)
    if channels is None:
        raise ValueError(f"--block-out-channels must be comma-separated positive integers, got {text!r}.")
    return channels
