"""ScoreSDEPipeline against the properties of diffusers' PipelineTesterMixin (tests/pipelines/test_pipelines_common.py):
callbacks and num_timesteps, tuple/dict outputs, batch-single identity, progress bars; and what a run may refuse."""

import logging
from unittest import mock

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from testing_utils import MIXTURE_SHAPE, mixture_model, tiny_unet
from diffusers_sde import (
    EDMHeunScheduler,
    ERSDEScheduler,
    ExponentialIntegratorScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    RestartScheduler,
    SDEDPMSolverScheduler,
    ScoreSDEPipeline,
    UniPCScheduler,
)


def make_pipe(scheduler=None, unet=None):
    pipe = ScoreSDEPipeline(unet=unet or tiny_unet(1), scheduler=scheduler or PredictorCorrectorScheduler(sde_type="vp"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_callback_inputs_like_diffusers():
    pipe = make_pipe(PredictorCorrectorScheduler(sde_type="ve", corrector_steps=2))
    assert pipe._callback_tensor_inputs == ["latents"]

    def only_allowed(pipeline, i, t, callback_kwargs):
        assert set(callback_kwargs) <= set(pipeline._callback_tensor_inputs)
        return callback_kwargs

    def zero_last(pipeline, i, t, callback_kwargs):
        if i == pipeline.num_timesteps - 1:
            callback_kwargs["latents"] = torch.zeros_like(callback_kwargs["latents"])
        return callback_kwargs

    pipe(num_inference_steps=3, callback_on_step_end=only_allowed, callback_on_step_end_tensor_inputs=["latents"],
         output_type="latent")
    assert pipe.num_timesteps == 9  # 3 grid times x (2 corrector + 1 predictor) evaluations
    out = pipe(num_inference_steps=3, callback_on_step_end=zero_last, output_type="latent")
    assert out.images.abs().sum() == 0


class _CountSteps(PipelineCallback):
    tensor_inputs = ["latents"]

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        index, ratio = self.config.cutoff_step_index, self.config.cutoff_step_ratio
        cutoff = index if index is not None else int(pipeline.num_timesteps * ratio)  # as diffusers' callbacks do
        if step_index == cutoff:
            callback_kwargs["latents"] = callback_kwargs["latents"] * 0
        return callback_kwargs


def test_diffusers_pipeline_callback_classes_work():
    # PipelineCallback reads pipeline.num_timesteps, as diffusers' own callbacks (SDCFGCutoffCallback ...) do.
    pipe = make_pipe(ProbabilityFlowScheduler(sde_type="vp", integrator="euler"))
    seen = []

    class Record(PipelineCallback):
        tensor_inputs = ["latents"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            seen.append(step_index)
            return callback_kwargs

    both = MultiPipelineCallbacks([Record(cutoff_step_ratio=1.0), _CountSteps(cutoff_step_ratio=1.0)])
    pipe(num_inference_steps=4, callback_on_step_end=both, output_type="latent")
    assert seen == [0, 1, 2, 3]
    # cutoff at the last step zeroes the final sample
    out = pipe(num_inference_steps=4, callback_on_step_end=_CountSteps(cutoff_step_ratio=None, cutoff_step_index=3), output_type="latent")
    assert out.images.abs().sum() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(callback_on_step_end=lambda p, i, t, k: k, callback_on_step_end_tensor_inputs=["prompt_embeds"]),
         r"callback_on_step_end_tensor_inputs has \['prompt_embeds'\]"),
        (dict(callback_on_step_end=lambda p, i, t, k: None), "callback_on_step_end must return a dict.*NoneType at step 0"),
        (dict(callback_on_step_end=lambda p, i, t, k: k, sampler="torchsde"), "sampler='torchsde' chooses its own steps"),
    ],
)
def test_bad_callbacks_get_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_pipe()(num_inference_steps=2, output_type="latent", **kwargs)


def test_interrupt_skips_the_remaining_steps():
    pipe = make_pipe()
    seen = []

    def stop_after_two(pipeline, i, t, callback_kwargs):
        seen.append(i)
        pipeline._interrupt = i >= 1
        return callback_kwargs

    out = pipe(num_inference_steps=5, callback_on_step_end=stop_after_two, output_type="latent")
    assert seen == [0, 1] and out.nfe == 2


def test_dict_and_tuple_outputs_are_equivalent():
    pipe = make_pipe()
    run = lambda **kw: pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                            output_type="np", **kw)
    images, nfe = run(return_dict=False)
    out = run()
    np.testing.assert_array_equal(images, out.images)
    assert nfe == out.nfe == 3


# Every setting docs/core.md lists as batch-invariant; the langevin corrector with batch norms is the one exception.
INVARIANT = [
    PredictorCorrectorScheduler(sde_type="ve", corrector="langevin", langevin_norm="per_sample"),
    PredictorCorrectorScheduler(sde_type="vp", predictor="ancestral", corrector="ald"),
    PredictorCorrectorScheduler(sde_type="subvp", predictor="euler_maruyama", corrector="none"),
    ProbabilityFlowScheduler(sde_type="ve", integrator="heun"),
    ExponentialIntegratorScheduler(sde_type="vp"),
    EDMHeunScheduler(sde_type="ve", s_churn=20.0),
    SDEDPMSolverScheduler(sde_type="ve"),
    SDEDPMSolverScheduler(sde_type="subvp", solver_order=2),
    RestartScheduler(sde_type="vp", restart_intervals=[[2, 2, 0.1, 1.0]]),
    UniPCScheduler(sde_type="ve"),
    ERSDEScheduler(sde_type="subvp"),
]


def _batch_and_alone(mixture, scheduler, **kwargs):
    pipe = make_pipe(scheduler, unet=mixture_model(mixture, scheduler))
    generators = [torch.Generator().manual_seed(100 + i) for i in range(4)]
    batch = pipe(batch_size=4, num_inference_steps=8, generator=generators, output_type="latent", **kwargs).images
    alone = pipe(batch_size=1, num_inference_steps=8, generator=[torch.Generator().manual_seed(102)],
                 output_type="latent", **kwargs).images
    return batch[2], alone[0]


@pytest.mark.parametrize("scheduler", INVARIANT, ids=lambda s: f"{type(s).__name__}-{s.config.sde_type}")
def test_inference_batch_single_identical(mixture, scheduler):
    batch, alone = _batch_and_alone(mixture, scheduler)
    torch.testing.assert_close(alone, batch)


def test_langevin_with_batch_norms_couples_the_batch_as_documented(mixture):
    batch, alone = _batch_and_alone(mixture, PredictorCorrectorScheduler(sde_type="ve"))
    assert (alone - batch).abs().max() > 1e-3


@pytest.mark.parametrize(
    "scheduler, expected_nfe",
    [
        (PredictorCorrectorScheduler(sde_type="vp", num_train_timesteps=40), 40),  # the paper: N steps
        (ProbabilityFlowScheduler(sde_type="vp", integrator="heun"), 99),
        (ProbabilityFlowScheduler(sde_type="vp", integrator="euler"), 100),
        (ExponentialIntegratorScheduler(sde_type="vp"), 20),
        (EDMHeunScheduler(sde_type="vp"), 35),
    ],
)
def test_each_scheduler_has_its_own_default_step_count(scheduler, expected_nfe):
    assert make_pipe(scheduler)(output_type="latent").nfe == expected_nfe


def test_diffusers_schedulers_are_mapped_with_a_message_or_refused(caplog):
    with caplog.at_level(logging.WARNING):
        pipe = ScoreSDEPipeline(unet=tiny_unet(1), scheduler=DDIMScheduler())
    assert isinstance(pipe.scheduler, PredictorCorrectorScheduler) and pipe.scheduler.config.sde_type == "vp"
    assert "DDIMScheduler was mapped to PredictorCorrectorScheduler(sde_type='vp'" in caplog.text
    with pytest.raises(ValueError, match="cannot be mapped"):
        ScoreSDEPipeline(unet=tiny_unet(1), scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear"))
    for scheduler in (DPMSolverMultistepScheduler(), DDPMScheduler()):
        pipe.scheduler = scheduler  # assigned after construction: refused before anything runs
        for call in (lambda: pipe(num_inference_steps=2), lambda: pipe.log_likelihood(torch.rand(1, 1, 8, 8)),
                     lambda: pipe.decode(torch.randn(1, 1, 8, 8))):
            with pytest.raises(ValueError, match=f"needs a diffusers-sde scheduler, got {type(scheduler).__name__}"):
                call()


def test_progress_bars_show_for_schedulers_and_self_stepping_samplers_and_respect_the_config(mixture, capsys):
    scheduler = PredictorCorrectorScheduler(sde_type="vp")
    pipe = ScoreSDEPipeline(unet=mixture_model(mixture, scheduler), scheduler=scheduler)
    pipe(batch_size=2, num_inference_steps=3, output_type="latent")
    assert "3/3" in capsys.readouterr().err
    pipe(batch_size=2, output_type="latent", sampler="adaptive_ode", rtol=1e-3, atol=1e-3)
    err = capsys.readouterr().err
    assert "adaptive_ode" in err and "1000/1000" in err
    pipe.log_likelihood(torch.rand(2, *MIXTURE_SHAPE), rtol=1e-3, atol=1e-3)
    assert "likelihood 1/1" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe(batch_size=2, output_type="latent", sampler="gotta_go_fast", rtol=0.05)
    pipe.encode(torch.rand(2, *MIXTURE_SHAPE), rtol=1e-3, atol=1e-3)
    assert capsys.readouterr().err == ""


def test_self_stepping_samplers_build_no_scheduler_plan(mixture):
    scheduler = EDMHeunScheduler(sde_type="vp", s_churn=10.0)
    pipe = make_pipe(scheduler, unet=mixture_model(mixture, scheduler))
    with mock.patch.object(type(scheduler), "set_timesteps", side_effect=AssertionError("plan built")):
        pipe(batch_size=2, output_type="latent", sampler="adaptive_ode", rtol=1e-3, atol=1e-3)


def test_old_solver_keyword_still_works_with_a_warning(mixture):
    scheduler = PredictorCorrectorScheduler(sde_type="vp")
    pipe = make_pipe(scheduler, unet=mixture_model(mixture, scheduler))
    run = lambda **kw: pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="latent", rtol=1e-3,
                            atol=1e-3, **kw).images
    with pytest.warns(FutureWarning, match=r"now pipe\(sampler='adaptive_ode'\)"):
        old = run(solver="ode")
    torch.testing.assert_close(old, run(sampler="adaptive_ode"))
    with pytest.warns(FutureWarning, match="integrator"):
        assert ProbabilityFlowScheduler(solver="euler").config.integrator == "euler"
    with pytest.warns(FutureWarning, match="'solver' of ProbabilityFlowScheduler is now 'integrator'"):
        config = {**ProbabilityFlowScheduler().config, "solver": "euler"}
        del config["integrator"]
        assert ProbabilityFlowScheduler.from_config(config).config.integrator == "euler"


def test_numpy_and_tensor_numbers_are_numbers():
    pipe = make_pipe()
    assert pipe(batch_size=np.int64(2), num_inference_steps=np.int32(2), output_type="latent").images.shape[0] == 2
    assert pipe(batch_size=torch.tensor(1), num_inference_steps=2, output_type="latent").images.shape[0] == 1
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 2.5"):
        pipe(batch_size=2.5)


def test_a_large_finite_float16_sample_is_not_a_nan_alarm():
    # A sum in float16 overflows for a finite 3 x 256 x 256 sample of values ~1e3; the guard must not call it NaN.
    scheduler = ProbabilityFlowScheduler(sde_type="ve", integrator="euler", prediction_type="score")
    scheduler.set_timesteps(3)
    sample = torch.full((1, 3, 256, 256), 1000.0, dtype=torch.float16)
    out = scheduler.step(torch.zeros_like(sample), scheduler.timesteps[0], sample)  # VE drift 0, score 0: unchanged
    assert torch.equal(out.prev_sample, sample)
    with pytest.raises(FloatingPointError, match="NaN or inf at step 1"):
        scheduler.step(torch.full_like(sample, float("nan")), scheduler.timesteps[1], sample)


def test_torchsde_seeds_are_drawn_on_the_generators_device():
    from diffusers_sde.solvers import reverse_sde_torchsde

    generator = torch.Generator().manual_seed(0)
    with mock.patch.object(reverse_sde_torchsde.torch, "randint", wraps=torch.randint) as randint:
        reverse_sde_torchsde.brownian_motion((2, 4), -1.0, -0.01, generator)
    assert randint.call_args.kwargs["device"] == generator.device  # a CUDA generator draws on CUDA
