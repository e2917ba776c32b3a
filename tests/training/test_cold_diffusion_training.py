"""Training a Cold Diffusion restoration network (``train --degradation``): the L1 loss, the saved pipeline, resumption
and the errors, through the same loop as score training."""

import os

import pytest
import torch

from diffusers_sde import ColdDiffusionPipeline, FadeDegradation, MaskDegradation
from diffusers_sde.cli import build_parser
from diffusers_sde.training import TrainingConfig, cold_diffusion_loss, list_checkpoints, train
from diffusers_sde.training import trainer as trainer_module
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split


def _config(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), max_steps=4, batch_size=8, learning_rate=1e-3, warmup_steps=2,
                  checkpointing_steps=2, log_every=0, checkpoints_total_limit=3, model_preset="digits-mini",
                  degradation="blur", degradation_steps=4, blur_kernel_size=3)
    values.update(overrides)
    return TrainingConfig(**values)


def _weights(pipeline):
    return {name: value.clone() for name, value in pipeline.unet.state_dict().items()}


class _Recorder:
    """R(x_t, t) = x_t, remembering what it was fed."""

    def __call__(self, sample, timestep):
        self.sample, self.timestep = sample.clone(), timestep.clone()
        return sample


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_l1_loss_matches_the_hand_computed_value(reduction):
    # Fade to 0 over T = 4: x_t = (1 - t/4) x0, so with R(x_t, t) = x_t the error is (t/4) |x0| elementwise.
    x0 = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]]], [[[2.0, 0.0], [-2.0, 4.0]]]])  # |x0| sums: 4 and 8
    model = _Recorder()
    loss = cold_diffusion_loss(model, x0, FadeDegradation(num_steps=4), reduction=reduction,
                               generator=torch.Generator().manual_seed(3))
    t = model.timestep.tolist()
    assert all(1 <= level <= 4 for level in t) and model.timestep.dtype == torch.long
    assert torch.equal(model.sample, torch.stack([(1 - level / 4) * image for level, image in zip(t, x0)]))
    per_sample = [t[0] / 4 * 4, t[1] / 4 * 8]  # sums of the absolute errors
    if reduction == "mean":
        per_sample = [value / 4 for value in per_sample]  # 4 elements per image
    assert loss.item() == pytest.approx(sum(per_sample) / 2, rel=1e-6)


def test_l1_loss_draws_every_level_and_no_other():
    model = _Recorder()
    cold_diffusion_loss(model, torch.zeros(400, 1, 2, 2), FadeDegradation(num_steps=3),
                        generator=torch.Generator().manual_seed(0))
    assert sorted(model.timestep.unique().tolist()) == [1, 2, 3]


def test_a_run_saves_a_loadable_cold_diffusion_pipeline(tmp_path):
    config = _config(tmp_path, max_steps=2, checkpointing_steps=0, degradation="mask", degradation_steps=4,
                     mask_std=0.5, blur_kernel_size=None)
    train(config)
    pipe = ColdDiffusionPipeline.from_pretrained(config.output_dir)
    # the options given, the class defaults for the rest (mask_std_growth 0.1)
    assert pipe.scheduler.config.degradation == MaskDegradation(num_steps=4, mask_std=0.5).to_config()
    assert pipe.scheduler.config.data_centered is True
    # the generation start: one Gaussian over the training digits' means, in [-1, 1] (closed form for K = 1)
    means = torch.tensor(digits_split("train")[0] / DIGITS_GREY_LEVELS * 2 - 1).mean(dim=(1, 2))
    assert pipe.scheduler.config.initial_weights == [1.0]
    assert pipe.scheduler.config.initial_means[0][0] == pytest.approx(means.mean().item(), abs=1e-6)
    assert pipe.scheduler.config.initial_stds[0][0] == pytest.approx(means.std(unbiased=False).item(), abs=1e-6)
    pipe.set_progress_bar_config(disable=True)
    degraded = pipe.scheduler.degrade(torch.rand(2, 1, 8, 8) * 2 - 1, 4)
    restored = pipe(image=degraded, output_type="pt").images
    generated = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert restored.shape == generated.shape == (2, 1, 8, 8)
    assert torch.isfinite(restored).all() and torch.isfinite(generated).all()


def test_resume_continues_exactly(tmp_path):
    straight = _weights(train(_config(tmp_path / "a")))
    halfway = _weights(train(_config(tmp_path / "b", max_steps=2)))
    resumed = _weights(train(_config(tmp_path / "b", resume="latest")))
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    assert any(not torch.equal(halfway[name], resumed[name]) for name in resumed)  # steps 3-4 did change the weights


def test_resume_refuses_another_degradation(tmp_path):
    train(_config(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match=r"holds a different model: --degradation blur -> mask"):
        train(_config(tmp_path, resume="latest", degradation="mask", blur_kernel_size=None))
    with pytest.raises(ValueError, match=r"holds a different model: --degradation-steps 4 -> 5"):
        train(_config(tmp_path, resume="latest", degradation_steps=5))
    with pytest.raises(ValueError, match=r"holds a different model: --blur-kernel-std-rate 0.01 -> 0.2"):
        train(_config(tmp_path, resume="latest", blur_kernel_std_rate=0.2))  # a default made explicit counts as its value
    with pytest.raises(ValueError, match=r"holds a different model: --degradation None -> blur"):
        train(_config(tmp_path / "score", max_steps=2, degradation=None, degradation_steps=None, blur_kernel_size=None))
        train(_config(tmp_path / "score", resume="latest"))


def test_non_finite_loss_stops_with_the_last_checkpoint(tmp_path, monkeypatch):
    real_loss = trainer_module.cold_diffusion_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        return real_loss(*args, **kwargs) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(trainer_module, "cold_diffusion_loss", poisoned)
    config = _config(tmp_path)
    with pytest.raises(FloatingPointError, match="step 3.*checkpoint-2"):
        train(config)
    assert [os.path.basename(p) for p in list_checkpoints(os.path.join(config.output_dir, "checkpoints"))] == ["checkpoint-2"]


def test_bad_degradation_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--degradation must be one of \('blur', 'mask', 'downsample', 'fade'\).*'noise'"):
        train(_config(tmp_path, degradation="noise"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--output-dir", "out", "--degradation", "noise"])
    assert "--degradation: invalid choice: 'noise'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--mask-std 0.5 applies to --degradation mask; got --degradation blur"):
        train(_config(tmp_path, mask_std=0.5))
    with pytest.raises(ValueError, match=r"--fade-value 1.0 applies to --degradation fade; got --degradation unset"):
        train(_config(tmp_path, degradation=None, degradation_steps=None, blur_kernel_size=None, fade_value=1.0))
    with pytest.raises(ValueError, match=r"--sde-type ve is an option of score training; --degradation blur"):
        train(_config(tmp_path, sde_type="ve"))
    with pytest.raises(ValueError, match=r"--degradation blur does not fit the training images: .*8x8.*kernel_size=27"):
        train(_config(tmp_path, blur_kernel_size=None))  # the paper's 27x27 kernel on 8x8 digits
    with pytest.raises(ValueError, match=r"--degradation downsample does not fit .*divisible by 2\*\*t = 16"):
        train(_config(tmp_path, degradation="downsample", blur_kernel_size=None))  # 4 halvings of 8x8
    with pytest.raises(ValueError, match=r"--channel-mean-components 2 needs --degradation"):
        train(_config(tmp_path, degradation=None, degradation_steps=None, blur_kernel_size=None,
                      channel_mean_components=2))
    with pytest.raises(ValueError, match=r"--degradation mask: mask_std must be"):
        train(_config(tmp_path, degradation="mask", blur_kernel_size=None, mask_std=-1.0))
