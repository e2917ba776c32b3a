import pytest
from PIL import Image

from diffusers_sde import PredictorCorrectorScheduler, ScoreSDEPipeline
from diffusers_sde.cli import main
from testing_utils import tiny_unet


@pytest.fixture
def model_folder(tmp_path):
    ScoreSDEPipeline(unet=tiny_unet(1), scheduler=PredictorCorrectorScheduler(sde_type="vp")).save_pretrained(tmp_path / "m")
    return str(tmp_path / "m")


@pytest.mark.parametrize("sampler_args, nfe", [(["--sampler", "pc", "--predictor", "ancestral", "--corrector", "ald",
                                                 "--snr", "0.1"], 6),
                                                (["--sampler", "ode", "--solver", "heun"], 5),
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


def test_adaptive_samplers_from_the_command_line(model_folder, tmp_path, capsys):
    for sampler in ("adaptive_ode", "gotta_go_fast"):
        main(["sample", "--model", model_folder, "--sampler", sampler, "--rtol", "1e-2", "--atol", "1e-2",
              "--batch-size", "2", "--out", str(tmp_path / f"{sampler}.png"), "--quiet"])
        assert f"sampler={sampler}, NFE=" in capsys.readouterr().out


def test_default_model_is_the_embedded_digits_model_and_reports_quality(tmp_path, capsys):
    main(["sample", "--sampler", "exponential_integrator", "--steps", "10", "--batch-size", "20",
          "--out", str(tmp_path / "digits.png"), "--quiet"])
    printed = capsys.readouterr().out
    assert "NFE=10" in printed and "digits quality (20 samples" in printed and "class coverage" in printed


def test_bad_arguments(model_folder, tmp_path):
    with pytest.raises(SystemExit, match="--model 'no/such-folder' could not be loaded"):
        main(["sample", "--model", "no/such-folder", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="--steps must be >= 1, got 0"):
        main(["sample", "--model", model_folder, "--steps", "0", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="snr must be a finite number > 0"):
        main(["sample", "--model", model_folder, "--snr", "-1", "--steps", "2", "--out", str(tmp_path / "x.png")])
