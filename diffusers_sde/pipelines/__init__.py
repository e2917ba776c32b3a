from .outputs import ScoreSDEEncodeOutput, ScoreSDELikelihoodOutput, ScoreSDEPipelineOutput
from .pipeline_score_sde import SAMPLERS, ScoreSDEPipeline
from .pipeline_inverse_problem import (
    METHODS as INVERSE_PROBLEM_METHODS,
    ScoreSDEColorizationPipeline,
    ScoreSDEInpaintPipeline,
    ScoreSDEInverseProblemPipeline,
)
from .pipeline_img2img import ScoreSDEImg2ImgPipeline
from .pipeline_latent import ScoreSDELatentPipeline
from .probability_flow import slerp
