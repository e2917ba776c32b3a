"""Training: continuous-time score-matching losses, Cold Diffusion's L1 restoration loss, and an accelerate training
loop that saves a ScoreSDEPipeline (or a ColdDiffusionPipeline)."""

from .data import load_dataset, load_digits_dataset, load_hf_dataset, load_image_folder, random_horizontal_flip
from .losses import (
    LOSSES,
    REDUCTIONS,
    WEIGHTINGS,
    cold_diffusion_loss,
    denoising_score_matching_loss,
    discrete_noise_levels,
    discrete_score_matching_loss,
    log_noise_to_signal,
    sample_training_times,
    sliced_score_matching_loss,
)
from .presets import UNET_PRESETS, build_unet
from .trainer import PushToHubError, TrainingConfig, TrainingInterrupted, TrainingWarning, list_checkpoints, train

__all__ = [
    "LOSSES", "REDUCTIONS", "WEIGHTINGS", "UNET_PRESETS", "TrainingConfig",
    "PushToHubError", "TrainingInterrupted", "TrainingWarning",
    "build_unet", "cold_diffusion_loss", "denoising_score_matching_loss", "discrete_noise_levels", "discrete_score_matching_loss",
    "list_checkpoints", "load_dataset", "load_digits_dataset",
    "load_hf_dataset", "load_image_folder", "random_horizontal_flip", "log_noise_to_signal", "sample_training_times", "sliced_score_matching_loss", "train",
]
