"""The SDE objects against their defining equations and against independent references."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from diffusers_sde import SubVPSDE, VESDE, VPSDE, make_sde

SDES = [VESDE(0.01, 50.0), VPSDE(0.1, 20.0), SubVPSDE(0.1, 20.0)]
TIMES = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)


def _derivative(fn, t, h=1e-6):
    return (fn(t + h) - fn(t - h)) / (2 * h)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.sde_type)
def test_marginal_solves_the_moment_equations(sde):
    # For dx = f(t) x dt + g dw: d log a / dt = f and d s^2 / dt = 2 f s^2 + g^2 (s^2 measured from the data, so
    # VE's s(t)^2 = sigma(t)^2 satisfies it up to the constant sigma_min^2, which the derivative ignores).
    a_rate = _derivative(lambda t: torch.log(sde.mean_coefficient(t)), TIMES)
    torch.testing.assert_close(a_rate, sde.drift_coefficient(TIMES) * torch.ones_like(TIMES), rtol=1e-6, atol=1e-6)
    var_rate = _derivative(lambda t: sde.std(t) ** 2, TIMES)
    expected = 2 * sde.drift_coefficient(TIMES) * sde.std(TIMES) ** 2 + sde.diffusion(TIMES) ** 2
    torch.testing.assert_close(var_rate, expected, rtol=1e-5, atol=1e-6)


def test_ve_sigma_schedule_is_geometric():
    sde = VESDE(0.01, 50.0)
    assert sde.std(0.0).item() == pytest.approx(0.01)
    assert sde.std(1.0).item() == pytest.approx(50.0)
    assert sde.std(0.5).item() == pytest.approx(math.sqrt(0.01 * 50.0))
    assert sde.prior_std == 50.0


def test_vp_matches_ddpm_linear_schedule():
    # REFERENCE: VP beta 0.1..20 with N=1000 is DDPM's linear 1e-4..0.02; alpha_bar at index i ~ a((i+1)/N)^2.
    ddpm = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    sde = VPSDE(0.1, 20.0)
    t = (torch.arange(1000, dtype=torch.float64) + 1) / 1000
    a2 = sde.mean_coefficient(t) ** 2
    assert a2[499].item() == pytest.approx(0.0791, abs=5e-4)
    torch.testing.assert_close(a2, ddpm.alphas_cumprod.double(), rtol=0.02, atol=2e-4)


def test_subvp_std_is_one_minus_alpha_bar():
    sub, vp = SubVPSDE(0.1, 20.0), VPSDE(0.1, 20.0)
    torch.testing.assert_close(sub.std(TIMES), 1 - vp.mean_coefficient(TIMES) ** 2)
    assert bool((sub.std(TIMES) < vp.std(TIMES)).all())  # "sub"-VP: variance bounded by VP's


def test_discretize_reproduces_smld_and_ddpm():
    ve = VESDE(0.01, 50.0)
    t, t_prev = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.59, dtype=torch.float64)
    f, g = ve.discretize(t, t_prev)
    assert f.item() == 0.0
    assert g.item() ** 2 == pytest.approx(ve.std(t).item() ** 2 - ve.std(t_prev).item() ** 2)
    vp = VPSDE(0.1, 20.0)
    f, g = vp.discretize(t, t_prev)
    beta = 1 - (vp.mean_coefficient(t) / vp.mean_coefficient(t_prev)).item() ** 2
    assert (f + 1).item() == pytest.approx(math.sqrt(1 - beta))
    assert g.item() == pytest.approx(math.sqrt(beta))
    # ... and DDPM's beta_i is beta(t) / N to first order in 1 / N.
    f, g = vp.discretize(t, t - 1e-3)
    assert g.item() ** 2 == pytest.approx(vp.beta(0.6).item() * 1e-3, rel=0.01)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.sde_type)
def test_perturb_and_time_from_std(sde):
    x0 = torch.randn(4, 3, dtype=torch.float64)
    noise = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.7, 0.9], dtype=torch.float64)
    a, s = sde.marginal(t)
    torch.testing.assert_close(sde.perturb(x0, t, noise), a[:, None] * x0 + s[:, None] * noise)
    torch.testing.assert_close(sde.time_from_std(sde.std(t)), t)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.sde_type)
def test_prior_log_prob_is_the_gaussian_density(sde):
    z = torch.randn(5, 2, 3, dtype=torch.float64) * sde.prior_std
    normal = torch.distributions.Normal(0.0, sde.prior_std)
    torch.testing.assert_close(sde.prior_log_prob(z), normal.log_prob(z).flatten(1).sum(1))


def test_reverse_drift_and_probability_flow():
    sde = VPSDE()
    x, score = torch.randn(2, 3), torch.randn(2, 3)
    drift, g = sde.sde(x, 0.5)
    torch.testing.assert_close(sde.reverse_drift(x, 0.5, score), drift - g**2 * score)
    torch.testing.assert_close(sde.reverse_drift(x, 0.5, score, probability_flow=True), drift - 0.5 * g**2 * score)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sde_type="vesde"), "sde_type"),
        (dict(sde_type="ve", sigma_min=5.0, sigma_max=1.0), "sigma_min"),
        (dict(sde_type="vp", beta_min=-0.1), "beta_min"),
        (dict(sde_type="subvp", beta_min=3.0, beta_max=2.0), "beta_max"),
    ],
)
def test_bad_sde_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_sde(**kwargs)


@pytest.mark.parametrize("sde", SDES + [VESDE(0.001, 378.0), SubVPSDE(0.05, 15.0)], ids=lambda s: s.sde_type)
def test_closed_form_time_from_log_snr_inverts_lambda_and_agrees_with_bisection(sde):
    from diffusers_sde.sde import ScoreSDE

    t = torch.cat([torch.tensor([1e-5, 1e-4, 1e-3], dtype=torch.float64), TIMES, torch.tensor([1.0], dtype=torch.float64)])
    lam = sde.log_snr(t)
    assert torch.all(lam[1:] < lam[:-1])  # lambda decreases in t
    # lambda = log(a / s), from the definitions
    torch.testing.assert_close(lam, torch.log(sde.mean_coefficient(t) / sde.std(t)))
    torch.testing.assert_close(sde.time_from_log_snr(lam), t, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ScoreSDE.time_from_log_snr(sde, lam), t, rtol=1e-9, atol=1e-12)  # the generic fallback
