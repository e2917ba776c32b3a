"""Models embedded in the package, by short name: their folders load with ``ScoreSDEPipeline.from_pretrained``."""

import os

PRETRAINED_MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
# Pipelines. digits-vp: VP, 8x8 greyscale sklearn digits, trained by the command in docs/training.md; digits-vp-cfg: its
# class-conditional sibling for classifier-free guidance (docs/controllable.md); digits-vp-latent: a VP model of a small
# AutoencoderKL's latents, a ScoreSDELatentPipeline (docs/latent.md).
PRETRAINED_MODELS = ("digits-vp", "digits-vp-cfg", "digits-vp-latent")
# Noise-conditional classifiers for classifier guidance: a folder holding classifier/ (docs/controllable.md).
PRETRAINED_CLASSIFIERS = ("digits-vp-classifier",)


def pretrained_model_path(name="digits-vp"):
    """The folder of the embedded model ``name``, usable from any working directory.

    Args:
        name (`str`): one of ``PRETRAINED_MODELS`` or ``PRETRAINED_CLASSIFIERS``.

    Example: ``ScoreSDEPipeline.from_pretrained(pretrained_model_path("digits-vp"))``.
    """
    if name not in PRETRAINED_MODELS + PRETRAINED_CLASSIFIERS:
        raise ValueError(f"name must be one of {PRETRAINED_MODELS + PRETRAINED_CLASSIFIERS}, got {name!r}.")
    return os.path.join(PRETRAINED_MODELS_DIR, name)
