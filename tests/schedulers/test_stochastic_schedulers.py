"""The stochastic fast samplers against closed-form truth on VE, VP and sub-VP: exact output moments on a Gaussian
(weak order), the 64-dimensional mixture reproduced, and batch invariance with generator lists."""

import math

import pytest
import torch
from exact_gaussian import (  # noqa: F401 (single_thread is an autouse fixture)
    continuous_scheduler,
    exact_output_moments,
    mixture64,
    mixture_pipeline,
    observed_order,
    single_thread,
)

from diffusers_sde import EDMHeunScheduler, PredictorCorrectorScheduler, RestartScheduler, SDEDPMSolverScheduler

SDE_TYPES = ("ve", "vp", "subvp")


@pytest.fixture(scope="module")
def mixture():
    return mixture64()


@pytest.mark.parametrize("sde_type", SDE_TYPES)
@pytest.mark.parametrize("solver_order, weak_order", [(1, 1), (2, 2), (3, 2)])
def test_sde_dpm_solver_weak_order_on_a_gaussian(sde_type, solver_order, weak_order):
    # Weak order 1 for the exact-kernel ancestral step, 2 for the multistep ones: the Brownian increments cap the
    # weak order of a one-noise-draw-per-step scheme at 2, so 3M lowers the constant, not the rate.
    errors = [exact_output_moments(continuous_scheduler(SDEDPMSolverScheduler, sde_type, solver_order=solver_order), n)
              for n in (40, 80, 160)]
    assert all(abs(mean_error) < 1e-6 for mean_error, _ in errors), errors  # Gaussian means are preserved exactly
    rates = observed_order([abs(variance_error) for _, variance_error in errors])
    assert rates[-1] > weak_order - 0.15, rates


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_sde_dpm_solver_first_order_step_is_the_exact_gaussian_posterior(sde_type):
    # For data that is a point mass, x0 is constant and the first-order step is exact: one step from t = 1 to eps
    # returns the exact marginal N(a_eps x0, s_eps^2) whatever the step length.
    scheduler = continuous_scheduler(SDEDPMSolverScheduler, sde_type, solver_order=1)
    scheduler.set_timesteps(2)
    first, point = scheduler.timesteps[0], 0.3
    (a1, s1), (a, s) = (scheduler.sde.marginal(torch.tensor(t, dtype=torch.float64))
                        for t in (1.0, scheduler.config.sampling_eps))
    x = a1 * point + s1 * torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score = -(x - a1 * point) / s1**2
    out = scheduler.step(score, first, x, generator=torch.Generator().manual_seed(1)).prev_sample
    standardized = (out - a * point) / s
    assert abs(standardized.mean().item()) < 4 / math.sqrt(len(x))
    assert abs(standardized.var().item() - 1) < 4 * math.sqrt(2 / len(x))


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_sde_dpm_solver_reproduces_the_mixture(mixture, sde_type):
    scheduler = SDEDPMSolverScheduler.from_config(PredictorCorrectorScheduler(sde_type=sde_type).config)
    out = mixture_pipeline(mixture, scheduler)(batch_size=800, num_inference_steps=60,
                                               generator=torch.Generator().manual_seed(1), output_type="latent")
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.03, fidelity
    assert fidelity["mode_weight_error"] < 0.05, fidelity


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_restart_is_second_order_on_a_gaussian(sde_type):
    # The forward jumps are exact transitions and the backward solves are Heun's: refining the main grid and the
    # restart solves together gives Heun's order 2 in the output moments.
    errors = [exact_output_moments(continuous_scheduler(RestartScheduler, sde_type, restart_intervals=[[n // 6, 2, 0.06, 0.3]]), n)
              for n in (24, 48, 96)]
    assert all(abs(mean_error) < 1e-6 for mean_error, _ in errors), errors
    rates = observed_order([abs(variance_error) for _, variance_error in errors])
    assert rates[-1] > 1.85, rates


def test_restart_plan_costs_what_the_paper_counts():
    # The default: 18 main steps, 2 * 18 - 1 Heun evaluations; each of K = 2 repetitions adds N_restart = 3 Heun steps.
    scheduler = RestartScheduler(sde_type="vp")
    scheduler.set_timesteps()
    assert len(scheduler.timesteps) == 35 + 2 * 2 * 3 and scheduler.num_inference_steps == 18 + 2 * 3
    no_restart = RestartScheduler(sde_type="vp", restart_intervals=[])
    edm = EDMHeunScheduler(sde_type="vp")
    no_restart.set_timesteps(18)
    edm.set_timesteps(18)
    assert torch.equal(no_restart.timesteps, edm.timesteps)  # no interval: EDM's Heun sampler
    # The backward solves start at t_max = 0.3 and return to the main grid's level nearest t_min = 0.06.
    sigmas = [entry.level.s / entry.level.a for entry in scheduler._plan]
    main = [entry.level.s / entry.level.a for entry in edm._plan]
    nearest = min(main[1:], key=lambda sigma: abs(math.log(sigma / 0.06)))
    assert sum(abs(sigma - 0.3) < 1e-9 for sigma in sigmas) == 2
    assert sum(abs(sigma - nearest) < 1e-12 for sigma in sigmas) == sum(abs(sigma - nearest) < 1e-12 for sigma in main) + 2


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_restart_reproduces_the_mixture(mixture, sde_type):
    scheduler = RestartScheduler.from_config(PredictorCorrectorScheduler(sde_type=sde_type).config)
    out = mixture_pipeline(mixture, scheduler)(batch_size=800, num_inference_steps=40,
                                               generator=torch.Generator().manual_seed(1), output_type="latent")
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.04, fidelity
    assert fidelity["mode_weight_error"] < 0.05, fidelity


@pytest.mark.parametrize("make", [lambda: SDEDPMSolverScheduler(sde_type="ve"),
                                  lambda: SDEDPMSolverScheduler(sde_type="subvp", solver_order=2),
                                  lambda: RestartScheduler(sde_type="vp", restart_intervals=[[2, 2, 0.1, 1.0]])],
                         ids=["sde_dpm_solver_3m_ve", "sde_dpm_solver_2m_subvp", "restart_vp"])
def test_same_generator_same_sample_at_batch_sizes_1_and_8(mixture, make):
    pipe = mixture_pipeline(mixture, make())

    def generators(n):
        return [torch.Generator().manual_seed(100 + i) for i in range(n)]

    single = pipe(batch_size=1, num_inference_steps=12, generator=generators(1), output_type="latent").images
    batch = pipe(batch_size=8, num_inference_steps=12, generator=generators(8), output_type="latent").images
    torch.testing.assert_close(batch[:1], single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cls, kwargs, fragment",
    [
        (SDEDPMSolverScheduler, dict(solver_order=0), "solver_order must be one of (1, 2, 3), got 0"),
        (SDEDPMSolverScheduler, dict(timestep_spacing="linear"), "timestep_spacing must be one of"),
        (SDEDPMSolverScheduler, dict(s_noise=-0.5), "s_noise must be >= 0, got -0.5"),
        (RestartScheduler, dict(restart_intervals=[[3, 2, 0.3, 0.06]]),
         "restart_intervals entries must be [N_restart, K, t_min, t_max] with integers N_restart >= 1, K >= 1 and"
         " noise levels 0 < t_min < t_max; got [3, 2, 0.3, 0.06]"),
        (RestartScheduler, dict(restart_intervals=[[0, 2, 0.06, 0.3]]), "got [0, 2, 0.06, 0.3]"),
        (RestartScheduler, dict(restart_intervals=[[3, 2, 0.06]]), "got [3, 2, 0.06]"),
        (RestartScheduler, dict(s_noise=-1.0), "s_noise must be >= 0, got -1.0"),
    ],
)
def test_bad_input_names_argument_and_value(cls, kwargs, fragment):
    with pytest.raises(ValueError) as error:
        cls(**kwargs)
    assert fragment in str(error.value)


def test_restart_without_room_for_its_intervals_samples_without_them(caplog):
    # 7 grid times cannot hold the default interval's 6 restart steps and a main grid of 2: EDM's Heun on 7 times.
    scheduler, edm = RestartScheduler(sde_type="vp"), EDMHeunScheduler(sde_type="vp")
    with caplog.at_level("WARNING"):
        scheduler.set_timesteps(7)
    edm.set_timesteps(7)
    assert torch.equal(scheduler.timesteps, edm.timesteps) and scheduler.num_inference_steps == 7
    assert "num_inference_steps=7 cannot hold the restart intervals" in caplog.text
    scheduler.set_timesteps(8)  # room again: 2 main times + 6 restart steps
    assert len(scheduler.timesteps) == 2 * 8 - 1


def test_restart_interval_below_the_schedule_is_an_error():
    below = RestartScheduler(sde_type="ve", restart_intervals=[[2, 1, 0.001, 0.005]])
    with pytest.raises(ValueError, match="lies below the schedule, which ends at noise level 0.01"):
        below.set_timesteps(10)
