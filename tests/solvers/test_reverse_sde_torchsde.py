"""The torchsde backend: the reverse SDE of VE, VP and sub-VP via torchsde.sdeint, against closed-form truth."""

import pytest
import torch
from exact_gaussian import (  # noqa: F401 (single_thread is an autouse fixture)
    gaussian_score,
    mixture64,
    mixture_pipeline,
    observed_order,
    single_thread,
)

from diffusers_sde import PredictorCorrectorScheduler, VPSDE
from diffusers_sde.solvers import MaxNFEExceededError, brownian_motion, sample_reverse_sde


@pytest.fixture(scope="module")
def mixture():
    return mixture64()


@pytest.mark.parametrize("sde_type", ["ve", "vp", "subvp"])
def test_reproduces_the_mixture(mixture, sde_type):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type=sde_type))
    out = pipe(batch_size=600, num_inference_steps=200, generator=torch.Generator().manual_seed(3),
               output_type="latent", sampler="torchsde")
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.04, fidelity
    assert fidelity["mode_weight_error"] < 0.07, fidelity


@pytest.mark.parametrize("method", ["milstein", "heun", "midpoint", "srk"])
def test_every_method_samples_the_mixture(mixture, method):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="vp"))
    out = pipe(batch_size=400, num_inference_steps=40 if method == "srk" else 100,
               generator=torch.Generator().manual_seed(4), output_type="latent", sampler="torchsde", method=method)
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.05, fidelity
    assert fidelity["mode_weight_error"] < 0.08, fidelity


def test_adaptive_steps_sample_the_mixture(mixture):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="subvp"))
    out = pipe(batch_size=400, generator=torch.Generator().manual_seed(5), output_type="latent", sampler="torchsde",
               method="heun", rtol=0.02, atol=0.02)
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.05, fidelity


@pytest.fixture(scope="module")
def shared_path():
    """Single-Gaussian data under VP, one Brownian path (with the space-time Levy area SRK needs; Euler ignores it),
    and a fine SRK solve on it as the reference."""
    sde, eps = VPSDE(), 1e-3
    latents = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    path = brownian_motion(latents.shape, -1.0, -eps, torch.Generator().manual_seed(1), dtype=torch.float64,
                           levy_area_approximation="space-time")

    def solve(method, num_steps):
        return sample_reverse_sde(sde, gaussian_score(sde), latents, eps, method=method, num_steps=num_steps,
                                  brownian=path)[0]

    return solve, solve("srk", 512)


@pytest.mark.parametrize("method, order", [("euler", 1.0), ("srk", 1.5)])
def test_strong_error_falls_at_the_method_order(shared_path, method, order):
    # Additive noise (g does not depend on x): Euler-Maruyama has strong order 1, SRK 1.5.
    solve, reference = shared_path
    errors = [(solve(method, n) - reference).pow(2).mean().sqrt().item() for n in (16, 32, 64)]
    rates = observed_order(errors)
    assert min(rates) > order - 0.35, (errors, rates)


@pytest.mark.parametrize("method", ["euler", "srk"])
def test_same_generator_same_sample_at_batch_sizes_1_and_8(mixture, method):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="ve"))

    def run(batch_size):
        generators = [torch.Generator().manual_seed(200 + i) for i in range(batch_size)]
        return pipe(batch_size=batch_size, num_inference_steps=20, generator=generators, output_type="latent",
                    sampler="torchsde", method=method).images

    torch.testing.assert_close(run(8)[:1], run(1), rtol=1e-5, atol=1e-4)


def test_one_generator_is_reproducible(mixture):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="vp"))

    def run(seed):
        return pipe(batch_size=4, num_inference_steps=10, generator=torch.Generator().manual_seed(seed),
                    output_type="latent", sampler="torchsde").images

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(method="rk4"), ValueError, "method must be one of ('euler', 'milstein', 'srk', 'heun', 'midpoint')"),
        (dict(rtol=0.0), ValueError, "rtol must be a finite number > 0, got 0.0"),
        (dict(atol=-1e-3), ValueError, "atol must be a finite number > 0, got -0.001"),
        (dict(num_inference_steps=0), ValueError, "num_inference_steps must be an integer >= 1, got 0"),
        (dict(num_inference_steps=50, max_nfe=10), MaxNFEExceededError, "max_nfe=10"),
    ],
)
def test_bad_input(mixture, kwargs, error, fragment):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="vp"))
    with pytest.raises(error) as raised:
        pipe(batch_size=2, output_type="latent", sampler="torchsde", **kwargs)
    assert fragment in str(raised.value)
