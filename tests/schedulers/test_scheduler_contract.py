"""The diffusers scheduler contract, checked for every diffusers-sde scheduler with the properties diffusers' own suites
check (tests/schedulers/test_schedulers.py SchedulerCommonTest, test_scheduler_heun.py, test_scheduler_euler.py), plus
starting mid-schedule (img2img / SDEdit) against the closed-form mixture."""

import inspect

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from testing_utils import MIXTURE_SHAPE, mixture_model
from diffusers_sde import (
    EDMHeunScheduler,
    ERSDEScheduler,
    ExponentialIntegratorScheduler,
    GaussianMixture,
    NoiseLevel,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    RestartScheduler,
    SDEDPMSolverScheduler,
    UniPCScheduler,
)

# Every scheduler family, on VE and on VP / sub-VP, in settings that exercise repeated timesteps (correctors, Heun)
# and churned levels.
SCHEDULERS = {
    "pc-ve-langevin": lambda: PredictorCorrectorScheduler(sde_type="ve"),
    "pc-vp-ald2": lambda: PredictorCorrectorScheduler(sde_type="vp", predictor="ancestral", corrector="ald",
                                                      corrector_steps=2),
    "pf-ve-heun": lambda: ProbabilityFlowScheduler(sde_type="ve", integrator="heun"),
    "pf-vp-euler": lambda: ProbabilityFlowScheduler(sde_type="vp", integrator="euler"),
    "ei-ve": lambda: ExponentialIntegratorScheduler(sde_type="ve"),
    "ei-subvp": lambda: ExponentialIntegratorScheduler(sde_type="subvp"),
    "edm-ve-churn": lambda: EDMHeunScheduler(sde_type="ve", s_churn=10.0),
    "edm-vp": lambda: EDMHeunScheduler(sde_type="vp"),
    "sde-dpm-ve": lambda: SDEDPMSolverScheduler(sde_type="ve"),
    "sde-dpm-subvp-2m": lambda: SDEDPMSolverScheduler(sde_type="subvp", solver_order=2),
    "restart-ve": lambda: RestartScheduler(sde_type="ve", restart_intervals=[[2, 2, 0.5, 2.0]]),
    "unipc-subvp": lambda: UniPCScheduler(sde_type="subvp"),
    "er-sde-vp": lambda: ERSDEScheduler(sde_type="vp"),
    "er-sde-ve-ode": lambda: ERSDEScheduler(sde_type="ve", noise_scale_function="ode", solver_order=2),
}
NAMES = list(SCHEDULERS)
STEPS = 10


def _sample(seed=0):
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _first_step(scheduler, index=0, seed=0):
    scheduler.set_timesteps(STEPS)
    scheduler.set_begin_index(index)  # unambiguous for every scheduler (a Restart level can start several steps)
    sample = _sample()
    return scheduler.step(0.1 * sample, scheduler.timesteps[index], sample, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_the_same_config_and_steps(name, tmp_path):
    scheduler = SCHEDULERS[name]()
    scheduler.save_pretrained(tmp_path)
    loaded = type(scheduler).from_pretrained(tmp_path)
    config = dict(scheduler.config)
    del config["_use_default_values"]
    assert config == loaded.config
    for index in (0, scheduler.order * 3):
        torch.testing.assert_close(_first_step(scheduler, index).prev_sample, _first_step(loaded, index).prev_sample,
                                   rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_compatibles_swap_back_and_forth(name):
    scheduler = SCHEDULERS[name]()
    families = {type(make()) for make in SCHEDULERS.values()}
    assert len(set(scheduler.compatibles)) == len(scheduler.compatibles) and families <= set(scheduler.compatibles)
    for other_class in scheduler.compatibles:
        other = other_class.from_config(scheduler.config)
        back = type(scheduler).from_config(other.config)
        assert {k: v for k, v in back.config.items() if k in scheduler.config} == dict(scheduler.config)
        assert other.config.sde_type == scheduler.config.sde_type


@pytest.mark.parametrize("name", NAMES)
def test_step_shape_tuple_output_and_public_api(name):
    scheduler = SCHEDULERS[name]()
    output = _first_step(scheduler)
    tuple_output = _first_step(SCHEDULERS[name](), seed=0)
    as_tuple = SCHEDULERS[name]()
    as_tuple.set_timesteps(STEPS)
    sample = _sample()
    prev, prev_mean = as_tuple.step(0.1 * sample, as_tuple.timesteps[0], sample,
                                    generator=torch.Generator().manual_seed(0), return_dict=False)
    assert output.prev_sample.shape == sample.shape and prev.shape == sample.shape
    torch.testing.assert_close(prev, tuple_output.prev_sample)
    torch.testing.assert_close(prev_mean, tuple_output.prev_sample_mean)
    assert scheduler.scale_model_input(sample, scheduler.timesteps[0]) is sample
    assert scheduler.init_noise_sigma == scheduler.sde.prior_std
    # diffusers' rule: **kwargs in __init__ exactly when deprecated kwargs are declared.
    has_kwargs = "kwargs" in inspect.signature(type(scheduler).__init__).parameters
    assert has_kwargs == (len(type(scheduler)._deprecated_kwargs) > 0)


@pytest.mark.parametrize("name", NAMES)
def test_add_noise_with_tensor_timesteps_is_the_forward_marginal(name):
    scheduler = SCHEDULERS[name]()
    scheduler.set_timesteps(STEPS)
    x0, noise = _sample(1), _sample(2)
    assert scheduler.add_noise(x0, noise, scheduler.timesteps[5][None]).shape == x0.shape
    per_sample = scheduler.timesteps[[0, 3, 5, 7]]
    noised = scheduler.add_noise(x0, noise, per_sample)
    t = scheduler.parameterization.time_from_model_time(per_sample.double())
    for i in range(4):
        a, s = scheduler.sde.marginal(t[i])
        torch.testing.assert_close(noised[i], (a * x0[i] + s * noise[i]).float())


@pytest.mark.parametrize("name", NAMES)
def test_order_is_evaluations_per_grid_time_and_time_indices_find_step_starts(name):
    scheduler = SCHEDULERS[name]()
    scheduler.set_timesteps(STEPS)
    assert len(scheduler.timesteps) in (STEPS * scheduler.order, STEPS * scheduler.order - 1)
    for k in range(STEPS):
        index = k * scheduler.order
        if _starts_several_steps(scheduler, index):  # Restart's interval levels: ambiguous, refused
            with pytest.raises(ValueError, match="start the run with set_begin_index"):
                scheduler.index_for_timestep(scheduler.timesteps[index])
            continue
        assert scheduler.index_for_timestep(scheduler.timesteps[index]) == index
    with pytest.raises(ValueError, match="not a step start in scheduler.timesteps"):
        scheduler.index_for_timestep(torch.tensor(-123.0))


def _starts_several_steps(scheduler, index):
    """Whether timesteps[index] is the time of more than one step start (every ``order``-th entry starts a step)."""
    return int((scheduler.timesteps[::scheduler.order] == scheduler.timesteps[index]).sum()) > 1


def _x0_zero_model(scheduler):
    """A network that predicts the clean sample x0 = 0, in the scheduler's own parameterization."""
    mixture = GaussianMixture([1.0], torch.zeros(1, 16, dtype=torch.float64), torch.full((1, 16), 1e-12, dtype=torch.float64))
    return mixture_model(mixture, scheduler)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t_start", [1, 5, STEPS - 2])
@pytest.mark.parametrize("begin_with", ["timestep", "set_begin_index"])
def test_full_loop_started_mid_schedule_ends_with_the_noise_free_step(name, t_start, begin_with):
    # diffusers' img2img pattern (test_full_loop_with_noise): the run must start at the noise level of
    # timesteps[t_start * order] and still finish with the final denoising. With a model whose x0 prediction is 0 the
    # result is 0 (diffusers' EulerDiscreteScheduler ends at 1e-9 here); before the fix, runs re-started from the top.
    scheduler = SCHEDULERS[name]()
    model = _x0_zero_model(scheduler)
    scheduler.set_timesteps(STEPS)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    if begin_with == "set_begin_index":
        scheduler.set_begin_index(t_start * scheduler.order)
    elif _starts_several_steps(scheduler, t_start * scheduler.order):
        pytest.skip("an ambiguous timestep is refused (checked in test_order_is_evaluations_per_grid_time...)")
    x0 = torch.full((2, *MIXTURE_SHAPE), 0.5)
    sample = scheduler.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), timesteps[:1])
    generator = torch.Generator().manual_seed(1)
    for t in timesteps:
        sample = scheduler.step(model(sample, t).sample, t, sample, generator=generator).prev_sample
    assert scheduler.sample_level.t == 0 and scheduler.sample_level.s == 0
    # The Tweedie-ending samplers are exact; the paper's predictors end with their own last mean (x - f dt ...), a
    # few times 1e-4 of the input for VP at t = 1e-3.
    assert sample.abs().max() < 1e-3, sample.abs().max()


def test_the_same_loop_in_diffusers_euler_for_comparison():
    scheduler = EulerDiscreteScheduler(prediction_type="sample")
    scheduler.set_timesteps(STEPS)
    timesteps = scheduler.timesteps[5 * scheduler.order:]
    sample = scheduler.add_noise(torch.full((2, 16), 0.5), torch.randn(2, 16), timesteps[:1])
    for t in timesteps:
        sample = scheduler.step(torch.zeros_like(sample), t, scheduler.scale_model_input(sample, t)).prev_sample
    assert sample.abs().max() < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_prev_level_says_where_each_sample_lies(name):
    scheduler = SCHEDULERS[name]()
    model = _x0_zero_model(scheduler)
    scheduler.set_timesteps(STEPS)
    assert scheduler.step_index is None and scheduler.begin_index is None
    first = scheduler.sample_level
    assert isinstance(first, NoiseLevel) and first.t == pytest.approx(1.0)
    sample = torch.randn(2, *MIXTURE_SHAPE, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    x0, noise = torch.full_like(sample, 0.5), torch.randn_like(sample)
    for i, t in enumerate(scheduler.timesteps):
        level = scheduler.sample_level
        # The level the next step expects is the one its timestep names.
        assert float(scheduler.parameterization.model_time(torch.tensor(level.t, dtype=torch.float64))) == \
            pytest.approx(float(t), rel=1e-5)
        output = scheduler.step(model(sample, t).sample, t, sample, generator=torch.Generator().manual_seed(i))
        sample = output.prev_sample
        assert output.prev_level == scheduler.sample_level and scheduler.step_index == i + 1
        a, s = scheduler.sde.marginal(torch.tensor(output.prev_level.t, dtype=torch.float64))
        if output.prev_level.t > 0:
            assert (output.prev_level.a, output.prev_level.s) == pytest.approx((a.item(), s.item()))
        torch.testing.assert_close(output.prev_level.perturb(x0, noise), output.prev_level.a * x0 + output.prev_level.s * noise)
    assert output.prev_level.t == 0 and output.prev_level.s == 0


@pytest.mark.parametrize("name", NAMES)
def test_bad_begin_index_and_steps_past_the_end(name):
    scheduler = SCHEDULERS[name]()
    with pytest.raises(RuntimeError, match="set_timesteps"):
        scheduler.set_begin_index(0)
    scheduler.set_timesteps(STEPS)
    with pytest.raises(ValueError, match="begin_index must"):
        scheduler.set_begin_index(len(scheduler.timesteps))
    if scheduler.order == 2 and not isinstance(scheduler, PredictorCorrectorScheduler):  # Heun: odd = correction
        with pytest.raises(ValueError, match="begin_index must index an evaluation that starts a step"):
            scheduler.set_begin_index(3)
    scheduler.set_begin_index((STEPS - 1) * scheduler.order)
    sample = torch.randn(1, *MIXTURE_SHAPE, generator=torch.Generator().manual_seed(0))
    model = _x0_zero_model(scheduler)
    for t in scheduler.timesteps[(STEPS - 1) * scheduler.order:]:
        sample = scheduler.step(model(sample, t).sample, t, sample).prev_sample
    with pytest.raises(RuntimeError, match="after the last"):
        scheduler.step(sample, scheduler.timesteps[-1], sample)


# --- SDEdit on the closed-form mixture: forward-noise exact samples, run the rest, get the mixture back ---------------
SDEDIT = {
    "pc": (lambda sde: PredictorCorrectorScheduler(sde_type=sde, corrector="none"), 1000),
    "pc-langevin": (lambda sde: PredictorCorrectorScheduler(sde_type=sde, corrector="langevin", snr=0.16 if sde == "ve" else 0.01), 500),
    "pf-heun": (lambda sde: ProbabilityFlowScheduler(sde_type=sde, integrator="heun"), 100),
    "ei": (lambda sde: ExponentialIntegratorScheduler(sde_type=sde), 50),
    "edm": (lambda sde: EDMHeunScheduler(sde_type=sde), 100),
    "edm-churn": (lambda sde: EDMHeunScheduler(sde_type=sde, s_churn=10.0), 200),
    "sde-dpm": (lambda sde: SDEDPMSolverScheduler(sde_type=sde), 100),
    "restart": (lambda sde: RestartScheduler(sde_type=sde), 100),
    "unipc": (lambda sde: UniPCScheduler(sde_type=sde), 50),
    "er-sde": (lambda sde: ERSDEScheduler(sde_type=sde), 50),
}


@pytest.mark.parametrize("family", list(SDEDIT))
@pytest.mark.parametrize("sde_type", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("strength", [0.3, 0.7])
def test_sdedit_from_exact_samples_preserves_the_mixture(mixture, family, sde_type, strength):
    make, steps = SDEDIT[family]
    scheduler = make(sde_type)
    model = mixture_model(mixture, scheduler)
    generator = torch.Generator().manual_seed(3)
    x0, _ = mixture.sample(2000, generator)
    x0 = x0.float().view(-1, *MIXTURE_SHAPE)
    scheduler.set_timesteps(steps)
    t_start = int(round((1 - strength) * steps))  # diffusers' strength: the share of the schedule that is run
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    scheduler.set_begin_index(t_start * scheduler.order)
    sample = scheduler.add_noise(x0, torch.randn(x0.shape, generator=generator), timesteps[:1])
    for t in timesteps:
        sample = scheduler.step(model(sample, t).sample, t, sample, generator=generator).prev_sample
    fidelity = mixture.fidelity(sample.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.05, fidelity
    assert fidelity["mode_weight_error"] < 0.05, fidelity


def test_sdedit_check_is_not_vacuous(mixture):
    # Starting from the data level instead of the noised one (the bug of a step that ignores its timestep) fails it.
    scheduler = ProbabilityFlowScheduler(sde_type="vp")
    model = mixture_model(mixture, scheduler)
    x0, _ = mixture.sample(2000, torch.Generator().manual_seed(3))
    sample = x0.float().view(-1, *MIXTURE_SHAPE)
    scheduler.set_timesteps(100)
    for t in scheduler.timesteps[:100]:  # the top half of the schedule, applied to clean data
        sample = scheduler.step(model(sample, t).sample, t, sample).prev_sample
    assert abs(mixture.fidelity(sample.flatten(1))["variance_ratio"] - 1) > 0.05


@pytest.mark.parametrize("name", NAMES)
def test_step_reads_nothing_back_from_the_device(name, monkeypatch):
    # GPU readiness, checked on the CPU: apart from the NaN guard (whose CPU branch reads its flag at once and whose
    # accelerator branch reads all flags once, at the last step) and the first step's lookup of its timestep (which
    # set_begin_index avoids), a step never moves a value to the host, so it never waits on the device. Every
    # tensor-to-host conversion raises while the steps run.
    scheduler = SCHEDULERS[name]()
    scheduler.set_timesteps(STEPS)
    scheduler.set_begin_index(0)
    monkeypatch.setattr(scheduler, "_check_finite", lambda sample, entry: None)
    sample = _sample()
    outputs = [0.1 * sample for _ in scheduler.timesteps]
    generator = torch.Generator().manual_seed(0)

    def refuse(*args, **kwargs):
        raise AssertionError("a step read a tensor back to the host")

    with monkeypatch.context() as patch:
        for method in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__"):
            patch.setattr(torch.Tensor, method, refuse)
        for output, t in zip(outputs, scheduler.timesteps):
            sample = scheduler.step(output, t, sample, generator=generator).prev_sample
    assert scheduler.sample_level.s == 0 and torch.isfinite(sample).all()
