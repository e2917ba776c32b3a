"""Solvers that integrate the reverse-time dynamics outside the diffusers scheduler contract (adaptive steps)."""

from ..parameterization import score_function
from .errors import MaxNFEExceededError
from .probability_flow_ode import (
    DIVERGENCES,
    METHODS,
    PROBES,
    ProbabilityFlowLikelihoodOutput,
    ProbabilityFlowODE,
    ProbabilityFlowODEOutput,
)
from .gotta_go_fast import GOTTA_GO_FAST_DEFAULTS, check_gotta_go_fast_arguments, sample_gotta_go_fast
from .noise_removal import remove_noise
from .reverse_sde_torchsde import TORCHSDE_METHODS, brownian_motion, check_torchsde_arguments, sample_reverse_sde
