"""Probability-flow ODE likelihood against the closed-form Gaussian-mixture density."""

import math
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from likelihood_helpers import SDE_TYPES, mixture_log_prob, bits, exact_pipeline, mixture_samples, unit_mixture

from diffusers_sde import GaussianMixture, MaxNFEExceededError, ProbabilityFlowODE, score_function

EPS = 1e-5
TOL = dict(rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_exact_divergence_ode_term_matches_analytic_density(sde_type):
    """log p_eps(x) = log p_1(x_1) + int div v dt holds with the true p_1: isolates the solver and the divergence."""
    pipe, mixture = exact_pipeline(sde_type)
    x = mixture_samples(mixture, 12, (2, 2, 2))
    ode = ProbabilityFlowODE(pipe.scheduler.sde, score_function(pipe.unet, pipe.scheduler), **TOL)
    out = ode.log_likelihood(x, eps=EPS, divergence="exact")
    reconstructed = mixture_log_prob(pipe, mixture, out.latents, 1.0) + out.delta_log_prob
    truth = mixture_log_prob(pipe, mixture, x, EPS)
    assert bits(reconstructed - truth, 8).abs().max() < 1e-3
    torch.testing.assert_close(out.prior_log_prob, pipe.scheduler.sde.prior_log_prob(out.latents))


# VE's prior N(0, sigma_max^2) misses p_1 by ~ x_1 . mu / sigma_max^2 per sample: data in [0, 1] need a sigma_max
# well above the data's scale (the paper picks it from the data's pairwise distances) for 0.01 bits/dim.
PIPELINE_CASES = [("ve", dict(sigma_max=378.0)), ("vp", {}), ("subvp", {})]


@pytest.mark.parametrize("sde_type, sde_config", PIPELINE_CASES)
def test_exact_divergence_nll_matches_analytic_density(sde_type, sde_config):
    pipe, mixture = exact_pipeline(sde_type, **sde_config)
    x = mixture_samples(mixture, 12, (2, 2, 2))
    out = pipe.log_likelihood(x, divergence="exact", eps=EPS, **TOL)
    truth = -mixture_log_prob(pipe, mixture, x, EPS)
    dim = x[0].numel()
    assert torch.all(out.dequantization_nll == 0)  # a tensor in range is a continuous density: no offset
    torch.testing.assert_close(out.nll, out.prior_nll + out.ode_nll)
    assert (bits(out.nll, dim) - bits(truth, dim)).abs().max() < 0.01
    torch.testing.assert_close(out.bits_per_dim, bits(out.nll, dim))
    assert out.nfe > 0


@pytest.mark.parametrize("sde_type, probe", [("ve", "rademacher"), ("vp", "rademacher"), ("subvp", "gaussian")])
def test_hutchinson_estimate_is_unbiased(sde_type, probe):
    pipe, mixture = exact_pipeline(sde_type)
    x = mixture_samples(mixture, 1, (2, 2, 2), seed=3)
    ode = ProbabilityFlowODE(pipe.scheduler.sde, score_function(pipe.unet, pipe.scheduler), **TOL)
    exact = ode.log_likelihood(x, eps=EPS, divergence="exact").delta_log_prob
    # 400 independent probes: copies of one point, so one solve gives 400 single-probe estimates.
    copies = x.expand(400, -1, -1, -1).contiguous()
    generator = torch.Generator().manual_seed(0)
    estimates = ode.log_likelihood(copies, eps=EPS, probe=probe, generator=generator).delta_log_prob
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert estimates.std() > 0.05  # the estimator is noisy here, so the check below has teeth
    assert (estimates.mean() - exact).abs() < 4 * standard_error + 1e-3


def test_more_probes_average_the_estimates():
    pipe, mixture = exact_pipeline("vp")
    x = mixture_samples(mixture, 1, (2, 2, 2), seed=3).expand(200, -1, -1, -1).contiguous()
    ode = ProbabilityFlowODE(pipe.scheduler.sde, score_function(pipe.unet, pipe.scheduler))
    single = ode.log_likelihood(x, eps=EPS, generator=torch.Generator().manual_seed(0)).delta_log_prob
    four = ode.log_likelihood(x, eps=EPS, num_probes=4, generator=torch.Generator().manual_seed(1)).delta_log_prob
    ratio = four.var() / single.var()  # 1/4 in expectation
    assert 0.15 < ratio < 0.4


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_encode_then_decode_recovers_the_input(sde_type):
    pipe, mixture = exact_pipeline(sde_type)
    x = mixture_samples(mixture, 8, (2, 2, 2))
    tolerance = dict(rtol=1e-7, atol=1e-7)
    encoded = pipe.encode(x, **tolerance)
    assert encoded.latents.std() > 0.5 * pipe.scheduler.sde.prior_std  # the latents really are prior-scaled
    decoded = pipe.decode(encoded.latents, output_type="latent", **tolerance)
    assert (decoded.images - x).abs().max() < 1e-4
    assert encoded.nfe > 0 and decoded.nfe > 0


@pytest.mark.parametrize("data_centered", [False, True])
def test_integer_images_get_the_dequantization_bound(data_centered):
    """For uint8 pixels, -log P(pixels) ~ -log p_unit(centre) + D log 256 whatever range the model works in."""
    pipe, mixture = exact_pipeline("vp", channels=1, size=2, data_centered=data_centered)
    low, high = (-1.0, 1.0) if data_centered else (0.0, 1.0)
    unit_samples = (mixture_samples(mixture, 4, (1, 2, 2)) - low) / (high - low)
    pixels = (unit_samples * 256).floor().clamp(0, 255).to(torch.uint8)
    copies = 48  # independent dequantizations of each image, in one batch
    images = pixels.permute(0, 2, 3, 1).numpy().repeat(copies, axis=0)  # (B, H, W, C) uint8
    out = pipe.log_likelihood(images, divergence="exact", generator=torch.Generator().manual_seed(0), eps=EPS)
    dim = 4
    estimates = bits(out.nll, dim).view(4, copies)
    # Independent truth: the unit-cube density at the pixel centres; a cell is ~1/10 of a component's std wide, so
    # E_U[-log p] differs from it by a curvature term far below the tolerance.
    centres = low + (high - low) * (pixels.double() + 0.5) / 256
    unit_log_density = mixture_log_prob(pipe, mixture, centres, EPS) + dim * math.log(high - low)
    expected = bits(-unit_log_density + dim * math.log(256), dim)
    standard_error = estimates.std(1) / math.sqrt(copies)
    assert ((estimates.mean(1) - expected).abs() < 4 * standard_error + 0.005).all()
    assert (out.bits_per_dim > 0).all()
    # The correction is D (log 256 - log(high - low)): 8 bits/dim on [0, 1], 7 on [-1, 1].
    torch.testing.assert_close(bits(out.dequantization_nll, dim), torch.full((4 * copies,), 8.0 - math.log2(high - low),
                                                                              dtype=torch.float64))


def _expected_gaussian_nll(mean, variance, low_edges, high_edges):
    """E_U[-log N(y; mean, variance)] for y uniform on the boxes [low_edges, high_edges), summed over dimensions."""
    # E[(y - m)^2] for y ~ U[a, b) is ((b - m)^3 - (a - m)^3) / (3 (b - a)).
    second_moment = ((high_edges - mean) ** 3 - (low_edges - mean) ** 3) / (3 * (high_edges - low_edges))
    return (0.5 * torch.log(2 * math.pi * variance) + second_moment / (2 * variance)).sum(-1)


@pytest.mark.parametrize("num_levels, data_centered", [(17, True), (4, False)])
def test_k_level_dequantization_bound_matches_the_gaussian_in_closed_form(num_levels, data_centered):
    """For integer values 0..k-1 under a single Gaussian, E_U[-log p(y)] - D log(high - low) + D log k is exact."""
    generator = torch.Generator().manual_seed(2)
    unit = GaussianMixture(torch.ones(1, dtype=torch.float64), 0.3 + 0.4 * torch.rand(1, 4, generator=generator,
                           dtype=torch.float64), torch.full((1, 4), 0.15**2, dtype=torch.float64))
    pipe, gaussian = exact_pipeline("vp", channels=1, size=2, data_centered=data_centered, unit=unit)
    low, high = (-1.0, 1.0) if data_centered else (0.0, 1.0)
    values = (unit.sample(3, generator=generator)[0] * num_levels).floor().clamp(0, num_levels - 1)
    copies = 48  # independent dequantizations of each image, in one batch
    pixels = values.to(torch.uint8).view(3, 1, 2, 2).repeat_interleave(copies, 0)
    out = pipe.log_likelihood(pixels, divergence="exact", generator=torch.Generator().manual_seed(0), eps=EPS,
                              num_levels=num_levels)
    dim = 4
    # Independent truth: the cell of value k is [low + (high - low) k / K, low + (high - low) (k + 1) / K) per
    # dimension, and p_eps is the Gaussian N(a mu, a^2 sigma^2 + s^2) at the data time.
    a, s = pipe.scheduler.sde.marginal(torch.tensor(EPS, dtype=torch.float64))
    width = (high - low) / num_levels
    expected_nats = _expected_gaussian_nll(a * gaussian.means[0], a**2 * gaussian.variances[0] + s**2,
                                           low + width * values, low + width * (values + 1))
    expected_nats += dim * (math.log(num_levels) - math.log(high - low))
    estimates = bits(out.nll, dim).view(3, copies)
    standard_error = estimates.std(1) / math.sqrt(copies)
    assert ((estimates.mean(1) - bits(expected_nats, dim)).abs() < 4 * standard_error + 0.005).all()
    # Reading the values at 256 levels would move the figure by log2(256 / k) >= 4 bits/dim: the check has teeth.
    assert standard_error.max() < 0.25
    torch.testing.assert_close(bits(out.dequantization_nll, dim),
                               torch.full((3 * copies,), math.log2(num_levels) - math.log2(high - low),
                                          dtype=torch.float64))


@pytest.mark.parametrize(
    "num_levels, names",
    [(1, ["num_levels", ">= 2", "1"]), (16.5, ["num_levels", "16.5"]), (True, ["num_levels", "True"]),
     (8, ["num_levels=8", "maximum value of 12", "at least 13"])],
)
def test_bad_num_levels_are_named(num_levels, names):
    pipe, _ = exact_pipeline("vp", channels=1, size=2)
    pixels = torch.tensor([[[[0, 3], [12, 7]]]], dtype=torch.uint8)
    with pytest.raises(ValueError) as error:
        pipe.log_likelihood(pixels, num_levels=num_levels)
    for name in names:
        assert name in str(error.value)


def test_num_levels_with_a_floating_tensor_is_an_error():
    pipe, mixture = exact_pipeline("vp", channels=1, size=2)
    with pytest.raises(ValueError, match=r"num_levels=17 only applies to integer images"):
        pipe.log_likelihood(mixture_samples(mixture, 2, (1, 2, 2)), num_levels=17)


def test_pil_images_are_scored_like_the_same_uint8_array_and_repeats_average():
    pipe, mixture = exact_pipeline("ve", channels=1, size=2)
    pixels = (mixture_samples(mixture, 3, (1, 2, 2)) * 256).floor().clamp(0, 255).to(torch.uint8)
    array = pixels.permute(0, 2, 3, 1).numpy()
    pil = [PIL.Image.fromarray(a[..., 0], mode="L") for a in array]
    kwargs = dict(divergence="exact", eps=EPS)
    from_array = pipe.log_likelihood(array, generator=torch.Generator().manual_seed(5), **kwargs)
    from_pil = pipe.log_likelihood(pil, generator=torch.Generator().manual_seed(5), **kwargs)
    torch.testing.assert_close(from_pil.nll, from_array.nll)
    # num_repeats averages successive dequantizations drawn from the one generator.
    generator = torch.Generator().manual_seed(7)
    singles = [pipe.log_likelihood(array, generator=generator, **kwargs) for _ in range(2)]
    repeated = pipe.log_likelihood(array, generator=torch.Generator().manual_seed(7), num_repeats=2, **kwargs)
    torch.testing.assert_close(repeated.nll, (singles[0].nll + singles[1].nll) / 2)
    assert repeated.nfe == singles[0].nfe + singles[1].nfe


@pytest.mark.parametrize(
    "kwargs, names",
    [
        (dict(rtol=0.0), ["rtol", "0.0"]),
        (dict(atol=-1e-5), ["atol", "-1e-05"]),
        (dict(eps=0.0), ["eps", "0.0"]),
        (dict(num_probes=0), ["num_probes", "0"]),
        (dict(num_repeats=0), ["num_repeats", "0"]),
        (dict(divergence="trace"), ["divergence", "'trace'", "exact"]),
        (dict(probe="uniform"), ["probe", "'uniform'", "rademacher"]),
        (dict(method="euler"), ["method", "'euler'", "dopri5"]),
        (dict(max_nfe=0), ["max_nfe", "0"]),
    ],
)
def test_bad_arguments_are_named(kwargs, names):
    pipe, mixture = exact_pipeline("ve")
    x = mixture_samples(mixture, 2, (2, 2, 2))
    with pytest.raises(ValueError) as error:
        pipe.log_likelihood(x, **kwargs)
    for name in names:
        assert name in str(error.value)


def test_data_outside_the_image_range_is_scored_as_is():
    # The density is defined everywhere: latent or non-image data outside [0, 1] gets its exact likelihood, no error.
    unit = unit_mixture(2, 2)
    shifted = GaussianMixture(unit.weights, unit.means * 3 - 1.6, unit.variances * 9)  # means in [-0.7, 0.5]
    pipe, mixture = exact_pipeline("vp", data_centered=False, unit=shifted)
    x = mixture_samples(mixture, 6, (2, 2, 2))
    assert x.min() < -0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # near the image range: no warning either
        out = pipe.log_likelihood(x, divergence="exact", eps=EPS, **TOL)
    truth = -mixture_log_prob(pipe, mixture, x, EPS)
    assert (bits(out.nll, 8) - bits(truth, 8)).abs().max() < 0.01
    assert torch.all(out.dequantization_nll == 0)


def test_pixel_valued_floats_warn_and_bad_inputs_are_refused():
    pipe, mixture = exact_pipeline("ve")  # data in [0, 1]
    x = mixture_samples(mixture, 2, (2, 2, 2)) * 255
    with pytest.warns(UserWarning, match=r"outside the image range \[0, 1\].*uint8"):
        pipe.encode(x, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"images .*uint8"):
        pipe.log_likelihood(np.zeros((2, 2, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape .*\(2, 2, 2\)"):
        pipe.log_likelihood(torch.zeros(2, 1, 2, 2))


def test_max_nfe_guard_stops_the_solve():
    pipe, mixture = exact_pipeline("vp")
    with pytest.raises(MaxNFEExceededError, match="max_nfe=5"):
        pipe.log_likelihood(mixture_samples(mixture, 2, (2, 2, 2)), max_nfe=5)
