"""What the pipelines return."""

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class ScoreSDEPipelineOutput(BaseOutput):
    """Output of :class:`ScoreSDEPipeline` (and of its ``decode``).

    Args:
        images: PIL images, a (B, H, W, C) numpy array or a (B, C, H, W) tensor in [0, 1], or the raw final sample
            (``output_type="latent"``, in the model's data space, not clamped).
        nfe (`int`): how many network evaluations the run took.
    """

    images: object
    nfe: int


@dataclass
class ScoreSDELikelihoodOutput(BaseOutput):
    """Output of :meth:`ScoreSDEPipeline.log_likelihood`; every field but ``nfe`` is per sample, shape (B,).

    ``nll = prior_nll + ode_nll + dequantization_nll`` (nats), ``bits_per_dim = nll / (D ln 2)``. For integer images
    it is an upper bound (the variational dequantization bound) on -log P(pixels); for a floating tensor it is the
    continuous -log p_eps(x). See docs/likelihood.md.

    Args:
        nll (`torch.Tensor`): negative log-likelihood in nats.
        bits_per_dim (`torch.Tensor`): ``nll`` in bits per dimension.
        prior_nll (`torch.Tensor`): -log p_1(x_1), the prior term at the encoded latents.
        ode_nll (`torch.Tensor`): -int_eps^1 div v dt, the change of variables along the probability-flow ODE.
        dequantization_nll (`torch.Tensor`): D (log k - log(high - low)) for integer images of k levels (``num_levels``),
            from the uniform dequantization and the map [0, 1] -> [low, high] of the model's data range; 0 for a tensor.
        nfe (`int`): network evaluations over all repeats (each with its vector-Jacobian products).
    """

    nll: torch.Tensor
    bits_per_dim: torch.Tensor
    prior_nll: torch.Tensor
    ode_nll: torch.Tensor
    dequantization_nll: torch.Tensor
    nfe: int


@dataclass
class ScoreSDEEncodeOutput(BaseOutput):
    """Output of :meth:`ScoreSDEPipeline.encode`.

    Args:
        latents (`torch.Tensor`): the probability-flow ODE's end point at t = 1 (a prior-shaped sample).
        nfe (`int`): network evaluations.
    """

    latents: torch.Tensor
    nfe: int
