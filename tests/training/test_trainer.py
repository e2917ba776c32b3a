"""The training loop: exact resumption, atomic checkpoints, NaN handling, data errors, the saved pipeline."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_sde import ScoreSDEPipeline
from diffusers_sde.training import TrainingConfig, list_checkpoints, load_image_folder, train
from diffusers_sde.training import trainer as trainer_module


def _config(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), max_steps=4, batch_size=8, learning_rate=1e-3, warmup_steps=2,
                  checkpointing_steps=2, log_every=0, checkpoints_total_limit=3)
    values.update(overrides)
    return TrainingConfig(**values)


def _weights(pipeline):
    return {name: value.clone() for name, value in pipeline.unet.state_dict().items()}


def test_resume_continues_exactly(tmp_path):
    straight = _weights(train(_config(tmp_path / "a")))
    train(_config(tmp_path / "b", max_steps=2))
    resumed = _weights(train(_config(tmp_path / "b", resume="latest")))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    # and the weights did move away from initialization: the comparison is not vacuous
    fresh = _weights(train(_config(tmp_path / "c", max_steps=1, learning_rate=1e-12, warmup_steps=1)))
    assert any(not torch.allclose(fresh[name], straight[name]) for name in straight)


def test_kill_during_checkpoint_keeps_previous(tmp_path, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = []

    def dying_save(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        real_save(self, output_dir, **kwargs)  # files written, completion marker and rename not yet done
        if len(calls) == 2:
            raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(Accelerator, "save_state", dying_save)
    config = _config(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    checkpoint_dir = os.path.join(config.output_dir, "checkpoints")
    assert [os.path.basename(path) for path in list_checkpoints(checkpoint_dir)] == ["checkpoint-2"]
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    resumed = train(_config(tmp_path, resume="latest"))
    assert [os.path.basename(path) for path in list_checkpoints(checkpoint_dir)] == ["checkpoint-2", "checkpoint-4"]
    assert isinstance(resumed, ScoreSDEPipeline)


def test_nan_loss_names_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    real_loss = trainer_module.denoising_score_matching_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(trainer_module, "denoising_score_matching_loss", poisoned)
    config = _config(tmp_path)
    with pytest.raises(FloatingPointError, match="step 3.*checkpoint-2"):
        train(config)
    assert [os.path.basename(p) for p in list_checkpoints(os.path.join(config.output_dir, "checkpoints"))] == ["checkpoint-2"]


def test_saved_pipeline_loads_and_samples(tmp_path):
    config = _config(tmp_path, max_steps=2, checkpointing_steps=0)
    train(config)
    pipe = ScoreSDEPipeline.from_pretrained(config.output_dir)
    assert pipe.scheduler.config.sde_type == "vp" and pipe.scheduler.config.prediction_type == "epsilon"
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()


def test_sample_grids_do_not_disturb_training(tmp_path):
    with_grids = _weights(train(_config(tmp_path / "a", sample_every=2, num_samples=4, checkpointing_steps=0)))
    assert sorted(os.listdir(tmp_path / "a" / "out" / "samples")) == ["step-2.png", "step-4.png"]
    assert Image.open(tmp_path / "a" / "out" / "samples" / "step-4.png").size[0] >= 20
    # sampling uses the EMA weights and its own generator: the trained weights are exactly those of a run without grids
    without = _weights(train(_config(tmp_path / "b", checkpointing_steps=0)))
    assert all(torch.equal(with_grids[name], without[name]) for name in without)


def test_push_to_hub_offline_fails_after_the_local_save(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = _config(tmp_path, max_steps=1, warmup_steps=1, checkpointing_steps=0, push_to_hub=True,
                     hub_model_id="me/digits")
    with pytest.raises(trainer_module.PushToHubError, match="(?i)offline"):
        train(config)
    assert ScoreSDEPipeline.from_pretrained(config.output_dir) is not None  # the local copy is complete


def _write(folder, name, size, mode="L"):
    Image.new(mode, size, 128).save(folder / name)


def test_image_folder_loads_in_model_range(tmp_path):
    _write(tmp_path, "a.png", (8, 8))
    _write(tmp_path, "b.png", (8, 8))
    data = load_image_folder(str(tmp_path), data_centered=True)
    assert data.shape == (2, 1, 8, 8)
    assert torch.allclose(data, torch.full_like(data, 128 / 255 * 2 - 1), atol=1e-6)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        load_image_folder(str(tmp_path))
    with pytest.raises(ValueError, match="neither 'digits' nor an existing folder"):
        load_image_folder(str(tmp_path / "missing"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image 'broken.png'"):
        load_image_folder(str(tmp_path))
    os.remove(tmp_path / "broken.png")
    _write(tmp_path, "a.png", (8, 8))
    _write(tmp_path, "b.png", (16, 8))
    with pytest.raises(ValueError, match="mixes image sizes.*'a.png' is 8x8.*'b.png' is 16x8"):
        load_image_folder(str(tmp_path))


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--resume latest: no checkpoint-N"):
        train(_config(tmp_path, resume="latest"))
    with pytest.raises(ValueError, match="--resume .*not a checkpoint folder"):
        train(_config(tmp_path, resume=str(tmp_path)))


@pytest.mark.parametrize("field, value", [("sde_type", "ou"), ("max_steps", 0), ("mixed_precision", "fp8"),
                                          ("model_preset", "huge"), ("loss", "ranked")])
def test_bad_config_names_option_and_value(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be .*{value}"):
        train(_config(tmp_path, **{field: value}))


def test_discrete_loss_trains_and_rejects_what_it_cannot_take(tmp_path):
    pipeline = train(_config(tmp_path / "ve", sde_type="ve", loss="discrete", max_steps=2, checkpointing_steps=0))
    assert pipeline.scheduler.config.sde_type == "ve"
    with pytest.raises(ValueError, match="--loss must be 'continuous' for sde_type 'subvp'.*'discrete'"):
        train(_config(tmp_path / "subvp", sde_type="subvp", loss="discrete"))
    with pytest.raises(ValueError, match="--weighting must be 'std' with --loss discrete.*'likelihood'"):
        train(_config(tmp_path / "vp", loss="discrete", weighting="likelihood"))


def test_two_processes_resume_exactly(tmp_path):
    # torchrun starts a gloo (CPU) process group; resuming from checkpoint-2 must reproduce the uninterrupted run.
    import subprocess
    import sys

    from safetensors.torch import load_file

    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "train.py")
    common = ["--max-steps", "4", "--batch-size", "8", "--checkpointing-steps", "2", "--log-every", "0",
              "--warmup-steps", "2", "--learning-rate", "1e-3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

    def run(*extra):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", script, *common, *extra]
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)

    run("--output-dir", str(tmp_path / "a"))
    checkpoint = tmp_path / "a" / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "random_states_1.pkl").exists()  # really two processes
    run("--output-dir", str(tmp_path / "b"), "--resume", str(checkpoint))
    weights = [load_file(str(tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors")) for name in "ab"]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


_DYING_CHILD = """
import io, os, sys, time
import torch
torch.set_num_threads(1)
from diffusers_sde.training import TrainingConfig, train

real_save = torch.save

def slow_save(obj, f, *args, **kwargs):
    # Inside the second checkpoint, write half of a file and wait to be killed mid-write.
    if isinstance(f, (str, os.PathLike)) and ".tmp-checkpoint-4" in str(f):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        with open(f, "wb") as handle:
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        open(sys.argv[2], "w").close()
        time.sleep(600)
    return real_save(obj, f, *args, **kwargs)

torch.save = slow_save
train(TrainingConfig(output_dir=sys.argv[1], max_steps=6, batch_size=8, learning_rate=1e-3, warmup_steps=2,
                     checkpointing_steps=2, log_every=0, checkpoints_total_limit=3))
"""


def test_sigkill_while_writing_checkpoint_keeps_previous(tmp_path):
    # A real process, killed with SIGKILL (no exception handler, no cleanup) half-way through writing a file of
    # checkpoint-4: checkpoint-2 stays the latest complete checkpoint and resumes.
    import signal
    import subprocess
    import sys
    import time

    output_dir, marker = tmp_path / "out", tmp_path / "writing"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    child = subprocess.Popen([sys.executable, "-c", _DYING_CHILD, str(output_dir), str(marker)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never reached the second checkpoint"
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    checkpoint_dir = output_dir / "checkpoints"
    assert (checkpoint_dir / ".tmp-checkpoint-4").is_dir()  # the half-written one is there, and ignored
    assert [os.path.basename(path) for path in list_checkpoints(str(checkpoint_dir))] == ["checkpoint-2"]
    resumed = train(_config(tmp_path, output_dir=str(output_dir), resume="latest", max_steps=4))
    assert [os.path.basename(path) for path in list_checkpoints(str(checkpoint_dir))] == ["checkpoint-2", "checkpoint-4"]
    assert isinstance(resumed, ScoreSDEPipeline)


# --- issue 10: defaults, resume checks, logging, interruption ----------------------------------------------------------
def test_defaults_leave_the_warm_up_and_a_too_long_warm_up_warns(tmp_path):
    import warnings

    from diffusers_sde.training.trainer import TrainingWarning

    defaults = TrainingConfig(output_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defaults.warn_about_settings()  # the defaults reach the full learning rate well before max_steps
    assert defaults.resolved("warmup_steps") < defaults.max_steps
    with pytest.warns(TrainingWarning, match=r"--warmup-steps 5 exceeds --max-steps 2: the learning rate only climbs"
                                             r" to 40% of --learning-rate 0.001"):
        train(_config(tmp_path, max_steps=2, warmup_steps=5, checkpointing_steps=0))


def _logged_losses(text):
    """{step: (mean loss, first step of the mean)} from the log lines."""
    import re

    return {int(step): (float(loss), int(first)) for step, loss, first in
            re.findall(r"^step (\d+)/\d+ mean loss ([0-9.]+) \(steps (\d+)-\d+\)", text, flags=re.M)}


def test_logged_loss_after_resume_is_the_mean_of_the_steps_it_covers(tmp_path, capsys):
    # Uninterrupted, logging every step: the per-step losses.
    train(_config(tmp_path / "a", log_every=1, checkpointing_steps=0))
    per_step = _logged_losses(capsys.readouterr().out)
    assert sorted(per_step) == [1, 2, 3, 4]
    # Interrupted at step 2 and resumed, logging every 4 steps: the log covers steps 3-4 only and says so.
    train(_config(tmp_path / "b", max_steps=2, log_every=4))
    train(_config(tmp_path / "b", log_every=4, resume="latest"))
    resumed = _logged_losses(capsys.readouterr().out)
    assert resumed[4][1] == 3
    assert resumed[4][0] == pytest.approx((per_step[3][0] + per_step[4][0]) / 2, abs=2e-4)


def test_resume_refuses_another_model_before_loading_it(tmp_path):
    train(_config(tmp_path, max_steps=2))
    with pytest.raises(ValueError) as error:
        train(_config(tmp_path, resume="latest", sde_type="ve", model_preset="small"))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"--resume {tmp_path / 'out' / 'checkpoints' / 'checkpoint-2'} holds a different model:")
    for difference in ("--sde-type vp -> ve", "--prediction-type epsilon -> score", "--timestep-type discrete -> sigma",
                       "--data-centered True -> False", "--model-preset digits-tiny -> small"):
        assert difference in message


def test_resume_reports_and_applies_changed_options(tmp_path, capsys):
    train(_config(tmp_path, max_steps=2))
    capsys.readouterr()
    train(_config(tmp_path, resume="latest", learning_rate=5e-4, log_every=4))
    printed = capsys.readouterr().out
    assert ("options changed since the checkpoint (checkpoint -> now, applied from here on): --learning-rate 0.001 ->"
            " 0.0005, --log-every 0 -> 4, --max-steps 2 -> 4") in printed
    assert "lr 5.00e-04" in printed  # the new rate is the one in use (warm-up of 2 steps done)


def test_nan_loss_without_a_checkpoint_says_to_start_again(tmp_path, monkeypatch):
    real_loss = trainer_module.denoising_score_matching_loss
    monkeypatch.setattr(trainer_module, "denoising_score_matching_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    with pytest.raises(FloatingPointError) as error:
        train(_config(tmp_path))
    assert "--resume" not in str(error.value)
    assert str(error.value).endswith("at step 1; stopped without saving. No checkpoint was saved before it: start"
                                     " again, with a lower --learning-rate.")


def test_discrete_vp_loss_saves_the_ddpm_kernel_it_trained_on(tmp_path):
    pipeline = train(_config(tmp_path / "vp", loss="discrete", max_steps=2, checkpointing_steps=0))
    scheduler = pipeline.scheduler
    assert scheduler.config.timestep_type == "ddpm"
    # The saved model's kernel is the one the loss drew x_i from (DDPM's alphas_cumprod at the integer levels).
    from diffusers_sde.training.losses import discrete_noise_levels

    t, a, s = discrete_noise_levels(scheduler.sde, scheduler.config.num_train_timesteps)
    kernel_a, kernel_s = scheduler.parameterization.marginal(t)
    torch.testing.assert_close(kernel_a, a)
    torch.testing.assert_close(kernel_s, s)
    with pytest.raises(ValueError, match="--loss discrete with --sde-type vp trains on DDPM's discrete kernel"):
        train(_config(tmp_path / "bad", loss="discrete", timestep_type="discrete"))
