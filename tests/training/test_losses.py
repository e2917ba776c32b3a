"""Score-matching losses against closed-form truth on a 2-D Gaussian mixture.

Irreducible value of denoising score matching (what the loss equals with the exact score). With x_t = a x_0 + s z and
lambda(t) the weighting, the per-sample loss is (lambda / s^2) || s score(x_t) + z ||^2, and

    E || s score(x_t) + z ||^2 = s^2 E||score||^2 + 2 s E[z . score(x_t)] + D
                               = s^2 F(t) - 2 s^2 F(t) + D = D - s^2 F(t),

because Stein's lemma gives E[z . h(a x_0 + s z)] = s E[div h(x_t)] and integration by parts gives
E_{p_t}[div score] = -E_{p_t}||score||^2 =: -F(t), the Fisher information of p_t. Hence the expected loss is

    J = 1 / (1 - eps) * integral_eps^1 lambda(t) / s(t)^2 * (D - s(t)^2 F(t)) dt    (sum over the D elements).

F(t) is computed here without Monte Carlo: a 2-D trapezoid quadrature of p_t ||grad log p_t||^2 on a grid covering
every component to 9 standard deviations, with grad log p_t from autograd of the mixture's log-density (not from the
closed-form score the model uses); the time integral is Gauss-Legendre in log t, where the integrand is smooth even
for the 1 / t behaviour of g^2 / s^2 near t = 0. Monte-Carlo loss estimates are compared with J within 4 standard
errors computed from the per-sample losses.
"""

import functools
import math

import numpy as np
import pytest
import torch

from diffusers_sde import GaussianMixture, GaussianMixtureModel, Parameterization, make_sde
from diffusers_sde.training import (
    denoising_score_matching_loss,
    discrete_noise_levels,
    discrete_score_matching_loss,
    sample_training_times,
    sliced_score_matching_loss,
)

DIM = 2
GRID_POINTS = 121
TIME_NODES = 20
# (sde_type, prediction_type, timestep_type): every SDE, and every parameterization exercised once.
SETUPS = [("ve", "score", "sigma"), ("vp", "epsilon", "discrete"), ("subvp", "v_prediction", "continuous"),
          ("vp", "sample", "continuous")]


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture.random(DIM, num_components=3, generator=torch.Generator().manual_seed(1))


def fisher_information(mixture, a, s):
    """E_{p_t} ||grad log p_t||^2 by trapezoid quadrature on a 2-D grid (float64)."""
    stds = (a**2 * mixture.variances + s**2).sqrt()
    low = (a * mixture.means - 9 * stds).min(0).values
    high = (a * mixture.means + 9 * stds).max(0).values
    axes = [torch.linspace(low[i].item(), high[i].item(), GRID_POINTS, dtype=torch.float64) for i in range(DIM)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, DIM).requires_grad_(True)
    log_p = mixture.log_prob(grid, a, s)
    (grad,) = torch.autograd.grad(log_p.sum(), grid)
    integrand = (log_p.exp() * grad.pow(2).sum(1)).detach().reshape(GRID_POINTS, GRID_POINTS)
    return torch.trapezoid(torch.trapezoid(integrand, axes[1], dim=1), axes[0]).item()


@functools.lru_cache(maxsize=None)
def _cached_irreducible(key, weighting, eps):
    mixture, sde = _CACHE_OBJECTS[key]
    return _irreducible(mixture, sde, weighting, eps)


_CACHE_OBJECTS = {}


def irreducible_loss(mixture, sde, weighting, eps):
    key = (id(mixture), sde.sde_type)
    _CACHE_OBJECTS[key] = (mixture, sde)
    return _cached_irreducible(key, weighting, eps)


def _irreducible(mixture, sde, weighting, eps):
    # Gauss-Legendre in log t on segments split at t = 1e-2 and 1e-1 (VE's sigma changes fastest near t = 1).
    nodes, weights = np.polynomial.legendre.leggauss(TIME_NODES)
    edges = [math.log(eps), math.log(1e-2), math.log(1e-1), 0.0]
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        for node, weight in zip(nodes, weights):
            t = math.exp(low + (node + 1) / 2 * (high - low))
            t64 = torch.tensor(t, dtype=torch.float64)
            a, s = (value.item() for value in sde.marginal(t64))
            ratio = 1.0 if weighting == "std" else sde.diffusion(t64).item() ** 2 / s**2
            integrand = ratio * (DIM - s**2 * fisher_information(mixture, a, s))
            total += weight * (high - low) / 2 * integrand * t  # dt = t d(log t)
    return total / (1 - eps)


def exact_model(mixture, sde_type, prediction_type, timestep_type):
    return GaussianMixtureModel.from_mixture(mixture, in_channels=1, sample_size=(1, DIM), sde_type=sde_type,
                                             prediction_type=prediction_type, timestep_type=timestep_type)


def monte_carlo(model, mixture, weighting, eps, importance_sampling=False, samples=20000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x0 = mixture.sample(samples, generator=generator)[0].reshape(samples, 1, 1, DIM)
    _, per_sample, _ = denoising_score_matching_loss(
        model, x0, model.sde, model.parameterization, weighting=weighting, eps=eps, reduction="sum",
        importance_sampling=importance_sampling, generator=generator, return_per_sample=True)
    return per_sample.mean().item(), per_sample.std().item() / math.sqrt(samples)


# Uniform t with likelihood weighting has a 1/t-heavy estimator for VP; a larger eps keeps its Monte-Carlo error usable.
CASES = [("std", False, 1e-5), ("likelihood", False, 1e-2), ("likelihood", True, 1e-5)]


@pytest.mark.parametrize("weighting, importance_sampling, eps", CASES)
@pytest.mark.parametrize("sde_type, prediction_type, timestep_type", SETUPS)
def test_exact_score_reaches_irreducible_loss(mixture, sde_type, prediction_type, timestep_type, weighting,
                                              importance_sampling, eps):
    model = exact_model(mixture, sde_type, prediction_type, timestep_type)
    expected = irreducible_loss(mixture, model.sde, weighting, eps)
    mean, standard_error = monte_carlo(model, mixture, weighting, eps, importance_sampling)
    assert abs(mean - expected) < 4 * standard_error + 1e-3 * abs(expected), (mean, standard_error, expected)


@pytest.mark.parametrize("sde_type", ["ve", "vp"])
def test_wrong_score_costs_more_than_irreducible(mixture, sde_type):
    exact = exact_model(mixture, sde_type, "score", "continuous")

    def shrunk(sample, timestep):
        return 0.8 * exact(sample, timestep).sample

    shrunk.sde, shrunk.parameterization = exact.sde, exact.parameterization
    expected = irreducible_loss(mixture, exact.sde, "std", 1e-5)
    mean, standard_error = monte_carlo(shrunk, mixture, "std", 1e-5)
    assert mean > expected + 4 * standard_error


def test_mean_reduction_is_sum_over_elements(mixture):
    model = exact_model(mixture, "vp", "epsilon", "discrete")
    x0 = mixture.sample(64, generator=torch.Generator().manual_seed(0))[0].reshape(64, 1, 1, DIM)
    losses = [denoising_score_matching_loss(model, x0, model.sde, model.parameterization, reduction=reduction,
                                            generator=torch.Generator().manual_seed(3)) for reduction in ("sum", "mean")]
    assert torch.allclose(losses[0], DIM * losses[1])


@pytest.mark.parametrize("sde_type", ["ve", "vp", "subvp"])
def test_importance_sampled_times_follow_g2_over_s2(sde_type):
    # q(t) is proportional to g^2 / s^2 = d/dt log(s^2 / a^2): its CDF is the normalized rise of log(s^2 / a^2).
    sde, eps = make_sde(sde_type), 1e-5
    t, factor = sample_training_times(sde, 20000, eps, importance_sampling=True, generator=torch.Generator().manual_seed(0))
    assert bool(((t >= eps) & (t <= 1)).all())

    def rho(times):
        a, s = sde.marginal(torch.as_tensor(times, dtype=torch.float64))
        return torch.log(s**2 / a**2)

    levels = torch.tensor([eps, 1e-3, 1e-2, 0.1, 0.3, 0.6, 0.9, 1.0], dtype=torch.float64)
    cdf = (rho(levels) - rho(eps)) / (rho(1.0) - rho(eps))
    empirical = (t[None] <= levels[:, None]).double().mean(1)
    assert torch.allclose(empirical, cdf, atol=0.015)
    assert factor == pytest.approx((rho(1.0) - rho(eps)).item() / (1 - eps))


def test_sliced_score_matching_matches_fisher_identity(mixture):
    # At the exact score, E[tr grad s + ||s||^2 / 2] = -F(0) / 2 (integration by parts); a score scaled by c gives
    # -c F + c^2 F / 2, larger for c != 1.
    samples = 40000
    x = mixture.sample(samples, generator=torch.Generator().manual_seed(0))[0]
    fisher = fisher_information(mixture, 1.0, 0.0)
    for scale, projection in ((1.0, "gaussian"), (1.0, "rademacher"), (0.5, "rademacher")):
        _, per_sample = sliced_score_matching_loss(
            lambda y: scale * mixture.score(y), x, num_projections=2, projection=projection,
            generator=torch.Generator().manual_seed(1), reduction="sum", return_per_sample=True)
        mean, error = per_sample.mean().item(), per_sample.std().item() / math.sqrt(samples)
        expected = -scale * fisher + scale**2 * fisher / 2
        assert abs(mean - expected) < 4 * error + 1e-3 * fisher, (scale, projection, mean, expected)


@pytest.mark.parametrize("argument, value", [("weighting", "uniform"), ("reduction", "max"), ("eps", 0.0)])
def test_bad_arguments_are_named(mixture, argument, value):
    model = exact_model(mixture, "vp", "epsilon", "discrete")
    with pytest.raises(ValueError, match=f"{argument}.*{value}"):
        denoising_score_matching_loss(model, torch.zeros(2, 1, 1, DIM), model.sde, model.parameterization,
                                      **{argument: value})


def test_importance_sampling_needs_likelihood_weighting(mixture):
    model = exact_model(mixture, "vp", "epsilon", "discrete")
    with pytest.raises(ValueError, match="importance_sampling"):
        denoising_score_matching_loss(model, torch.zeros(2, 1, 1, DIM), model.sde, model.parameterization,
                                      importance_sampling=True)


class _TimeMLP(torch.nn.Module):
    def __init__(self, width=128):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(DIM + 3, width), torch.nn.SiLU(), torch.nn.Linear(width, width),
                                       torch.nn.SiLU(), torch.nn.Linear(width, DIM))

    def forward(self, x, t):
        t = t.to(x.dtype)[:, None]
        return self.net(torch.cat([x, t, torch.sin(2 * math.pi * t), torch.cos(2 * math.pi * t)], 1))


def _weighted_score_error(model, mixture, sde, parameterization, x0, t, noise):
    """E[s^2 ||score_theta - score||^2] on fixed (x0, t, z): the reducible part of the s^2-weighted loss."""
    a, s = (value[:, None] for value in sde.marginal(t))
    x_t = (a * x0 + s * noise).float()
    with torch.no_grad():
        output = model(x_t, parameterization.model_time(t).float()).double()
    learned = parameterization.score(output, x_t.double(), a, s)
    return (s**2 * (learned - mixture.score(x_t, a, s)).pow(2)).sum(1).mean().item()


def test_short_training_lowers_score_error(mixture):
    torch.manual_seed(0)
    sde = make_sde("vp")
    parameterization = Parameterization(sde, "epsilon", "continuous", 1000)
    model = _TimeMLP()
    generator = torch.Generator().manual_seed(0)
    evaluation = torch.Generator().manual_seed(123)
    x_eval = mixture.sample(4096, generator=evaluation)[0]
    t_eval = 1e-3 + (1 - 1e-3) * torch.rand(4096, generator=evaluation, dtype=torch.float64)
    noise_eval = torch.randn(4096, DIM, generator=evaluation, dtype=torch.float64)
    before = _weighted_score_error(model, mixture, sde, parameterization, x_eval, t_eval, noise_eval)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(400):
        x0 = mixture.sample(256, generator=generator)[0].float()
        loss = denoising_score_matching_loss(model, x0, sde, parameterization, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _weighted_score_error(model, mixture, sde, parameterization, x_eval, t_eval, noise_eval)
    assert after < before / 10, (before, after)


# --- discrete SMLD (VE) and DDPM (VP) losses -------------------------------------------------------------------------
DISCRETE_LEVELS = 50
DISCRETE_SETUPS = [("ve", "score", "sigma"), ("ve", "epsilon", "discrete"), ("vp", "epsilon", "discrete"),
                   ("vp", "v_prediction", "continuous")]


def reference_levels(sde_type, num_levels, sigma_min=0.01, sigma_max=50.0, beta_min=0.1, beta_max=20.0):
    """(a_i, s_i) from the original definitions: SMLD's geometric sigmas; DDPM's linear betas and their cumulative
    product (score_sde's ``discrete_betas = linspace(beta_min / N, beta_max / N, N)``)."""
    if sde_type == "ve":
        return np.ones(num_levels), np.geomspace(sigma_min, sigma_max, num_levels)
    alphas_cumprod = np.cumprod(1 - np.linspace(beta_min / num_levels, beta_max / num_levels, num_levels))
    return np.sqrt(alphas_cumprod), np.sqrt(1 - alphas_cumprod)


@pytest.mark.parametrize("sde_type", ["ve", "vp"])
def test_discrete_noise_levels_match_smld_and_ddpm(sde_type):
    t, a, s = discrete_noise_levels(make_sde(sde_type), 1000)
    expected_a, expected_s = reference_levels(sde_type, 1000)
    assert torch.allclose(t, torch.linspace(0, 1, 1000, dtype=torch.float64))
    # DDPMScheduler builds its betas in float32
    assert np.allclose(a.numpy(), expected_a, rtol=1e-12) and np.allclose(s.numpy(), expected_s, rtol=1e-12)
    if sde_type == "vp":  # and DDPM's own 1e-4 .. 0.02 schedule, as diffusers builds it (in float32)
        from diffusers import DDPMScheduler

        alphas_cumprod = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02).alphas_cumprod
        assert torch.allclose(a**2, alphas_cumprod.double(), rtol=1e-5)


def discrete_exact_model(mixture, sde_type, prediction_type, timestep_type, scale=1.0):
    """The exact score of the discrete kernel (a_i, s_i) taken from the reference definitions, in any parameterization;
    the level is recovered from the network's time input."""
    sde = make_sde(sde_type)
    parameterization = Parameterization(sde, prediction_type, timestep_type, DISCRETE_LEVELS)
    a_levels, s_levels = (torch.from_numpy(values) for values in reference_levels(sde_type, DISCRETE_LEVELS))

    def model(sample, timestep):
        t = parameterization.time_from_model_time(timestep.double())
        index = (t * (DISCRETE_LEVELS - 1)).round().long()
        a, s = a_levels[index][:, None], s_levels[index][:, None]
        x = sample.reshape(len(sample), DIM).double()
        score = scale * mixture.score(x, a, s)
        return parameterization.output_from_score(score, x, a, s).reshape(sample.shape).to(sample.dtype)

    model.sde, model.parameterization = sde, parameterization
    return model


def discrete_irreducible_loss(mixture, sde_type):
    """(1 / N) sum_i (D - s_i^2 F(a_i, s_i)): the module docstring's argument, level by level."""
    a_levels, s_levels = reference_levels(sde_type, DISCRETE_LEVELS)
    values = [DIM - s**2 * fisher_information(mixture, a, s) for a, s in zip(a_levels, s_levels)]
    return sum(values) / DISCRETE_LEVELS


def discrete_monte_carlo(model, mixture, samples=20000):
    generator = torch.Generator().manual_seed(0)
    x0 = mixture.sample(samples, generator=generator)[0].reshape(samples, 1, 1, DIM)
    _, per_sample, index = discrete_score_matching_loss(model, x0, model.sde, model.parameterization, reduction="sum",
                                                        generator=generator, return_per_sample=True)
    return per_sample.mean().item(), per_sample.std().item() / math.sqrt(samples), index


@pytest.mark.parametrize("sde_type, prediction_type, timestep_type", DISCRETE_SETUPS)
def test_discrete_exact_score_reaches_irreducible_loss(mixture, sde_type, prediction_type, timestep_type):
    model = discrete_exact_model(mixture, sde_type, prediction_type, timestep_type)
    expected = discrete_irreducible_loss(mixture, sde_type)
    mean, standard_error, index = discrete_monte_carlo(model, mixture)
    assert abs(mean - expected) < 4 * standard_error + 1e-3 * abs(expected), (mean, standard_error, expected)
    # every level is drawn, uniformly
    counts = torch.bincount(index, minlength=DISCRETE_LEVELS)
    assert len(counts) == DISCRETE_LEVELS and counts.min() > 0.8 * len(index) / DISCRETE_LEVELS


@pytest.mark.parametrize("sde_type", ["ve", "vp"])
def test_discrete_wrong_score_costs_more(mixture, sde_type):
    model = discrete_exact_model(mixture, sde_type, "score", "continuous", scale=0.8)
    mean, standard_error, _ = discrete_monte_carlo(model, mixture)
    assert mean > discrete_irreducible_loss(mixture, sde_type) + 4 * standard_error


def test_ddpm_loss_is_epsilon_mse():
    # DDPM's simple loss on the same (i, z): the perturbation as diffusers' DDPMScheduler.add_noise builds it.
    from diffusers import DDPMScheduler

    sde = make_sde("vp")
    parameterization = Parameterization(sde, "epsilon", "discrete", 1000)
    network = torch.nn.Conv2d(1, 1, 3, padding=1).double()
    model = lambda sample, timestep: network(sample) + timestep.reshape(-1, 1, 1, 1) / 1000  # noqa: E731
    x0 = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss, per_sample, index = discrete_score_matching_loss(model, x0, sde, parameterization, generator=torch.Generator().manual_seed(1),
                                                           return_per_sample=True)
    replay = torch.Generator().manual_seed(1)
    torch.rand(16, generator=replay, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=replay, dtype=torch.float64)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    noisy = scheduler.add_noise(x0, noise, index)
    expected = (model(noisy, index.double()) - noise).pow(2).flatten(1).mean(1)
    assert torch.allclose(per_sample, expected, rtol=1e-5), (per_sample, expected)


def test_discrete_loss_rejects_subvp():
    sde = make_sde("subvp")
    with pytest.raises(ValueError, match="sde_type 'subvp'"):
        discrete_score_matching_loss(lambda x, t: x, torch.zeros(2, 1, 1, DIM), sde,
                                     Parameterization(sde, "epsilon", "discrete", 1000))
