"""The `diffusers-sde likelihood` command on a saved exact-mixture pipeline and a folder of PNGs."""

import math
import re

import numpy as np
import PIL.Image
import pytest
import torch
from likelihood_helpers import exact_pipeline, mixture_samples

from diffusers_sde import ScoreSDEPipeline
from diffusers_sde.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("likelihood_cli")
    pipe, mixture = exact_pipeline("vp", channels=1, size=2)
    pipe.save_pretrained(root / "model")
    unit = (mixture_samples(mixture, 5, (1, 2, 2)) + 1) / 2  # VP models data in [-1, 1]
    pixels = (unit * 256).floor().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    (root / "data").mkdir()
    for i, image in enumerate(pixels):
        PIL.Image.fromarray(image[..., 0], mode="L").save(root / "data" / f"{i:02d}.png")
    return root, pixels


def test_cli_prints_mean_bits_per_dim_with_a_confidence_interval(saved, capsys):
    root, pixels = saved
    main(["likelihood", "--model", str(root / "model"), "--data", str(root / "data"), "--divergence", "exact",
          "--seed", "3", "--batch-size", "2", "--per-image"])
    printed = capsys.readouterr().out
    match = re.search(r"5 images, ([0-9.]+) \+- ([0-9.]+) bits/dim \(95% CI\)", printed)
    assert match, printed
    # The same numbers through the Python API on the same pixels, same seed and batching.
    pipe = ScoreSDEPipeline.from_pretrained(root / "model")
    generator = torch.Generator().manual_seed(3)
    values = torch.cat([pipe.log_likelihood(pixels[i : i + 2], generator=generator, divergence="exact").bits_per_dim
                        for i in range(0, 5, 2)])
    assert float(match.group(1)) == pytest.approx(values.mean().item(), abs=1e-4)
    assert float(match.group(2)) == pytest.approx(1.96 * values.std().item() / math.sqrt(5), abs=1e-4)
    assert len(re.findall(r"^\d\d\.png\t", printed, flags=re.M)) == 5


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rtol", "0"], "rtol"),
        (["--repeats", "0"], "--repeats"),
        (["--data", "/nonexistent-folder"], "--data"),
        (["--levels", "1"], "--levels must be >= 2"),
        (["--levels", "3"], "--levels 3 allows pixel values 0..2"),
        (["--probe", "hadamard", "--probes", "3"], "--probes a power of two"),
        (["--probe", "orthogonal", "--probes", "5"], "--probe orthogonal allows at most 4 probes"),
    ],
)
def test_cli_bad_arguments_are_named(saved, extra, message):
    root, _ = saved
    argv = ["likelihood", "--model", str(root / "model"), "--data", str(root / "data"), "--limit", "1", *extra]
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert message in str(error.value)


def test_cli_rejects_images_of_the_wrong_size(saved, tmp_path):
    root, _ = saved
    PIL.Image.fromarray(np.zeros((3, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(SystemExit, match=r"3x3 pixels, the model takes 2x2"):
        main(["likelihood", "--model", str(root / "model"), "--data", str(tmp_path)])


def test_cli_levels_reach_the_pipeline(saved, tmp_path, capsys):
    root, pixels = saved
    few_levels = (pixels.astype(np.int64) * 17 // 256).astype(np.uint8)  # the same images at 17 grey levels, 0..16
    for i, image in enumerate(few_levels):
        PIL.Image.fromarray(image[..., 0], mode="L").save(tmp_path / f"{i:02d}.png")
    main(["likelihood", "--model", str(root / "model"), "--data", str(tmp_path), "--divergence", "exact",
          "--seed", "3", "--levels", "17"])
    match = re.search(r"5 images, ([0-9.]+) \+-", capsys.readouterr().out)
    pipe = ScoreSDEPipeline.from_pretrained(root / "model")
    values = pipe.log_likelihood(few_levels, generator=torch.Generator().manual_seed(3), divergence="exact",
                                 num_levels=17).bits_per_dim
    assert float(match.group(1)) == pytest.approx(values.mean().item(), abs=1e-4)


def test_a_missing_data_folder_is_refused_before_the_model_is_loaded(tmp_path):
    # --model does not exist either: the --data error must come first, without the seconds a model load costs.
    with pytest.raises(SystemExit) as error:
        main(["likelihood", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data")])
    assert str(error.value) == f"--data '{tmp_path / 'no-data'}' is not a folder."


def test_one_image_prints_its_figure_without_an_interval(saved, capsys):
    root, pixels = saved
    main(["likelihood", "--model", str(root / "model"), "--data", str(root / "data"), "--divergence", "exact",
          "--seed", "3", "--limit", "1", "--quiet"])
    printed = capsys.readouterr().out
    assert "nan" not in printed
    match = re.search(r"1 image, ([0-9.]+) bits/dim \(one image: no interval\)", printed)
    assert match, printed
    pipe = ScoreSDEPipeline.from_pretrained(root / "model")
    value = pipe.log_likelihood(pixels[:1], generator=torch.Generator().manual_seed(3), divergence="exact").bits_per_dim
    assert float(match.group(1)) == pytest.approx(value.item(), abs=1e-4)


def test_colour_images_for_a_grey_model_follow_the_python_rule(saved, tmp_path, capsys):
    # The command line no longer converts silently: it hands the PIL images to the pipeline as they are, so it refuses
    # or scores an RGB file for a 1-channel model exactly as `log_likelihood` does on the same PIL images.
    root, pixels = saved
    for i, image in enumerate(pixels[:2]):
        PIL.Image.fromarray(np.repeat(image, 3, axis=-1), mode="RGB").save(tmp_path / f"{i:02d}.png")
    rgb = [PIL.Image.open(tmp_path / f"{i:02d}.png").convert("RGB") for i in range(2)]
    pipe = ScoreSDEPipeline.from_pretrained(root / "model")
    argv = ["likelihood", "--model", str(root / "model"), "--data", str(tmp_path), "--divergence", "exact", "--seed", "3"]
    try:
        expected = pipe.log_likelihood(rgb, generator=torch.Generator().manual_seed(3), divergence="exact").bits_per_dim
    except ValueError as error:
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert str(refused.value) == f"--data {str(tmp_path)!r}: {error}"
    else:
        main(argv)
        match = re.search(r"2 images, ([0-9.]+) \+-", capsys.readouterr().out)
        assert float(match.group(1)) == pytest.approx(expected.mean().item(), abs=1e-4)


def test_cli_hadamard_probes_at_full_dimension_match_the_exact_divergence(saved, capsys):
    # D = 4 = K: the Hadamard probes' average is the exact trace, so the two runs agree to rounding.
    root, _ = saved
    common = ["likelihood", "--model", str(root / "model"), "--data", str(root / "data"), "--seed", "3", "--per-image"]
    main([*common, "--divergence", "exact"])
    exact = capsys.readouterr().out
    main([*common, "--probe", "hadamard", "--probes", "4"])
    hadamard = capsys.readouterr().out
    assert "divergence=hutchinson (4 hadamard)" in hadamard
    values = [[float(line.split("\t")[1]) for line in out.splitlines() if "\t" in line] for out in (exact, hadamard)]
    assert len(values[0]) == 5
    np.testing.assert_allclose(values[1], values[0], atol=1e-4)
