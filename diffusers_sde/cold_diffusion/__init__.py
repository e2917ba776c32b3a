"""Cold Diffusion (Bansal et al. 2022): deterministic degradations, their sampling algorithms and pipeline."""

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
    "ALGORITHMS", "BlurDegradation", "ColdDiffusionPipeline", "ColdDiffusionScheduler", "ColdDiffusionSchedulerOutput",
    "ComposedDegradation", "Degradation", "DownsampleDegradation", "FadeDegradation", "MaskDegradation",
]
