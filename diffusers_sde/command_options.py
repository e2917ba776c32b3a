"""What every ``diffusers-sde`` command checks the same way: the --model name, the --device, --quiet, true/false
values."""

import argparse
import os

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
