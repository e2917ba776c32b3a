"""ExponentialIntegratorScheduler and EDMHeunScheduler against closed-form truth, for VE, VP and sub-VP."""

import math

import pytest
import torch
from exact_gaussian import (  # noqa: F401 (single_thread is an autouse fixture)
    exact_ode_sample,
    gaussian_score,
    mixture64,
    mixture_pipeline,
    observed_order,
    single_thread,
)

from diffusers_sde import (
    EDMHeunScheduler,
    ExponentialIntegratorScheduler,
    PredictorCorrectorScheduler,
)


SDE_TYPES = ("ve", "vp", "subvp")


@pytest.fixture(scope="module")
def mixture():
    return mixture64()


def _run_scheduler(scheduler, latents, num_steps):
    """The diffusers loop on the exact single-Gaussian score, in float64."""
    score = gaussian_score(scheduler.sde)
    scheduler.set_timesteps(num_steps)
    x = latents
    for t in scheduler.timesteps:
        time = scheduler.parameterization.time_from_model_time(t.double())
        x = scheduler.step(score(x, time), t, x).prev_sample
    return x


def _ode_errors(scheduler, steps):
    latents = torch.randn(32, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    latents = latents * scheduler.sde.prior_std
    exact = exact_ode_sample(scheduler.sde, latents, scheduler.config.sampling_eps)
    return [(_run_scheduler(scheduler, latents, n) - exact).abs().max().item() for n in steps]


@pytest.mark.parametrize("sde_type", SDE_TYPES)
@pytest.mark.parametrize("solver_order", [1, 2, 3])
def test_exponential_integrator_converges_at_its_order(sde_type, solver_order):
    # Unclipped: the clipped grid's last step is first order at a fixed length, so its error does not shrink with N.
    scheduler = ExponentialIntegratorScheduler(sde_type=sde_type, solver_order=solver_order, prediction_type="score",
                                               timestep_type="continuous", lambda_max_clipped=None)
    rates = observed_order(_ode_errors(scheduler, [20, 40, 80]))
    assert rates[-1] > solver_order - 0.25, rates


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_log_snr_grid_is_clipped_where_the_noise_is_negligible(sde_type):
    clipped = ExponentialIntegratorScheduler(sde_type=sde_type)
    unclipped = ExponentialIntegratorScheduler(sde_type=sde_type, lambda_max_clipped=None)
    times, full = clipped._grid_times(20), unclipped._grid_times(20)
    eps = clipped.config.sampling_eps
    if clipped.sde.log_snr(eps).item() <= math.log(100.0):  # VE and VP end below the clip: grid unchanged
        torch.testing.assert_close(times, full, rtol=0, atol=0)
        return
    lam = clipped.sde.log_snr(times)
    expected = torch.linspace(clipped.sde.log_snr(1.0).item(), math.log(100.0), 19, dtype=torch.float64)
    torch.testing.assert_close(lam[:-1], expected, rtol=0, atol=1e-9)
    assert times[-1].item() == eps


def test_clipped_grid_samples_subvp_better_per_evaluation(mixture):
    config = PredictorCorrectorScheduler(sde_type="subvp").config
    errors = []
    for clip in (math.log(100.0), None):
        pipe = mixture_pipeline(mixture, ExponentialIntegratorScheduler.from_config(config, lambda_max_clipped=clip))
        out = pipe(batch_size=800, num_inference_steps=24, generator=torch.Generator().manual_seed(1),
                   output_type="latent")
        errors.append(abs(mixture.fidelity(out.images.flatten(1))["variance_ratio"] - 1))
    assert errors[0] < 0.02 and errors[0] < errors[1] / 2, errors


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_edm_heun_is_second_order(sde_type):
    scheduler = EDMHeunScheduler(sde_type=sde_type, prediction_type="score", timestep_type="continuous")
    rates = observed_order(_ode_errors(scheduler, [20, 40, 80]))
    assert rates[-1] > 1.75, rates


@pytest.mark.parametrize("sde_type", SDE_TYPES)
@pytest.mark.parametrize(
    "make, num_steps",
    [
        (lambda config: ExponentialIntegratorScheduler.from_config(config), 30),
        (lambda config: EDMHeunScheduler.from_config(config), 61),
        (lambda config: EDMHeunScheduler.from_config(config, s_churn=5.0, s_tmin=0.05, s_tmax=5.0), 61),
    ],
    ids=["exponential_integrator", "edm_heun", "edm_heun_churn"],
)
def test_reproduces_the_mixture(mixture, sde_type, make, num_steps):
    scheduler = make(PredictorCorrectorScheduler(sde_type=sde_type).config)
    pipe = mixture_pipeline(mixture, scheduler)
    out = pipe(batch_size=800, num_inference_steps=num_steps, generator=torch.Generator().manual_seed(1),
               output_type="latent")
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.04, fidelity
    assert fidelity["mode_weight_error"] < 0.06, fidelity


def test_churn_evaluates_at_raised_noise_levels():
    plain = EDMHeunScheduler(sde_type="vp")
    churned = EDMHeunScheduler(sde_type="vp", s_churn=10.0)
    plain.set_timesteps(10)
    churned.set_timesteps(10)
    assert len(plain.timesteps) == len(churned.timesteps) == 19
    assert plain.timesteps[0] == churned.timesteps[0]  # the prior sample is not churned
    # Euler evaluations (even entries past the first) sit at sigma_hat > sigma; Heun's corrections stay on the grid.
    assert bool((churned.timesteps[2::2] > plain.timesteps[2::2]).all())
    assert torch.equal(churned.timesteps[1::2], plain.timesteps[1::2])


@pytest.mark.parametrize("make", [lambda: ExponentialIntegratorScheduler(sde_type="ve"),
                                  lambda: EDMHeunScheduler(sde_type="subvp", s_churn=5.0)],
                         ids=["exponential_integrator", "edm_heun_churn"])
def test_same_generator_same_sample_at_batch_sizes_1_and_8(mixture, make):
    pipe = mixture_pipeline(mixture, make())

    def generators(n):
        return [torch.Generator().manual_seed(100 + i) for i in range(n)]

    single = pipe(batch_size=1, num_inference_steps=12, generator=generators(1), output_type="latent").images
    batch = pipe(batch_size=8, num_inference_steps=12, generator=generators(8), output_type="latent").images
    torch.testing.assert_close(batch[:1], single, rtol=1e-5, atol=1e-5)


def test_steps_match_the_timesteps_through_the_pipeline(mixture):
    pipe = mixture_pipeline(mixture, EDMHeunScheduler(sde_type="vp"))
    assert pipe(batch_size=2, num_inference_steps=5, output_type="latent").nfe == 9
    pipe.scheduler = ExponentialIntegratorScheduler.from_config(pipe.scheduler.config)
    assert pipe(batch_size=2, num_inference_steps=5, output_type="latent").nfe == 5


def test_swap_through_from_config_and_compatibles():
    config = PredictorCorrectorScheduler(sde_type="subvp", beta_max=15.0).config
    for cls in (ExponentialIntegratorScheduler, EDMHeunScheduler):
        scheduler = cls.from_config(config)
        assert (scheduler.config.sde_type, scheduler.config.beta_max) == ("subvp", 15.0)
        names = {compatible.__name__ for compatible in scheduler.compatibles}
        assert {"PredictorCorrectorScheduler", "ExponentialIntegratorScheduler", "EDMHeunScheduler"} <= names


@pytest.mark.parametrize(
    "cls, kwargs, fragment",
    [
        (ExponentialIntegratorScheduler, dict(solver_order=4), "solver_order must be one of (1, 2, 3), got 4"),
        (ExponentialIntegratorScheduler, dict(timestep_spacing="linear"), "timestep_spacing must be one of"),
        (ExponentialIntegratorScheduler, dict(sde_type="vp", lambda_max_clipped=-6.0),
         "lambda_max_clipped must be None or exceed the log-SNR at t = 1 (-5.025), got -6.0"),
        (EDMHeunScheduler, dict(rho=0.0), "rho must be > 0, got 0.0"),
        (EDMHeunScheduler, dict(s_churn=-1.0), "s_churn must be >= 0, got -1.0"),
        (EDMHeunScheduler, dict(s_tmin=2.0, s_tmax=1.0), "s_tmax must be >= s_tmin"),
    ],
)
def test_bad_input_names_argument_and_value(cls, kwargs, fragment):
    with pytest.raises(ValueError) as error:
        cls(**kwargs)
    assert fragment in str(error.value)
