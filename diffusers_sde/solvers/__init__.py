"""Solvers that integrate the reverse-time dynamics outside the diffusers scheduler contract (adaptive steps)."""

from .probability_flow_ode import (
    DIVERGENCES,
    METHODS,
    PROBES,
    MaxNFEExceededError,
    ProbabilityFlowLikelihoodOutput,
    ProbabilityFlowODE,
    ProbabilityFlowODEOutput,
    score_function,
)
from .gotta_go_fast import GOTTA_GO_FAST_DEFAULTS, sample_gotta_go_fast
from .noise_removal import remove_noise
from .reverse_sde_torchsde import TORCHSDE_METHODS, brownian_motion, sample_reverse_sde
