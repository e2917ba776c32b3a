"""Probability-flow ODE schedulers against closed-form truth."""

import math

import pytest
import torch

from testing_utils import mixture_model
from diffusers_sde import GaussianMixture, ProbabilityFlowScheduler
from test_predictor_corrector import assert_reproduces, sample

# Steps the docs recommend: Heun 100 (199 evaluations); Euler in t needs ~1000 on VE (its sigma grows exponentially in t).
RECOMMENDED = {("euler", "ve"): 1000, ("euler", "vp"): 500, ("euler", "subvp"): 500,
               ("heun", "ve"): 100, ("heun", "vp"): 100, ("heun", "subvp"): 100}


@pytest.mark.parametrize("solver, sde_type", list(RECOMMENDED))
def test_ode_sampler_reproduces_mixture(mixture, solver, sde_type):
    scheduler = ProbabilityFlowScheduler(sde_type=sde_type, integrator=solver)
    steps = RECOMMENDED[solver, sde_type]
    samples, nfe = sample(mixture, scheduler, steps)
    assert nfe == (2 * steps - 1 if solver == "heun" else steps)
    assert_reproduces(mixture, samples)


def _gaussian_error(solver, steps, sde_type="vp"):
    # One Gaussian N(0, v): the ODE maps the prior sample z to a known point. For VP/sub-VP the probability-flow map
    # of a Gaussian is linear: x_t = z * sqrt(a(t)^2 v + s(t)^2) / sqrt(a(1)^2 v + s(1)^2), so the end point is exact.
    v = 0.25
    mixture = GaussianMixture([1.0], torch.zeros(1, 16, dtype=torch.float64), torch.full((1, 16), v, dtype=torch.float64))
    scheduler = ProbabilityFlowScheduler(sde_type=sde_type, integrator=solver, sampling_eps=1e-2)
    model = mixture_model(mixture, scheduler)
    scheduler.set_timesteps(steps)
    z = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = z.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t).sample, t, x).prev_sample
    a1, s1 = scheduler.sde.marginal(torch.tensor(1.0, dtype=torch.float64))
    a, s = scheduler.sde.marginal(torch.tensor(1e-2, dtype=torch.float64))
    at_eps = z * torch.sqrt(a**2 * v + s**2) / torch.sqrt(a1**2 * v + s1**2)
    exact = at_eps * v * a / (a**2 * v + s**2)  # the final step is Tweedie's denoiser, exact for a Gaussian
    assert scheduler.sample_level.t == 0 and scheduler.sample_level.s == 0  # the run ends on the noise-free data
    return (x - exact).abs().max().item()


@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2)])
def test_convergence_order(solver, order):
    coarse, fine = _gaussian_error(solver, 20), _gaussian_error(solver, 40)
    measured = math.log2(coarse / fine)
    assert abs(measured - order) < 0.35, (coarse, fine, measured)


def test_heun_timesteps_repeat_like_diffusers_heun():
    scheduler = ProbabilityFlowScheduler(sde_type="vp", integrator="heun")
    scheduler.set_timesteps(4)
    t = scheduler.timesteps.tolist()
    assert len(t) == 7 and scheduler.order == 2
    assert t[1] == t[2] and t[3] == t[4] and t[5] == t[6]


def test_bad_solver():
    with pytest.raises(ValueError, match="integrator must be one of"):
        ProbabilityFlowScheduler(integrator="rk4")
