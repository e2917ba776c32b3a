"""ER-SDE-Solver against closed-form truth on VE, VP and sub-VP: its weights against the integrals they approximate, its
ODE and reverse-SDE members against our exponential integrator and SDE-DPM-Solver++, the exact probability-flow map
and the exact output moments on a Gaussian (convergence order), the 64-dimensional mixture, and batch invariance."""

import math

import pytest
import torch
from exact_gaussian import (  # noqa: F401 (single_thread is an autouse fixture)
    continuous_scheduler,
    exact_ode_sample,
    exact_output_moments,
    gaussian_score,
    mixture64,
    mixture_pipeline,
    observed_order,
    single_thread,
)

from diffusers_sde import (
    NOISE_SCALE_FUNCTIONS,
    ERSDEScheduler,
    ExponentialIntegratorScheduler,
    PredictorCorrectorScheduler,
    SDEDPMSolverScheduler,
)
from diffusers_sde.schedulers.scheduling_er_sde import er_sde_weights

SDE_TYPES = ("ve", "vp", "subvp")


@pytest.fixture(scope="module")
def mixture():
    return mixture64()


def _run(scheduler, x, seed=1):
    score, generator = gaussian_score(scheduler.sde), torch.Generator().manual_seed(seed)
    for t in scheduler.timesteps:
        time = scheduler.parameterization.time_from_model_time(t.double())
        x = scheduler.step(score(x, time), t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("sigma_u, sigma_t", [(50.0, 0.001), (1.3, 0.9), (0.02, 0.0199)])
def test_weights_match_their_closed_forms_for_the_ode_and_the_reverse_sde(sigma_u, sigma_t):
    # w_1 = (sigma_t - sigma_u) + phi_t int dsigma / phi and
    # w_2 = (sigma_t - sigma_u)^2 / 2 + phi_t int (sigma - sigma_u) / phi dsigma, integrated by hand for phi = sigma
    # and phi = sigma^2, over a whole VE schedule in one step too.
    delta, log_ratio = sigma_t - sigma_u, math.log(sigma_u / sigma_t)
    inverse = 1 / sigma_t - 1 / sigma_u
    closed = {
        "ode": ((1 - sigma_t / sigma_u, delta + sigma_t * log_ratio,
                 delta**2 / 2 + sigma_t * (sigma_u - sigma_t - sigma_u * log_ratio)), sigma_t / sigma_u),
        "reverse_sde": ((1 - (sigma_t / sigma_u) ** 2, delta + sigma_t**2 * inverse,
                         delta**2 / 2 + sigma_t**2 * (log_ratio - sigma_u * inverse)), (sigma_t / sigma_u) ** 2),
    }
    for name, (weights, ratio) in closed.items():
        got_weights, got_ratio = er_sde_weights(NOISE_SCALE_FUNCTIONS[name], sigma_u, sigma_t)
        assert got_ratio == pytest.approx(ratio, rel=1e-12)
        for got, want in zip(got_weights, weights):
            # The higher weights are differences of O(delta^n) terms: compare on the scale of those terms.
            assert abs(got - want) < 1e-11 * max(1.0, abs(delta)) ** 2, (name, got_weights, weights)


@pytest.mark.parametrize("sde_type", SDE_TYPES)
@pytest.mark.parametrize("member, reference", [
    ("ode", lambda sde: continuous_scheduler(ExponentialIntegratorScheduler, sde, solver_order=1)),
    ("reverse_sde", lambda sde: continuous_scheduler(SDEDPMSolverScheduler, sde, solver_order=1)),
])
def test_first_order_members_are_ddim_and_the_sde_posterior_step(sde_type, member, reference):
    # The paper's two limits: phi = sigma is the ODE (its first-order step is DDIM, our exponential integrator's order
    # 1) and phi = sigma^2 the reverse SDE (SDE-DPM-Solver++ 1S, the SDE's own Gaussian posterior), same noise draws.
    scheduler = continuous_scheduler(ERSDEScheduler, sde_type, solver_order=1, noise_scale_function=member)
    other = reference(sde_type)
    scheduler.set_timesteps(12)
    other.set_timesteps(12)
    torch.testing.assert_close(scheduler.timesteps, other.timesteps)
    x = scheduler.init_noise_sigma * torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(_run(scheduler, x), _run(other, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_ode_member_converges_to_the_exact_probability_flow_map_at_order_3(sde_type):
    x = torch.randn(32, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for steps in (20, 40):
        scheduler = continuous_scheduler(ERSDEScheduler, sde_type, noise_scale_function="ode")
        scheduler.set_timesteps(steps)
        latents = scheduler.init_noise_sigma * x if sde_type == "ve" else x
        exact = exact_ode_sample(scheduler.sde, latents, scheduler.config.sampling_eps)
        errors.append((_run(scheduler, latents) - exact).abs().max().item())
    assert observed_order(errors)[0] > 2.8, errors


@pytest.mark.parametrize("sde_type", SDE_TYPES)
@pytest.mark.parametrize("solver_order", [1, 2, 3])
def test_weak_order_on_a_gaussian(sde_type, solver_order):
    # The default member (ER SDE 5) is almost the ODE near the data (d log phi / d log sigma -> 1 as sigma -> 0): the
    # output moments converge at the solver's order, 3 included (SDE-DPM-Solver++ 3M stays at 2).
    errors = [exact_output_moments(continuous_scheduler(ERSDEScheduler, sde_type, solver_order=solver_order), n)
              for n in (40, 80, 160)]
    assert all(abs(mean_error) < 1e-6 for mean_error, _ in errors), errors
    rates = observed_order([abs(variance_error) for _, variance_error in errors])
    assert rates[-1] > solver_order - 0.15, rates


@pytest.mark.parametrize("sde_type", SDE_TYPES)
def test_reproduces_the_mixture(mixture, sde_type):
    scheduler = ERSDEScheduler.from_config(PredictorCorrectorScheduler(sde_type=sde_type).config)
    out = mixture_pipeline(mixture, scheduler)(batch_size=800, num_inference_steps=40,
                                               generator=torch.Generator().manual_seed(1), output_type="latent")
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.03, fidelity
    assert fidelity["mode_weight_error"] < 0.05, fidelity


@pytest.mark.parametrize("sde_type, member", [("ve", "er_sde_5"), ("subvp", "reverse_sde")])
def test_same_generator_same_sample_at_batch_sizes_1_and_8(mixture, sde_type, member):
    pipe = mixture_pipeline(mixture, ERSDEScheduler(sde_type=sde_type, noise_scale_function=member))

    def generators(n):
        return [torch.Generator().manual_seed(100 + i) for i in range(n)]

    single = pipe(batch_size=1, num_inference_steps=12, generator=generators(1), output_type="latent").images
    batch = pipe(batch_size=8, num_inference_steps=12, generator=generators(8), output_type="latent").images
    torch.testing.assert_close(batch[:1], single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(solver_order=4), "solver_order must be one of (1, 2, 3), got 4"),
        (dict(noise_scale_function="sde"), "noise_scale_function must be one of ('ode', 'reverse_sde', 'er_sde_1'"),
        (dict(timestep_spacing="linear"), "timestep_spacing must be one of"),
    ],
)
def test_bad_input_names_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as error:
        ERSDEScheduler(**kwargs)
    assert fragment in str(error.value)


def test_a_noise_scale_function_outside_the_family_on_the_schedule_is_refused():
    # ER SDE 4 (sigma^0.9 log10(1 + 100 sigma^1.5)) grows slower than sigma past sigma ~ 1000: no real noise there.
    ERSDEScheduler(sde_type="ve", sigma_max=50.0, noise_scale_function="er_sde_4").set_timesteps(10)
    scheduler = ERSDEScheduler(sde_type="ve", sigma_max=1e5, noise_scale_function="er_sde_4")
    with pytest.raises(ValueError, match="noise_scale_function='er_sde_4' is not a member of the ER-SDE family"):
        scheduler.set_timesteps(10)
