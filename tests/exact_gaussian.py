"""Closed-form references shared by the fast-sampler tests: a 64-dimensional mixture pipeline and the exact
probability-flow map of a single Gaussian."""

import math

import pytest
import torch

from diffusers_sde import GaussianMixture, GaussianMixtureModel, ScoreSDEPipeline

SHAPE64 = (1, 8, 8)  # 64-dimensional "images"
MEAN, VARIANCE = 0.7, 0.09  # the smooth case: data N(MEAN, VARIANCE I)


def continuous_scheduler(cls, sde_type, **kwargs):
    """``cls`` for an exact score network in continuous time (the closed-form mixtures' convention)."""
    return cls(sde_type=sde_type, prediction_type="score", timestep_type="continuous", **kwargs)


def mixture64():
    return GaussianMixture.random(64, num_components=3, spread=2.0, scale=0.3)


def mixture_pipeline(mixture, scheduler):
    """ScoreSDEPipeline over the exact network of ``mixture``, in the scheduler's parameterization."""
    model = GaussianMixtureModel.for_scheduler(mixture, scheduler, SHAPE64[0], SHAPE64[1])
    pipe = ScoreSDEPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gaussian_score(sde):
    """Exact score of N(MEAN, VARIANCE I) under ``sde``, for a scalar or per-sample time, computed in float64."""

    def score(x, t):
        a, s = sde.marginal(torch.as_tensor(t, dtype=torch.float64))
        a, s = (value.reshape(-1, *([1] * (x.dim() - 1))) if value.dim() else value for value in (a, s))
        return (-(x.double() - a * MEAN) / (a**2 * VARIANCE + s**2)).to(x.dtype)

    return score


def exact_ode_sample(sde, latents, eps):
    """Where the probability-flow ODE takes ``latents`` from t = 1 to eps, followed by the noise removal (Tweedie).

    For Gaussian data each coordinate keeps its standardized value (x - a MEAN) / sqrt(a^2 VARIANCE + s^2).
    """
    (a1, s1), (a, s) = (sde.marginal(torch.tensor(t, dtype=torch.float64)) for t in (1.0, eps))
    standardized = (latents.double() - a1 * MEAN) / torch.sqrt(a1**2 * VARIANCE + s1**2)
    x = a * MEAN + torch.sqrt(a**2 * VARIANCE + s**2) * standardized
    return MEAN + a * VARIANCE / (a**2 * VARIANCE + s**2) * (x - a * MEAN)


def observed_order(errors):
    """log2 of the ratio of successive errors when the step halves."""
    return [math.log2(coarse / fine) for coarse, fine in zip(errors[:-1], errors[1:])]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These tests run many small ops; on a shared 2-core machine one thread is ~10x faster than two under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def exact_output_moments(scheduler, num_steps):
    """Mean and variance of what ``scheduler`` returns for data N(MEAN, VARIANCE) started from the exact marginal at
    t = 1, with no sampling noise, as (mean error, relative variance error) against the exact noise-removed marginal.

    With a Gaussian score every step is affine in the sample and in its fresh noise, so the output is
    c + m x_1 + sum_k c_k z_k. One batch recovers c (x_1 = 0, no noise), m (x_1 = 1) and each c_k (noise 1 at draw k
    only, given to sample 2 + k through the scheduler's noise hook); the moments follow in closed form.
    """
    score = gaussian_score(scheduler.sde)
    scheduler.set_timesteps(num_steps)
    draws = iter(range(len(scheduler.timesteps)))

    def one_hot_noise(sample, generator):
        noise = torch.zeros_like(sample)
        noise[2 + next(draws)] = 1.0
        return noise

    scheduler._noise = one_hot_noise
    x = torch.zeros(2 + len(scheduler.timesteps), 1, dtype=torch.float64)
    x[1] = 1.0
    for t in scheduler.timesteps:
        x = scheduler.step(score(x, scheduler.parameterization.time_from_model_time(t.double())), t, x).prev_sample
    constant, slope, noise_gains = x[0, 0], x[1, 0] - x[0, 0], x[2:, 0] - x[0, 0]
    (a1, s1), (a, s) = (scheduler.sde.marginal(torch.tensor(t, dtype=torch.float64))
                        for t in (1.0, scheduler.config.sampling_eps))
    mean = constant + slope * a1 * MEAN
    variance = slope**2 * (a1**2 * VARIANCE + s1**2) + (noise_gains**2).sum()
    exact_variance = a**2 * VARIANCE**2 / (a**2 * VARIANCE + s**2)  # Var of Tweedie's E[x_0 | x_eps]
    return (mean - MEAN).item(), (variance / exact_variance - 1).item()
