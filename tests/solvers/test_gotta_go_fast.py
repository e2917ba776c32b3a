"""The "Gotta Go Fast" adaptive reverse-SDE solver, and the pipeline's solver= switch, against closed-form truth."""

import pytest
import torch
from exact_gaussian import gaussian_score, mixture64, mixture_pipeline, single_thread  # noqa: F401 (autouse fixture)

from diffusers_sde import PredictorCorrectorScheduler, VESDE, VPSDE
from diffusers_sde.solvers import MaxNFEExceededError, sample_gotta_go_fast


@pytest.fixture(scope="module")
def mixture():
    return mixture64()


@pytest.mark.parametrize("sde_type", ["ve", "vp", "subvp"])
def test_reproduces_the_mixture_with_the_published_defaults(mixture, sde_type):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type=sde_type))
    out = pipe(batch_size=400, generator=torch.Generator().manual_seed(6), output_type="latent", sampler="gotta_go_fast")
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.04, fidelity
    assert fidelity["mode_weight_error"] < 0.08, fidelity
    assert out.nfe < 1000  # the point of the method: well under the paper's 1000-2000 fixed steps


def test_tighter_tolerance_costs_more_evaluations_and_stays_accurate():
    # Single Gaussian N(0.7, 0.09) in 64 dimensions: the output's variance against the truth, over many samples.
    sde = VPSDE()
    latents = torch.randn(2000, 64, generator=torch.Generator().manual_seed(0))
    results = []
    for rtol in (0.2, 0.05, 0.01):
        sample, nfe = sample_gotta_go_fast(sde, gaussian_score(sde), latents, 1e-3, rtol=rtol,
                                           generator=torch.Generator().manual_seed(1))
        results.append((nfe, abs(sample.double().var().item() / 0.09 - 1)))
    assert results[0][0] < results[1][0] < results[2][0], results
    assert all(error < 0.03 for _, error in results), results


def test_rejected_steps_leave_no_variance_bias():
    # The published algorithm redraws a rejected step's noise, which inflated the variance here by +6.4% (16-D, rtol
    # 0.01, 8000 samples; +1.5-2% in 64-D). Retrying on the same Brownian path removes it: what is left is within
    # four standard errors of the sample variance of exact draws, sqrt(2 / (8000 * 16)) = 0.4% each.
    sde = VPSDE()
    latents = torch.randn(8000, 16, generator=torch.Generator().manual_seed(0))
    sample, _ = sample_gotta_go_fast(sde, gaussian_score(sde), latents, 1e-3, rtol=0.01,
                                     generator=torch.Generator().manual_seed(1))
    a, s = sde.marginal(torch.tensor(1e-3, dtype=torch.float64))
    exact = (a**2 * 0.09**2 / (a**2 * 0.09 + s**2)).item()  # Var of the noise-removed marginal (Tweedie) at eps
    assert abs(sample.double().var().item() / exact - 1) < 4 * (2 / (8000 * 16)) ** 0.5


def test_brownian_paths_reuse_a_rejected_increment():
    # Propose 1.0, reject, retry 0.3 (a bridge point), accept, then 0.7: the accepted pieces tile the first proposal,
    # so they sum to its increment exactly; the bridged piece has variance 0.3 and the rest variance 0.7.
    from diffusers_sde.solvers.gotta_go_fast import _BrownianPaths

    batch, generator = 20000, torch.Generator().manual_seed(0)
    paths = _BrownianPaths(batch, (1,), torch.zeros(1, dtype=torch.float64))
    everyone = torch.arange(batch)

    def propose(step):
        noise = torch.randn(batch, 1, generator=generator, dtype=torch.float64)
        return paths.propose(everyone, torch.full((batch,), step, dtype=torch.float64), noise)

    whole = propose(1.0)
    first = propose(0.3)
    paths.advance(everyone)
    rest = propose(0.7)
    paths.advance(everyone)
    torch.testing.assert_close(first + rest, whole, rtol=0, atol=1e-12)
    for increment, variance in ((whole, 1.0), (first, 0.3), (rest, 0.7)):
        assert abs(increment.var().item() / variance - 1) < 4 * (2 / batch) ** 0.5
    assert abs(torch.corrcoef(torch.stack([first[:, 0], rest[:, 0]]))[0, 1].item()) < 4 / batch**0.5  # independent
    extended = propose(0.5)  # past the known path: fresh noise
    assert abs(extended.var().item() / 0.5 - 1) < 4 * (2 / batch) ** 0.5


def test_step_sizes_are_per_sample():
    # A sample's trajectory, hence its result, depends only on its own noise: shuffling the batch permutes the output.
    sde = VESDE()
    latents = torch.randn(6, 16, generator=torch.Generator().manual_seed(0)) * sde.prior_std
    generators = [torch.Generator().manual_seed(10 + i) for i in range(6)]
    forward, _ = sample_gotta_go_fast(sde, gaussian_score(sde), latents, 1e-5, generator=generators)
    order = [5, 3, 1, 0, 2, 4]
    shuffled_generators = [torch.Generator().manual_seed(10 + i) for i in order]
    shuffled, _ = sample_gotta_go_fast(sde, gaussian_score(sde), latents[order], 1e-5, generator=shuffled_generators)
    torch.testing.assert_close(shuffled, forward[order], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver", ["gotta_go_fast"])  # not "ode": RK45 takes one step size for the whole batch
def test_same_generator_same_sample_at_batch_sizes_1_and_8(mixture, solver):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="subvp"))

    def run(batch_size):
        generators = [torch.Generator().manual_seed(300 + i) for i in range(batch_size)]
        return pipe(batch_size=batch_size, generator=generators, output_type="latent", sampler=solver, rtol=0.05)

    single, batch = run(1), run(8)
    torch.testing.assert_close(batch.images[:1], single.images, rtol=1e-4, atol=1e-4)


def test_ode_solver_reproduces_the_mixture(mixture):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="vp"))
    out = pipe(batch_size=400, generator=torch.Generator().manual_seed(7), output_type="latent", sampler="adaptive_ode",
               rtol=1e-4, atol=1e-4)
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.03, fidelity


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(rtol=0.0), ValueError, "rtol must be a finite number > 0, got 0.0"),
        (dict(atol=-0.01), ValueError, "atol must be a finite number > 0, got -0.01"),
        (dict(max_nfe=20), MaxNFEExceededError, "max_nfe=20"),
        (dict(method="euler"), ValueError, "sampler='gotta_go_fast' chooses its own steps and has no method"),
        (dict(num_inference_steps=10), ValueError, "num_inference_steps=10"),
    ],
)
def test_bad_input(mixture, kwargs, error, fragment):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="ve"))
    with pytest.raises(error) as raised:
        pipe(batch_size=2, output_type="latent", sampler="gotta_go_fast", **kwargs)
    assert fragment in str(raised.value)


def test_step_underflow_names_the_time():
    sde = VPSDE()
    latents = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match=r"min_step=0.005 at t=1\b"):
        sample_gotta_go_fast(sde, gaussian_score(sde), latents, 1e-3, rtol=1e-9, atol=1e-9, min_step=5e-3)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(sampler="rk4"), "sampler must be None or one of ('torchsde', 'gotta_go_fast', 'adaptive_ode'), got 'rk4'"),
        (dict(rtol=1e-3), "only apply with sampler in"),
    ],
)
def test_pipeline_rejects_unknown_solver_and_stray_options(mixture, kwargs, fragment):
    pipe = mixture_pipeline(mixture, PredictorCorrectorScheduler(sde_type="vp"))
    with pytest.raises(ValueError) as raised:
        pipe(batch_size=2, output_type="latent", **kwargs)
    assert fragment in str(raised.value)
