"""Helpers for the likelihood tests: an exact Gaussian-mixture network under each SDE, inside the data range."""

import math

import torch

from diffusers_sde import GaussianMixture, GaussianMixtureModel, ProbabilityFlowScheduler, ScoreSDEPipeline

# Two cores shared between developers: one thread each, or tiny tensor ops thrash.
torch.set_num_threads(1)

SDE_TYPES = ("ve", "vp", "subvp")


def unit_mixture(channels, size, seed=0):
    """A 3-component mixture on [0, 1]^D, well inside the cube (means in [0.3, 0.7], std 0.04-0.07)."""
    generator = torch.Generator().manual_seed(seed)
    dim = channels * size * size
    means = 0.3 + 0.4 * torch.rand(3, dim, generator=generator, dtype=torch.float64)
    stds = 0.04 + 0.03 * torch.rand(3, dim, generator=generator, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), means, stds**2)


def exact_pipeline(sde_type, channels=2, size=2, data_centered=None, seed=0, unit=None, **sde_config):
    """A ScoreSDEPipeline whose network is the exact score of ``unit`` (default ``unit_mixture``), a mixture on
    [0, 1]^D, mapped to the model's data range.

    ``sde_config`` (sigma_max, ...) goes to both the scheduler and the model. Returns the pipeline and the mixture in
    the model's range.
    """
    scheduler = ProbabilityFlowScheduler(sde_type=sde_type, data_centered=data_centered, **sde_config)
    low, high = (-1.0, 1.0) if scheduler.config.data_centered else (0.0, 1.0)
    unit = unit_mixture(channels, size, seed) if unit is None else unit
    mixture = GaussianMixture(unit.weights, low + (high - low) * unit.means, (high - low) ** 2 * unit.variances)
    model = GaussianMixtureModel.for_scheduler(mixture, scheduler, channels, size)
    pipe = ScoreSDEPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, mixture


def mixture_samples(mixture, num_samples, shape, seed=1):
    """Exact samples, float64, shaped like images."""
    samples, _ = mixture.sample(num_samples, generator=torch.Generator().manual_seed(seed))
    return samples.view(num_samples, *shape)


def bits(nats, dim):
    return nats / (dim * math.log(2))


def mixture_log_prob(pipe, mixture, x, t):
    """log p_t(x) in closed form at any time t."""
    a, s = pipe.scheduler.sde.marginal(torch.tensor(t, dtype=torch.float64))
    return mixture.log_prob(x.flatten(1), a, s)
