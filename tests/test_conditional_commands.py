"""The inpaint, colorize and img2img commands on the embedded digits model."""

import numpy as np
import PIL.Image
import pytest

from diffusers_sde.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    PIL.Image.fromarray((rng.random((8, 8)) * 255).astype("uint8"), "L").save(tmp_path / "digit.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[4:] = 255  # generate the bottom half
    PIL.Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    mask[0, 0] = 100
    PIL.Image.fromarray(mask, "L").save(tmp_path / "grey_mask.png")
    return tmp_path


def test_inpaint_keeps_the_unmasked_pixels(files, capsys):
    out = main_output(["inpaint", "--image", str(files / "digit.png"), "--mask", str(files / "mask.png"), "--steps", "5",
                       "--out", str(files / "filled.png"), "--quiet"])
    kept = np.asarray(PIL.Image.open(files / "digit.png"))[:4]
    assert np.array_equal(np.asarray(out.images[0])[:4], kept)
    assert "wrote" in capsys.readouterr().out and (files / "filled.png").exists()


def test_img2img_and_bad_inputs_name_the_flag(files):
    main(["img2img", "--image", str(files / "digit.png"), "--strength", "0.5", "--steps", "4", "--out",
          str(files / "edited.jpg"), "--quiet"])
    with PIL.Image.open(files / "edited.jpg") as edited:
        assert edited.format == "JPEG"
    with pytest.raises(SystemExit, match="mask_image must be binary"):
        main(["inpaint", "--image", str(files / "digit.png"), "--mask", str(files / "grey_mask.png"), "--steps", "2",
              "--out", str(files / "x.png"), "--quiet"])
    with pytest.raises(SystemExit, match="--image '.*nothing.png' is not a file"):
        main(["img2img", "--image", str(files / "nothing.png"), "--out", str(files / "x.png")])
    with pytest.raises(SystemExit, match="colorization needs a colour model"):
        main(["colorize", "--image", str(files / "digit.png"), "--steps", "2", "--out", str(files / "x.png"), "--quiet"])
    with pytest.raises(SystemExit, match="strength must be a finite number > 0 and <= 1, got 2.0"):
        main(["img2img", "--image", str(files / "digit.png"), "--strength", "2", "--out", str(files / "x.png"), "--quiet"])


def main_output(argv):
    from diffusers_sde import cli

    args = cli.build_parser().parse_args(argv)
    return args.func(args)


def test_a_latent_model_is_refused_by_the_pixel_commands(files):
    with pytest.raises(SystemExit, match=r"--model 'digits-vp-latent' is a latent model \(ScoreSDELatentPipeline\);"
                                         r" inpaint takes a pixel-space model"):
        main(["inpaint", "--model", "digits-vp-latent", "--image", str(files / "digit.png"), "--mask",
              str(files / "mask.png"), "--out", str(files / "x.png"), "--quiet"])
    with pytest.raises(SystemExit, match=r"is a latent model \(ScoreSDELatentPipeline\); likelihood takes a pixel-space"):
        main(["likelihood", "--model", "digits-vp-latent", "--data", str(files), "--quiet"])
