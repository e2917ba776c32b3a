"""Linear inverse problems y = A x + n: measurement operators and the sequential Monte Carlo posterior sampler."""

from .operators import ChannelMean, Downsample, LinearOperator, Masking, MatrixOperator
from .smc import twisted_diffusion_sampler
