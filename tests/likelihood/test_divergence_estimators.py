"""Hutchinson divergence estimators of the likelihood ODE against closed forms: mean, variance, control variate.

With a score linear in x and constant in t, the drift's Jacobian does not depend on x, so a whole solve's estimate is
the quadratic form e^T A e of the known matrix A = int_eps^1 (f I - g^2 B / 2) dt (K probes: their average), whose
mean is tr A and whose variance per probe kind is closed-form.
"""

import math

import pytest
import torch
from likelihood_helpers import bits, exact_pipeline, mixture_log_prob, mixture_samples

from diffusers_sde import ProbabilityFlowODE
from diffusers_sde.sde import VESDE, VPSDE

EPS = 1e-5
TIGHT = dict(rtol=1e-7, atol=1e-7)


def _linear_problem(dim, seed=0):
    """A VE ODE with score(x, t) = x B^T: returns the ODE, x and A = -(s(1)^2 - s(eps)^2) B / 2 (VE: f = 0,
    int g^2 dt = s(1)^2 - s(eps)^2)."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)  # not symmetric
    sde = VESDE(sigma_min=0.01, sigma_max=1.0)
    ode = ProbabilityFlowODE(sde, lambda x, t: (x.flatten(1) @ matrix.T).view_as(x), **TIGHT)
    spread = sde.std(torch.tensor(1.0, dtype=torch.float64)) ** 2 - sde.std(torch.tensor(EPS, dtype=torch.float64)) ** 2
    x = torch.randn(1, dim, generator=generator, dtype=torch.float64)
    return ode, x, -0.5 * spread * matrix


def _closed_form_variance(probe, num_probes, integrated):
    """Variance of the K-probe average of e^T A e, from the symmetric part S of A."""
    dim = integrated.shape[0]
    symmetric = (integrated + integrated.T) / 2
    frobenius = symmetric.pow(2).sum()
    off_diagonal = frobenius - symmetric.diagonal().pow(2).sum()
    if probe == "rademacher":
        return 2 * off_diagonal / num_probes
    if probe == "gaussian":
        return 2 * frobenius / num_probes
    if probe == "hadamard":  # a pair of dimensions is aliased with probability (N / K - 1) / (N - 1)
        order = 1 << (dim - 1).bit_length()
        return 2 * off_diagonal * (order / num_probes - 1) / (order - 1)
    # orthogonal: K Haar-orthogonal probes on the sphere of radius sqrt(D)
    return (2 * dim * (dim - num_probes) / (num_probes * (dim - 1) * (dim + 2))
            * (frobenius - symmetric.trace() ** 2 / dim))


@pytest.mark.parametrize("probe, num_probes, dim", [("rademacher", 1, 8), ("rademacher", 3, 8), ("gaussian", 2, 8),
                                                    ("hadamard", 2, 8), ("hadamard", 4, 6), ("orthogonal", 3, 8)])
def test_estimates_are_unbiased_with_their_closed_form_variance(probe, num_probes, dim):
    ode, x, integrated = _linear_problem(dim)
    copies = 2000  # copies of one point, each with its own probes: one solve gives 2000 independent estimates
    out = ode.log_likelihood(x.expand(copies, -1).contiguous(), eps=EPS, probe=probe, num_probes=num_probes,
                             generator=torch.Generator().manual_seed(1))
    estimates = out.delta_log_prob
    variance = _closed_form_variance(probe, num_probes, integrated)
    assert variance > 0.05  # noisy enough for both checks to have teeth
    assert (estimates.mean() - integrated.trace()).abs() < 4 * math.sqrt(variance / copies)
    # The sample variance's relative standard error is about 5-8% here for every kind.
    assert 0.75 < (estimates.var() / variance).item() < 1.3


@pytest.mark.parametrize("probe", ["hadamard", "orthogonal"])
def test_probes_at_full_dimension_give_the_exact_trace(probe):
    ode, x, integrated = _linear_problem(8)
    out = ode.log_likelihood(x.expand(5, -1).contiguous(), eps=EPS, probe=probe, num_probes=8,
                             generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.delta_log_prob, integrated.trace().expand(5), rtol=1e-6, atol=1e-6)


def test_many_probes_cost_one_network_pass_on_the_batch():
    ode, x, _ = _linear_problem(8)
    rows = []
    score_fn = ode.score_fn
    ode.score_fn = lambda x, t: (rows.append(x.shape[0]), score_fn(x, t))[1]
    batch = x.expand(3, -1).contiguous()
    out = ode.log_likelihood(batch, eps=EPS, num_probes=16, generator=torch.Generator().manual_seed(0))
    assert set(rows) == {3}  # the network never sees copies of the batch for the 16 probes
    assert out.nfe == len(rows)


def _gaussian_problem(dim, seed=0):
    """VP with data N(m, C), C a full covariance: the score -(a^2 C + s^2 I)^-1 (x - a m) is exactly linear."""
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(dim, dim, generator=generator, dtype=torch.float64) * 0.3
    covariance = factor @ factor.T + 0.01 * torch.eye(dim, dtype=torch.float64)
    mean = torch.randn(dim, generator=generator, dtype=torch.float64)
    sde = VPSDE()

    def kernel(t):
        a, s = sde.marginal(torch.as_tensor(t, dtype=torch.float64))
        return a * mean, a**2 * covariance + s**2 * torch.eye(dim, dtype=torch.float64)

    def score(x, t):
        centre, cov = kernel(t)
        return -torch.linalg.solve(cov, (x - centre).T).T

    def log_prob(x, t):
        centre, cov = kernel(t)
        return torch.distributions.MultivariateNormal(centre, cov).log_prob(x)

    x = mean + torch.randn(1, dim, generator=generator, dtype=torch.float64) @ factor.T
    return ProbabilityFlowODE(sde, score, rtol=1e-7, atol=1e-7), x, covariance, log_prob


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_control_variate_of_an_exactly_linear_score_has_zero_variance(probe):
    ode, x, covariance, log_prob = _gaussian_problem(6)
    copies = x.expand(64, -1).contiguous()
    plain = ode.log_likelihood(copies, eps=EPS, probe=probe, generator=torch.Generator().manual_seed(0))
    assert plain.delta_log_prob.std() > 0.1  # without it the probes are noisy
    out = ode.log_likelihood(copies, eps=EPS, probe=probe, control_variate=covariance,
                             generator=torch.Generator().manual_seed(0))
    assert out.delta_log_prob.std() < 1e-6
    # Closed-form truth: log p_eps(x) = log p_1(x_1) + int div v dt with both densities Gaussian.
    reconstructed = log_prob(out.latents, 1.0) + out.delta_log_prob
    torch.testing.assert_close(reconstructed, log_prob(copies, EPS).expand(64), rtol=0, atol=1e-4)


def test_diagonal_and_isotropic_control_variates_stay_unbiased():
    ode, x, integrated = _linear_problem(8)
    copies = x.expand(1000, -1).contiguous()
    for control in (0.3, torch.linspace(0.1, 2.0, 8)):
        out = ode.log_likelihood(copies, eps=EPS, probe="gaussian", control_variate=control,
                                 generator=torch.Generator().manual_seed(3))
        standard_error = out.delta_log_prob.std() / math.sqrt(len(copies))
        assert (out.delta_log_prob.mean() - integrated.trace()).abs() < 4 * standard_error


@pytest.mark.parametrize("probe", ["hadamard", "orthogonal"])
def test_structured_probes_at_full_dimension_match_the_mixture_density(probe):
    pipe, mixture = exact_pipeline("vp")
    x = mixture_samples(mixture, 12, (2, 2, 2))
    out = pipe.log_likelihood(x, eps=EPS, probe=probe, num_probes=8, rtol=1e-6, atol=1e-6,
                              generator=torch.Generator().manual_seed(0))
    truth = -mixture_log_prob(pipe, mixture, x, EPS)
    # 8 such probes in 8-D give the exact divergence: the solver's and the prior's error remain (as for "exact").
    assert bits(out.nll - truth, 8).abs().max() < 0.01


@pytest.mark.parametrize(
    "kwargs, names",
    [
        (dict(probe="hadamard", num_probes=3), ["num_probes=3", "power of two", "8"]),
        (dict(probe="hadamard", num_probes=16), ["num_probes=16", "power of two <= 8"]),
        (dict(probe="orthogonal", num_probes=9), ["num_probes=9", "<= 8"]),
        (dict(control_variate=torch.ones(3)), ["control_variate", "(8,)", "(3,)"]),
        (dict(control_variate=torch.triu(torch.ones(8, 8))), ["control_variate", "not symmetric"]),
        (dict(control_variate=-torch.eye(8)), ["control_variate", "positive semi-definite", "-1"]),
        (dict(control_variate="data"), ["control_variate", "'data'", "(8, 8)"]),
        (dict(control_variate=float("nan")), ["control_variate", "nan"]),
    ],
)
def test_bad_estimator_arguments_are_named(kwargs, names):
    pipe, mixture = exact_pipeline("vp")
    with pytest.raises(ValueError) as error:
        pipe.log_likelihood(mixture_samples(mixture, 2, (2, 2, 2)), **kwargs)
    for name in names:
        assert name in str(error.value)


def test_probes_through_a_unet_at_full_dimension_match_its_exact_divergence():
    # A real UNet2DModel (torch's vmap of its backward fails), one evaluation: 16 Hadamard probes in 16-D give the
    # exact trace, so the K vector-Jacobian products through one forward graph are each right.
    from testing_utils import tiny_unet

    from diffusers_sde import ProbabilityFlowScheduler, score_function
    from diffusers_sde.solvers.probability_flow_ode import _hadamard_probes

    scheduler = ProbabilityFlowScheduler(sde_type="vp")
    ode = ProbabilityFlowODE(scheduler.sde, score_function(tiny_unet(size=4), scheduler))
    x = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    t = torch.tensor(0.5)
    probes = _hadamard_probes(16, 2, (1, 4, 4), torch.Generator().manual_seed(0), x)
    drift, estimate = ode._hutchinson_divergence(probes, None)(x, t)
    exact_drift, exact = ode._exact_divergence(x, t)
    torch.testing.assert_close(drift, exact_drift)
    assert exact.abs().min() > 1  # a divergence well away from 0: the comparison has teeth
    torch.testing.assert_close(estimate, exact, rtol=1e-5, atol=1e-5)
