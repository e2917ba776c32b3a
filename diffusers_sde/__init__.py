"""diffusers-sde: score-based generative modeling through SDEs (Song et al., ICLR 2021) for Hugging Face diffusers."""

# The loader looks these base classes up on the library a component comes from (see _registration.py).
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin  # noqa: F401

from ._registration import register as _register
from .gaussian_mixture import ConditionalGaussianMixtureModel, GaussianMixture, GaussianMixtureClassifier, GaussianMixtureModel
from .guidance import ClassifierTrainingConfig, NoiseConditionalClassifier, NoiseConditionalClassifierOutput, train_classifier
from .models import NCSNppModel, NCSNppOutput
from .parameterization import PREDICTION_TYPES, TIMESTEP_TYPES, Parameterization, score_function
from .pipelines import SAMPLERS, ScoreSDEPipeline, ScoreSDEPipelineOutput
from .pipelines import INVERSE_PROBLEM_METHODS, ScoreSDEColorizationPipeline, ScoreSDEImg2ImgPipeline
from .pipelines import ScoreSDEInpaintPipeline, ScoreSDEInverseProblemPipeline
from .pipelines import ScoreSDELatentPipeline
from .inverse_problems import ChannelMean, Downsample, LinearOperator, Masking
from .pipelines import ScoreSDEEncodeOutput, ScoreSDELikelihoodOutput, slerp
from .schedulers import (
    CORRECTORS,
    INTEGRATORS,
    LANGEVIN_NORMS,
    PREDICTORS,
    SOLVER_ORDERS,
    TIMESTEP_SPACINGS,
    EDMHeunScheduler,
    ExponentialIntegratorScheduler,
    NoiseLevel,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    ScoreSDESchedulerMixin,
    ScoreSDESchedulerOutput,
    RestartScheduler,
    SDEDPMSolverScheduler,
    UniPCScheduler,
)
from .schedulers import NOISE_SCALE_FUNCTIONS, ERSDEScheduler
from .cold_diffusion import BlurDegradation, ColdDiffusionPipeline, ColdDiffusionScheduler, ColdDiffusionSchedulerOutput
from .cold_diffusion import ComposedDegradation, Degradation, DownsampleDegradation, FadeDegradation, MaskDegradation
from .cold_diffusion import ChannelMeanMixture, fit_channel_mean_mixture
from .ddgan import DDGANDiscriminator, DDGANGenerator, DDGANPipeline, DDGANScheduler, DDGANSchedulerOutput
from .pretrained_models import PRETRAINED_MODELS, pretrained_model_path
from .sde import SDE_TYPES, ScoreSDE, SubVPSDE, VESDE, VPSDE, make_sde
from .solvers import DIVERGENCES, PROBES, MaxNFEExceededError, ProbabilityFlowODE
from .solvers import ProbabilityFlowLikelihoodOutput, ProbabilityFlowODEOutput
from .training import TrainingConfig, denoising_score_matching_loss, discrete_score_matching_loss, sliced_score_matching_loss
from .training import train

__version__ = "0.1.0"

_register([ScoreSDEPipeline, ScoreSDEInverseProblemPipeline, ScoreSDEInpaintPipeline, ScoreSDEColorizationPipeline,
           ScoreSDEImg2ImgPipeline, ColdDiffusionPipeline, ScoreSDELatentPipeline, DDGANPipeline])

__all__ = [
    "CORRECTORS", "INTEGRATORS", "LANGEVIN_NORMS", "PREDICTORS", "PREDICTION_TYPES", "SAMPLERS", "SDE_TYPES",
    "TIMESTEP_TYPES", "NoiseLevel",
    "GaussianMixture", "GaussianMixtureModel", "ConditionalGaussianMixtureModel", "GaussianMixtureClassifier", "Parameterization",
    "NoiseConditionalClassifier", "NoiseConditionalClassifierOutput", "ClassifierTrainingConfig", "train_classifier",
    "NCSNppModel", "NCSNppOutput",
    "PredictorCorrectorScheduler", "ProbabilityFlowScheduler", "ExponentialIntegratorScheduler", "EDMHeunScheduler",
    "SDEDPMSolverScheduler", "RestartScheduler", "UniPCScheduler",
    "ERSDEScheduler", "NOISE_SCALE_FUNCTIONS",
    "SOLVER_ORDERS", "TIMESTEP_SPACINGS", "ScoreSDESchedulerMixin", "ScoreSDESchedulerOutput",
    "ScoreSDEPipeline", "ScoreSDEPipelineOutput", "ScoreSDEInverseProblemPipeline", "ScoreSDEInpaintPipeline",
    "ScoreSDEColorizationPipeline", "ScoreSDEImg2ImgPipeline", "INVERSE_PROBLEM_METHODS",
    "ScoreSDELatentPipeline",
    "LinearOperator", "Masking", "ChannelMean", "Downsample",
    "ScoreSDEEncodeOutput", "ScoreSDELikelihoodOutput", "slerp",
    "DIVERGENCES", "PROBES", "MaxNFEExceededError", "ProbabilityFlowODE", "ProbabilityFlowODEOutput",
    "ProbabilityFlowLikelihoodOutput", "score_function",
    "PRETRAINED_MODELS", "pretrained_model_path",
    "ScoreSDE", "VESDE", "VPSDE", "SubVPSDE", "make_sde",
    "TrainingConfig", "denoising_score_matching_loss", "discrete_score_matching_loss", "sliced_score_matching_loss",
    "train",
    "ChannelMeanMixture", "fit_channel_mean_mixture",
    "ColdDiffusionPipeline", "ColdDiffusionScheduler", "ColdDiffusionSchedulerOutput", "Degradation", "BlurDegradation",
    "MaskDegradation", "DownsampleDegradation", "FadeDegradation", "ComposedDegradation",
    "DDGANPipeline", "DDGANScheduler", "DDGANSchedulerOutput", "DDGANGenerator", "DDGANDiscriminator",
]
