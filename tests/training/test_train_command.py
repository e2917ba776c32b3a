"""`diffusers-sde train` as a user runs it: the installed console script in a subprocess (help, one-line endings)."""

import os
import shlex
import signal
import subprocess
import time

import pytest

from console_script import CONSOLE_SCRIPT, run_cli
from diffusers_sde.cli import build_parser
from diffusers_sde.training import TrainingConfig, list_checkpoints, train

TINY = ["--max-steps", "2", "--batch-size", "8", "--log-every", "0"]


def _train_parser():
    commands = next(action for action in build_parser()._actions if action.dest == "command")
    return commands.choices["train"]


def test_help_shows_every_option_with_a_help_line_and_its_default(tmp_path):
    result = run_cli("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "--learning-rate LEARNING_RATE Adam learning rate (default: 1e-3 for digits-tiny" in text
    assert "--warmup-steps WARMUP_STEPS steps of linear learning-rate warm-up (default: 100 for digits-tiny" in text
    assert "--max-steps MAX_STEPS optimizer steps (default: 2000)" in text
    parser = _train_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{action.option_strings} has no help line"
        assert "default" in formatter._get_help_string(action) or action.required, action.option_strings
        assert action.option_strings[0] in result.stdout


def test_resume_with_another_model_ends_with_one_line(tmp_path):
    output_dir = tmp_path / "out"
    train(TrainingConfig(output_dir=str(output_dir), max_steps=2, batch_size=8, log_every=0, checkpointing_steps=2,
                         warmup_steps=1))
    result = run_cli("train", "--output-dir", output_dir, *TINY, "--resume", "latest", "--model-preset", "small",
                     cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --resume ") and "--model-preset digits-tiny -> small" in last


def test_push_to_hub_offline_ends_with_one_line_after_the_local_save(tmp_path):
    # Also: a warm-up longer than the run is a one-line warning.
    result = run_cli("train", "--output-dir", "out", *TINY, "--warmup-steps", "5", "--checkpointing-steps", "0",
                     "--push-to-hub", "--hub-model-id", "me/digits", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "warning: --warmup-steps 5 exceeds --max-steps 2" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the pipeline is saved in out (complete); pushing it to the Hub repo 'me/digits'"
                           " failed: ")
    assert (tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_sigint_and_sigterm_end_with_the_last_checkpoint_and_the_resume_command(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    children = {}
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        output_dir = tmp_path / signal_number.name
        command = [CONSOLE_SCRIPT, "train", "--output-dir", str(output_dir), "--max-steps", "100000", "--batch-size", "8",
                   "--log-every", "0", "--checkpointing-steps", "2", "--seed", "7"]
        children[signal_number] = (output_dir, subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        deadline = time.monotonic() + 600  # generous: a loaded machine starts two trainings slowly
        for signal_number, (output_dir, child) in children.items():
            # Any completed checkpoint: with --checkpoints-total-limit 2 a fast run rotates checkpoint-2 away.
            while not list_checkpoints(str(output_dir / "checkpoints")):
                if child.poll() is not None or time.monotonic() > deadline:
                    child.kill()  # never read the pipe of a live child: that would block
                    pytest.fail(f"{signal_number.name} run ended or stalled before its first checkpoint:"
                                f" {child.communicate()[1][-2000:]}")
                time.sleep(0.1)
            child.send_signal(signal_number)
        for signal_number, (output_dir, child) in children.items():
            _, stderr = child.communicate(timeout=180)  # a loaded machine finishes the step slowly
            assert child.returncode == 128 + signal_number and "Traceback" not in stderr, stderr[-2000:]
            last = stderr.strip().splitlines()[-1]
            line, command = last.split("; resume with: ")
            assert line.startswith(f"training stopped by {signal_number.name} at step ")
            checkpoint = line.split("last checkpoint: ")[1]
            assert os.path.isdir(checkpoint) and os.path.basename(checkpoint).startswith("checkpoint-")
            # The resume command repeats the run's options and resumes from the latest checkpoint.
            argv = shlex.split(command)
            assert argv[:2] == ["diffusers-sde", "train"]
            args = build_parser().parse_args(argv[1:])
            assert (args.output_dir, args.max_steps, args.checkpointing_steps, args.seed, args.resume) == (
                str(output_dir), 100000, 2, 7, "latest")
    finally:
        for _, child in children.values():
            if child.poll() is None:
                child.kill()
                child.communicate()


def test_sigint_before_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path):
    from diffusers_sde.training import trainer as trainer_module

    calls = []
    real_loss = trainer_module.denoising_score_matching_loss

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "denoising_score_matching_loss", interrupted)
        with pytest.raises(trainer_module.TrainingInterrupted) as error:
            train(TrainingConfig(output_dir=str(tmp_path), max_steps=4, batch_size=8, log_every=0, checkpointing_steps=3,
                                 warmup_steps=1))
    assert str(error.value) == ("training stopped by SIGINT at step 1/4; no checkpoint yet (the first comes at step 3):"
                                " nothing to resume from")
