"""The DDGAN chain against closed forms computed here: DDPM's posterior for VP, and Bayes on the joint Gaussian of
(x_{k-1}, x_k) given x_0 whose covariance comes from the linear SDE's solution, by quadrature of g(t)^2 / a(t)^2."""

import math

import pytest
import torch

from diffusers_sde.ddgan import DDGANScheduler

BETA_MIN, BETA_MAX = 0.1, 20.0


def _vp_alpha_bar(t):
    """DDPM's alpha-bar of the VP SDE at time t: a(t)^2 = exp(-t^2 (beta_max - beta_min) / 2 - t beta_min)."""
    return math.exp(-0.5 * t**2 * (BETA_MAX - BETA_MIN) - t * BETA_MIN)


@pytest.mark.parametrize("num_timesteps", [2, 4, 8])
def test_vp_posterior_is_ddpms(num_timesteps):
    scheduler = DDGANScheduler(num_timesteps=num_timesteps, beta_min=BETA_MIN, beta_max=BETA_MAX)
    alpha_bars = [1.0] + [_vp_alpha_bar(k / num_timesteps) for k in range(1, num_timesteps + 1)]
    for k in range(1, num_timesteps + 1):
        beta = 1 - alpha_bars[k] / alpha_bars[k - 1]
        expected = (  # Ho et al. 2020, Eq. (7)
            math.sqrt(alpha_bars[k - 1]) * beta / (1 - alpha_bars[k]),
            math.sqrt(1 - beta) * (1 - alpha_bars[k - 1]) / (1 - alpha_bars[k]),
            (1 - alpha_bars[k - 1]) / (1 - alpha_bars[k]) * beta,
        )
        got = scheduler.posterior(torch.tensor([k]))
        for value, reference in zip(got, expected):
            assert value.item() == pytest.approx(reference, rel=1e-10, abs=1e-14)
        assert scheduler.variances[k].item() == pytest.approx(beta, rel=1e-10)  # the forward step's beta_k


def _conditional_covariance(scheduler, t):
    """Var(x_t | x_0) / a(t)^2 = int_0^t g^2 / a^2 (the linear SDE's solution; VE starts at sigma_min^2)."""
    sde = scheduler.sde
    grid = torch.linspace(0, t, 200_001, dtype=torch.float64)
    integrand = sde.diffusion(grid) ** 2 / sde.mean_coefficient(grid) ** 2
    start = sde.sigma_min**2 if sde.sde_type == "ve" else 0.0
    return start + torch.trapezoid(integrand, grid).item()


@pytest.mark.parametrize("sde_type", ["vp", "subvp", "ve"])
def test_posterior_is_bayes_on_the_sdes_joint_gaussian(sde_type):
    scheduler = DDGANScheduler(num_timesteps=4, sde_type=sde_type)
    for k in range(2, 5):
        t_prev, t = (k - 1) / 4, k / 4
        a_prev, a = (scheduler.sde.mean_coefficient(torch.tensor(value, dtype=torch.float64)).item()
                     for value in (t_prev, t))
        integral_prev, integral = _conditional_covariance(scheduler, t_prev), _conditional_covariance(scheduler, t)
        # Cov(x_u, x_t | x_0) = a_u a_t int_0^u g^2 / a^2 for u < t.
        var_prev, cross, var = a_prev**2 * integral_prev, a_prev * a * integral_prev, a**2 * integral
        gain = cross / var
        expected = (a_prev - gain * a, gain, var_prev - cross**2 / var)  # Schur complement: mean and variance
        for value, reference in zip(scheduler.posterior(torch.tensor([k])), expected):
            assert value.item() == pytest.approx(reference, rel=1e-5, abs=1e-9)


def test_first_level_posterior_is_the_prediction():
    c0, ck, w = DDGANScheduler(num_timesteps=3).posterior(torch.tensor([1]))
    assert (c0.item(), ck.item(), w.item()) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("sde_type", ["vp", "ve"])
def test_chain_then_posterior_matches_the_forward_joint(sde_type):
    """x_0 -> x_k -> posterior x_{k-1} and x_0 -> x_{k-1} -> forward step x_k draw the same joint (Monte Carlo)."""
    scheduler = DDGANScheduler(num_timesteps=4, sde_type=sde_type, sigma_max=5.0)
    n, k = 400_000, 3
    gen = torch.Generator().manual_seed(0)
    x0 = torch.where(torch.rand(n, generator=gen) < 0.3, -0.8, 0.5).to(torch.float64)
    levels = torch.full((n,), k)
    x_k = scheduler.add_noise(x0, torch.randn(n, generator=gen, dtype=torch.float64), levels)
    x_prev = scheduler.sample_posterior(x0, x_k, torch.randn(n, generator=gen, dtype=torch.float64), levels)
    forward_prev = scheduler.add_noise(x0, torch.randn(n, generator=gen, dtype=torch.float64), levels - 1)
    forward_k = scheduler.forward_step(forward_prev, torch.randn(n, generator=gen, dtype=torch.float64), levels)
    backward, forward = torch.stack([x0, x_prev, x_k]), torch.stack([x0, forward_prev, forward_k])
    scale = forward.std(1).max().item()
    torch.testing.assert_close(backward.mean(1), forward.mean(1), atol=0.01 * scale, rtol=0)
    torch.testing.assert_close(torch.cov(backward), torch.cov(forward), atol=0.015 * scale**2, rtol=0)
    # And the forward route has the SDE's marginals at both levels.
    for level, samples in ((k - 1, forward_prev), (k, forward_k)):
        a, s = scheduler.alphas[level].item(), scheduler.sigmas[level].item()
        assert samples.var().item() == pytest.approx(a**2 * x0.var().item() + s**2, rel=0.02)


@pytest.mark.parametrize("value", [0, 2.5, 1001, "4"])
def test_num_timesteps_outside_the_schedule_is_refused(value):
    with pytest.raises(ValueError, match="num_timesteps"):
        DDGANScheduler(num_timesteps=value)


def test_levels_outside_the_chain_are_refused():
    scheduler = DDGANScheduler(num_timesteps=4)
    with pytest.raises(ValueError, match=r"timesteps must be integer levels in 1\.\.4, got \[5\]"):
        scheduler.posterior(torch.tensor([5]))
    with pytest.raises(ValueError, match="num_inference_steps must be this DDGAN's num_timesteps"):
        scheduler.set_timesteps(10)
