"""Cold Diffusion (Bansal et al. 2022): deterministic degradations, their sampling algorithms and pipeline."""

from .channel_means import ChannelMeanMixture, fit_channel_mean_mixture
from .degradations import (
    BlurDegradation,
    ComposedDegradation,
    Degradation,
    DownsampleDegradation,
    FadeDegradation,
    MaskDegradation,
)
from .pipeline_cold_diffusion import ColdDiffusionPipeline
from .scheduling_cold_diffusion import ALGORITHMS, ColdDiffusionScheduler, ColdDiffusionSchedulerOutput

__all__ = [
    "ALGORITHMS", "BlurDegradation", "ChannelMeanMixture", "ColdDiffusionPipeline", "ColdDiffusionScheduler", "ColdDiffusionSchedulerOutput",
    "ComposedDegradation", "Degradation", "DownsampleDegradation", "FadeDegradation", "MaskDegradation",
    "fit_channel_mean_mixture",
]
