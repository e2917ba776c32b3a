"""ExponentialIntegratorScheduler and EDMHeunScheduler against closed-form truth, for VE, VP and sub-VP."""

import math
import warnings

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
    GaussianMixture,
    UniPCScheduler,
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
    # The default grid (sub-VP's tail stretched, every step shrinking as 1 / N) keeps the solver's order.
    scheduler = ExponentialIntegratorScheduler(sde_type=sde_type, solver_order=solver_order, prediction_type="score",
                                               timestep_type="continuous")
    rates = observed_order(_ode_errors(scheduler, [20, 40, 80]))
    assert rates[-1] > solver_order - 0.25, rates


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_log_snr_grid_is_clipped_where_the_noise_is_negligible(sde_type):
    clipped = ExponentialIntegratorScheduler(sde_type=sde_type, lambda_max_clipped=math.log(100.0))
    unclipped = ExponentialIntegratorScheduler(sde_type=sde_type)
    times, full = clipped._grid_times(20), unclipped._grid_times(20)
    eps = clipped.config.sampling_eps
    if clipped.sde.log_snr(eps).item() <= math.log(100.0):  # VE and VP end below the clip and the tail: unchanged
        torch.testing.assert_close(times, full, rtol=0, atol=0)
        return
    lam = clipped.sde.log_snr(times)
    expected = torch.linspace(clipped.sde.log_snr(1.0).item(), math.log(100.0), 19, dtype=torch.float64)
    torch.testing.assert_close(lam[:-1], expected, rtol=0, atol=1e-9)
    assert times[-1].item() == eps


@pytest.mark.parametrize("sde_type", SDE_TYPES)
@pytest.mark.parametrize("solver_order", [1, 2, 3])
@pytest.mark.parametrize("use_corrector", [False, True])
def test_unipc_converges_at_its_order_and_the_corrector_adds_one(sde_type, solver_order, use_corrector):
    # UniP-p is order p; UniC raises it to p + 1 at no extra evaluation (UniPC Thm. 3.1). Order 4 (p = 3 corrected)
    # is approached from below at these sizes (3.65-3.9 from 80 to 160 steps), hence the half-order margin there.
    scheduler = UniPCScheduler(sde_type=sde_type, solver_order=solver_order, use_corrector=use_corrector,
                               prediction_type="score", timestep_type="continuous")
    expected = solver_order + int(use_corrector)
    rates = observed_order(_ode_errors(scheduler, [40, 80, 160]))
    assert rates[-1] > expected - (0.5 if use_corrector else 0.25), rates


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_unipc_begun_mid_schedule_uses_the_history_it_holds(sde_type):
    # Gaussian data N(0, v) with its exact score: the sampler is linear, x_end = K x_begin, so the output variance is
    # K^2 (a^2 v + s^2) exactly (no sampling noise), and the exact ODE returns v. From grid time 6 of 20 the first
    # steps hold one and two points, not the three the plan was built for; with the plan's coefficients the error was
    # 1.8% (VE), 0.5% (VP) and 6.7% (sub-VP).
    variance = 0.25
    scheduler = UniPCScheduler(sde_type=sde_type, prediction_type="score")
    scheduler.set_timesteps(20)
    scheduler.set_begin_index(6)
    start = scheduler.grid_levels[6]
    x = torch.ones(1, 1, dtype=torch.float64)
    for t in scheduler.timesteps[6:]:
        level = scheduler.sample_level
        x = scheduler.step(-x / (level.a**2 * variance + level.s**2), t, x).prev_sample
    assert abs(x.item() ** 2 * (start.a**2 * variance + start.s**2) / variance - 1) < 0.004


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_default_grid_is_uniform_in_log_snr_with_a_stretched_tail(sde_type):
    scheduler = ExponentialIntegratorScheduler(sde_type=sde_type, sampling_eps=1e-5)
    lam = scheduler.sde.log_snr(scheduler._grid_times(40))
    tail = math.log(1000.0)
    if lam[-1].item() <= tail + 1e-6:  # VE and VP at 1e-5 end at noise 1e-3: plain uniform lambda
        torch.testing.assert_close(lam[1:] - lam[:-1], torch.full((39,), (lam[-1] - lam[0]).item() / 39,
                                                                  dtype=torch.float64), rtol=1e-6, atol=1e-9)
        return
    # Past the tail start the grid is uniform in w = c + (1 - e^(-(lambda - c) / 2)) * 2.
    w = torch.where(lam <= tail, lam, tail + 2 * (1 - torch.exp(-(lam - tail) / 2)))
    torch.testing.assert_close(w[1:] - w[:-1], torch.full((39,), (w[-1] - w[0]).item() / 39, dtype=torch.float64),
                               rtol=1e-6, atol=1e-9)
    # Convergent: the longest step (the last) shrinks with every doubling and tends to 0, as 2 log(1 + dw e^(r L) / 2)
    # for a tail of length L (the old clip kept a last step of fixed length).
    longest = [(lambda x: (x[1:] - x[:-1]).max().item())(scheduler.sde.log_snr(scheduler._grid_times(n)))
               for n in (40, 80, 160, 640)]
    assert all(fine < coarse for coarse, fine in zip(longest[:-1], longest[1:])) and longest[-1] < 0.7, longest


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_error_falls_monotonically_with_nfe_where_the_clip_plateaued(sde_type):
    # Component std 0.02-0.15 (the issue-12 regime): the mixture still changes below noise 0.01. Same prior draws at
    # every NFE, so the gap to a 400-step solve is the discretization error alone, free of sampling noise.
    generator = torch.Generator().manual_seed(0)
    stds = 0.02 + 0.13 * torch.rand(3, 64, generator=generator, dtype=torch.float64)
    mixture = GaussianMixture(torch.tensor([0.2, 0.3, 0.5]), torch.randn(3, 64, generator=generator), stds**2)
    config = dict(sde_type=sde_type, sigma_min=0.001, sampling_eps=1e-5, prediction_type="score",
                  timestep_type="continuous")  # VE's sigma_min 0.001 (the issue's): all three end at noise <= 1e-3
    sde = ExponentialIntegratorScheduler(**config).sde
    latents = sde.prior_std * torch.randn(200, 64, generator=generator, dtype=torch.float64)

    def solve(num_steps, **kwargs):
        scheduler = ExponentialIntegratorScheduler(**config, **kwargs)
        scheduler.set_timesteps(num_steps)
        x = latents
        for t in scheduler.timesteps:
            a, s = sde.marginal(scheduler.parameterization.time_from_model_time(t.double()))
            x = scheduler.step(mixture.score(x, a, s), t, x).prev_sample
        return x

    def variance_error(x):
        return abs(mixture.fidelity(x)["variance_ratio"] - reference)

    reference = mixture.fidelity(solve(400))["variance_ratio"]
    errors = [variance_error(solve(n)) for n in (20, 30, 40, 60, 80)]
    assert all(fine < coarse for coarse, fine in zip(errors[:-1], errors[1:])), errors
    clipped = [variance_error(solve(n, lambda_max_clipped=math.log(100.0))) for n in (40, 80)]
    assert clipped[1] > 0.7 * clipped[0] and clipped[1] > 10 * errors[-1], (clipped, errors)


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
        (lambda config: UniPCScheduler.from_config(config), 30),
    ],
    ids=["exponential_integrator", "edm_heun", "edm_heun_churn", "unipc"],
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
        (UniPCScheduler, dict(solver_type="bh3"), "solver_type must be one of ('bh1', 'bh2'), got 'bh3'"),
        (UniPCScheduler, dict(solver_order=4), "solver_order must be one of (1, 2, 3), got 4"),
        (UniPCScheduler, dict(lower_order_final=1), "lower_order_final must be True or False, got 1"),
        (EDMHeunScheduler, dict(s_churn=-1.0), "s_churn must be >= 0, got -1.0"),
        (EDMHeunScheduler, dict(s_tmin=2.0, s_tmax=1.0), "s_tmax must be >= s_tmin"),
    ],
)
def test_bad_input_names_argument_and_value(cls, kwargs, fragment):
    with pytest.raises(ValueError) as error:
        cls(**kwargs)
    assert fragment in str(error.value)


def test_a_saved_clipped_config_loads_with_a_future_warning_naming_the_fix(tmp_path):
    # Configs saved under the old default (lambda_max_clipped = log(100)) keep their clip, and say how to drop it.
    old = ExponentialIntegratorScheduler(sde_type="subvp", lambda_max_clipped=math.log(100.0))
    old.save_pretrained(tmp_path / "old")
    ExponentialIntegratorScheduler(sde_type="subvp").save_pretrained(tmp_path / "new")
    with pytest.warns(FutureWarning) as caught:
        kept = ExponentialIntegratorScheduler.from_pretrained(tmp_path / "old")
    message = str(caught[0].message)
    assert "lambda_max_clipped=4.60517 (log(100), the default before the convergent grid)" in message
    assert "from_pretrained(path, lambda_max_clipped=None)" in message
    assert kept.config.lambda_max_clipped == pytest.approx(math.log(100.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dropped = ExponentialIntegratorScheduler.from_pretrained(tmp_path / "old", lambda_max_clipped=None)
        ExponentialIntegratorScheduler.from_pretrained(tmp_path / "new")
        ExponentialIntegratorScheduler.from_config(kept.config, lambda_max_clipped=math.log(100.0))  # kept on purpose
    assert dropped.config.lambda_max_clipped is None
    default = ExponentialIntegratorScheduler(sde_type="subvp")
    torch.testing.assert_close(dropped._grid_times(20), default._grid_times(20))
