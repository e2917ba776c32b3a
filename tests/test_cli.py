"""`diffusers-sde sample`: the installed console script in a subprocess for what a user sees (exit status, output,
files), and ``main()`` in-process for further cases of the same code paths."""


import pytest
import torch
from PIL import Image

from console_script import run_cli
from diffusers_sde import PredictorCorrectorScheduler, ScoreSDEPipeline
from diffusers_sde import PRETRAINED_MODELS, pretrained_model_path
from diffusers_sde import cli
from diffusers_sde.cli import main
from testing_utils import tiny_unet



@pytest.fixture
def model_folder(tmp_path):
    ScoreSDEPipeline(unet=tiny_unet(1), scheduler=PredictorCorrectorScheduler(sde_type="vp")).save_pretrained(tmp_path / "m")
    return str(tmp_path / "m")


@pytest.mark.parametrize("sampler_args, nfe", [(["--sampler", "predictor_corrector", "--predictor", "ancestral",
                                                 "--corrector", "ald", "--snr", "0.1"], 6),
                                                (["--sampler", "exponential_integrator"], 3),
                                                (["--sampler", "edm_heun"], 5)])
def test_sample_writes_a_grid_and_reports_nfe(model_folder, tmp_path, capsys, sampler_args, nfe):
    out = tmp_path / "grid.png"
    main(["sample", "--model", model_folder, *sampler_args, "--steps", "3", "--seed", "1", "--batch-size", "4",
          "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert f"NFE={nfe}" in printed and "wall time" in printed
    # a 2 x 2 grid of 8 x 8 samples with 1-pixel borders (20 px), enlarged 25x to reach ~512 px
    assert Image.open(out).size == (500, 500)


def test_probability_flow_integrator_reaches_the_scheduler(model_folder, tmp_path, capsys):
    for integrator, nfe in (("euler", 3), ("heun", 5)):  # Heun: 2N - 1 evaluations
        main(["sample", "--model", model_folder, "--sampler", "probability_flow", "--integrator", integrator,
              "--steps", "3", "--batch-size", "2", "--out", str(tmp_path / "g.png"), "--quiet"])
        assert f"sampler=probability_flow, NFE={nfe}," in capsys.readouterr().out


def test_adaptive_samplers_from_the_command_line(model_folder, tmp_path, capsys):
    for sampler in ("adaptive_ode", "gotta_go_fast"):
        main(["sample", "--model", model_folder, "--sampler", sampler, "--rtol", "1e-2", "--atol", "1e-2",
              "--batch-size", "2", "--out", str(tmp_path / f"{sampler}.png"), "--quiet"])
        assert f"sampler={sampler}, NFE=" in capsys.readouterr().out


def test_default_model_is_the_embedded_digits_model_and_reports_quality(tmp_path, capsys):
    main(["sample", "--sampler", "exponential_integrator", "--steps", "10", "--batch-size", str(cli.MIN_QUALITY_SAMPLES),
          "--out", str(tmp_path / "digits.png"), "--quiet"])
    printed = capsys.readouterr().out
    assert "NFE=10" in printed and f"digits quality ({cli.MIN_QUALITY_SAMPLES} samples" in printed
    assert "class coverage" in printed


def test_a_user_session_from_outside_the_repository(tmp_path):
    # Issue 10, items 5, 7, 8 and 1 in one run of the console script: the embedded model by its short name from a
    # working directory outside the repository, 7 samples as a near-square grid in the format of --out's extension,
    # --quiet silencing every progress bar (loading included), and the quality figure skipped with a note.
    result = run_cli("sample", "--model", "digits-vp", "--sampler", "exponential_integrator", "--steps", "3",
                     "--batch-size", "7", "--out", "grid.jpg", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar, no warning
    with Image.open(tmp_path / "grid.jpg") as grid:
        assert grid.format == "JPEG"
        # 3 x 3 cells (two left empty) of 10 px (8 x 8 digits with a 1-pixel border), enlarged 17x to reach ~512 px
        assert grid.size == (510, 510)
    assert "wrote grid.jpg: 7 samples, sampler=exponential_integrator, NFE=3" in result.stdout
    assert f"digits quality skipped: 7 samples; it needs --batch-size >= {cli.MIN_QUALITY_SAMPLES}" in result.stdout


def test_one_sample_writes_the_image_and_skips_the_quality_report(tmp_path, capsys):
    # Used to write the image, then die in the report (`Eigenvalues did not converge`, exit 1).
    main(["sample", "--steps", "3", "--batch-size", "1", "--out", str(tmp_path / "one.png"), "--quiet"])
    assert (tmp_path / "one.png").exists()
    assert "digits quality skipped: 1 samples" in capsys.readouterr().out


def test_a_failing_quality_report_does_not_fail_the_run(tmp_path, capsys, monkeypatch):
    import diffusers_sde.evaluation

    class Broken:
        def __init__(self):
            raise ImportError("No module named 'sklearn'")

    monkeypatch.setattr(diffusers_sde.evaluation, "DigitsQuality", Broken)
    main(["sample", "--sampler", "exponential_integrator", "--steps", "2", "--batch-size", str(cli.MIN_QUALITY_SAMPLES),
          "--out", str(tmp_path / "g.png"), "--quiet"])
    printed = capsys.readouterr().out
    assert (tmp_path / "g.png").exists()
    assert "digits quality not computed (ImportError: No module named 'sklearn'); the samples are written." in printed


def test_options_that_do_not_apply_to_the_sampler_are_refused(tmp_path):
    result = run_cli("sample", "--sampler", "probability_flow", "--snr", "0.3", "--predictor", "ancestral",
                     "--out", "x.png", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "--predictor, --snr do not apply to --sampler probability_flow, which takes --steps, --integrator.")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--sampler", "exponential_integrator", "--rtol", "1e-3", "--method", "srk"],
     "--method, --rtol do not apply to --sampler exponential_integrator, which takes --steps."),
    (["--sampler", "predictor_corrector", "--integrator", "euler"],
     "--integrator does not apply to --sampler predictor_corrector, which takes --steps, --predictor, --corrector,"
     " --snr, --corrector-steps."),
    (["--sampler", "pc", "--solver", "euler"], "--integrator does not apply to --sampler predictor_corrector"),
    (["--sampler", "adaptive_ode", "--steps", "10"],
     "--steps does not apply to --sampler adaptive_ode, which takes --method, --rtol, --atol."),
    (["--sampler", "gotta_go_fast", "--method", "euler"], "--method does not apply to --sampler gotta_go_fast"),
    (["--sampler", "torchsde", "--method", "dopri5"],
     "--method must be one of euler, milstein, srk, heun, midpoint for --sampler torchsde, got 'dopri5'."),
    (["--steps", "0"], "--steps must be >= 1, got 0."),
    (["--snr", "-1"], "--snr must be > 0, got -1.0."),
    (["--sampler", "torchsde", "--rtol", "0"], "--rtol must be > 0, got 0.0."),
    (["--predictor", "none", "--corrector", "none"], "--predictor none needs a corrector"),
    (["--out", "grid.xyz"], "--out 'grid.xyz': cannot write an image with the extension '.xyz'; use one of"),
    (["--device", "gpu"], "--device 'gpu' is not a torch device; use cpu, cuda, cuda:N or mps."),
    (["--model", "no/such-folder"], "--model 'no/such-folder' could not be loaded"),
])
def test_bad_arguments_name_the_flag(tmp_path, argv, message):
    with pytest.raises(SystemExit) as error:
        main(["sample", "--out", str(tmp_path / "x.png"), *argv])
    assert message in str(error.value)


def test_deprecated_sampler_names_still_work_with_a_note(model_folder, tmp_path, capsys):
    main(["sample", "--model", model_folder, "--sampler", "pc", "--steps", "2", "--batch-size", "2",
          "--out", str(tmp_path / "g.png"), "--quiet"])
    captured = capsys.readouterr()
    assert "sampler=predictor_corrector, NFE=2," in captured.out
    assert "note: --sampler pc is deprecated; it means --sampler predictor_corrector." in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error_before_loading(tmp_path):
    with pytest.raises(SystemExit) as error:  # --model does not exist: the device is checked first
        main(["sample", "--device", "cuda", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "x.png")])
    assert str(error.value).startswith("--device cuda: CUDA is not available here (torch ")
    assert str(error.value).endswith("use --device cpu.")


def test_grids_are_near_square(tmp_path):
    from diffusers_sde.image_grid import save_image_grid

    for count, (rows, cols) in {1: (1, 1), 2: (1, 2), 7: (3, 3), 12: (3, 4), 13: (4, 4), 16: (4, 4)}.items():
        images = [Image.new("L", (520, 520), 255) for _ in range(count)]  # wide enough not to be enlarged
        path = tmp_path / f"grid-{count}.png"
        save_image_grid(images, str(path))
        with Image.open(path) as grid:
            assert grid.size == (520 * cols, 520 * rows)


def test_pretrained_model_path_names_the_embedded_models():
    assert PRETRAINED_MODELS == ("digits-vp", "digits-vp-cfg", "digits-vp-latent")
    pipe = ScoreSDEPipeline.from_pretrained(pretrained_model_path("digits-vp"))
    assert pipe.unet.config.sample_size == 8 and pipe.scheduler.config.sde_type == "vp"
    with pytest.raises(ValueError, match=r"name must be one of \('digits-vp', 'digits-vp-cfg', 'digits-vp-latent',"
                                         r" 'digits-vp-classifier'\),"
                                         r" got 'digits-ve'"):
        pretrained_model_path("digits-ve")


def test_python_argument_names_in_later_errors_become_flags():
    # Errors raised past the CLI's own checks (by a scheduler or the pipeline) still name the flag.
    assert cli._with_flags("num_inference_steps must be an integer >= 1, got 0.") == "--steps must be an integer >= 1, got 0."
    assert cli._with_flags("chooses its own steps; got num_inference_steps=10.") == "chooses its own steps; got --steps 10."
    assert cli._with_flags("rtol must be a finite number > 0, got 0.") == "--rtol must be a finite number > 0, got 0."
    assert cli._with_flags("the predictor needs a corrector") == "the predictor needs a corrector"  # prose stays


# --- class guidance (issue 11) ---------------------------------------------------------------------------------------
def test_classifier_free_guidance_from_the_command_line(tmp_path, capsys):
    # The embedded class-conditional model, one class for the batch, recognised by the digits judge (a report line).
    main(["sample", "--model", "digits-vp-cfg", "--class-label", "3", "--guidance-scale", "2", "--sampler",
          "exponential_integrator", "--steps", "10", "--batch-size", "20", "--out", str(tmp_path / "three.png"),
          "--quiet"])
    printed = capsys.readouterr().out
    assert "NFE=10" in printed and "recognises" in printed and "as the requested class" in printed
    share = float(printed.split("recognises ")[1].split("%")[0])
    assert share >= 80, printed  # the benchmark's figure is 100% at scale 2 (docs/controllable.md); 20 samples here


def test_train_classifier_then_sample_with_it(model_folder, tmp_path, capsys):
    main(["train-classifier", "--model", model_folder, "--output-dir", str(tmp_path / "clf"), "--max-steps", "2",
          "--batch-size", "8", "--block-out-channels", "8,16", "--log-every", "1"])
    printed = capsys.readouterr().out
    assert "step 2/2 cross-entropy" in printed and "saved the classifier" in printed
    main(["sample", "--model", model_folder, "--classifier", str(tmp_path / "clf"), "--class-label", "4",
          "--guidance-scale", "2", "--steps", "3", "--batch-size", "2", "--out", str(tmp_path / "g.png"), "--quiet",
          "--no-quality"])
    assert "wrote" in capsys.readouterr().out and (tmp_path / "g.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--guidance-scale", "2"], "--guidance-scale 2.0 needs --class-label"),
    (["--class-label", "1"], "--model digits-vp: --class-label was given, but this pipeline has neither a classifier"),
    (["--model", "digits-vp-cfg", "--class-label", "10"], "--class-label must be in 0..9 (the class-conditional unet"
                                                          " has 10 classes), got [10]"),
    (["--class-label", "1", "--guidance-scale", "-1"], "--guidance-scale must be >= 0, got -1.0."),
    (["--classifier", "no/such-folder", "--class-label", "1"], "--classifier 'no/such-folder' could not be loaded"),
])
def test_bad_guidance_arguments_name_the_flag(tmp_path, argv, message):
    with pytest.raises(SystemExit) as error:
        main(["sample", "--out", str(tmp_path / "x.png"), "--quiet", *argv])
    assert message in str(error.value)


@pytest.mark.parametrize("argv, message", [
    (["--max-steps", "0"], "error: --max-steps must be an integer >= 1, got 0."),
    (["--block-out-channels", "8,x"], "error: --block-out-channels must be comma-separated positive integers, got '8,x'."),
    (["--model", "no/such-folder"], "error: --model 'no/such-folder' is not a score model's pipeline folder"),
])
def test_bad_train_classifier_arguments_name_the_flag(tmp_path, argv, message):
    with pytest.raises(SystemExit) as error:
        main(["train-classifier", "--output-dir", str(tmp_path / "clf"), *argv])
    assert message in str(error.value)


@pytest.mark.parametrize("sampler, nfe", [("sde_dpm_solver", 3), ("unipc", 3), ("restart", 5), ("er_sde", 3)])
def test_the_round_two_schedulers_run_from_the_command_line(tmp_path, capsys, sampler, nfe):
    main(["sample", "--sampler", sampler, "--steps", "3", "--batch-size", "2", "--out", str(tmp_path / "g.png"),
          "--quiet"])
    assert f"sampler={sampler}, NFE={nfe}" in capsys.readouterr().out
