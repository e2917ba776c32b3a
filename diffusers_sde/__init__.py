"""diffusers-sde: score-based generative modeling through SDEs (Song et al., ICLR 2021) for Hugging Face diffusers."""

# The loader looks these base classes up on the library a component comes from (see _registration.py).
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin  # noqa: F401

from ._registration import register as _register
from .gaussian_mixture import GaussianMixture, GaussianMixtureModel
from .parameterization import PREDICTION_TYPES, TIMESTEP_TYPES, Parameterization
from .pipelines import ScoreSDEPipeline, ScoreSDEPipelineOutput
from .schedulers import (
    CORRECTORS,
    PREDICTORS,
    SOLVERS,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    ScoreSDESchedulerMixin,
    ScoreSDESchedulerOutput,
)
from .sde import SDE_TYPES, ScoreSDE, SubVPSDE, VESDE, VPSDE, make_sde

__version__ = "0.1.0"

_register([ScoreSDEPipeline])

__all__ = [
    "CORRECTORS", "PREDICTORS", "PREDICTION_TYPES", "SDE_TYPES", "SOLVERS", "TIMESTEP_TYPES",
    "GaussianMixture", "GaussianMixtureModel", "Parameterization",
    "PredictorCorrectorScheduler", "ProbabilityFlowScheduler", "ScoreSDESchedulerMixin", "ScoreSDESchedulerOutput",
    "ScoreSDEPipeline", "ScoreSDEPipelineOutput",
    "ScoreSDE", "VESDE", "VPSDE", "SubVPSDE", "make_sde",
]
