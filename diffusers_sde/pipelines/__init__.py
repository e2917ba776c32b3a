from .outputs import ScoreSDEEncodeOutput, ScoreSDELikelihoodOutput, ScoreSDEPipelineOutput
from .pipeline_score_sde import SAMPLERS, ScoreSDEPipeline
from .probability_flow import slerp
