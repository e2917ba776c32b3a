"""Colorization of digits: a 3-channel model trained on digits tinted with random colours (``--data digits-tinted``)
colours the grey (channel-mean) versions of held-out tinted digits.

Train the model first (about 4 minutes on one CPU thread):

    diffusers-sde train --output-dir colour-digits --data digits-tinted --model-preset digits-tiny --max-steps 2000

then

    python benchmarks/bench_colorization_digits.py --model colour-digits [--grid docs/colorization_digits.png]

A tinted digit is one colour times a grey pattern, so its 3 x 64 pixel matrix has rank 1. The table reports, for the
colorized samples, real tinted digits and the grey input copied to all channels: how far the output's channel mean is
from the grey input (in the model's space, before the images are clamped to [0, 1]; 0 up to rounding), the share of each image's energy in its best rank-1 (one-colour) fit, and
the colourfulness (mean over images of the per-pixel std across channels, relative to the mean intensity).
"""

import argparse

import numpy as np
import torch

from diffusers_sde import ExponentialIntegratorScheduler, PredictorCorrectorScheduler, ScoreSDEColorizationPipeline
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split, tint_digits


def one_colour_share(images):
    """(N,) share of each (3, H, W) image's energy in its best rank-1 fit (colour x grey pattern)."""
    matrices = images.reshape(len(images), 3, -1)
    singular = torch.linalg.svdvals(matrices)
    return (singular[:, 0] ** 2 / singular.pow(2).sum(1).clamp(min=1e-12)).numpy()


def colourfulness(images):
    """(N,) mean over bright pixels of the std across channels divided by the channel mean."""
    mean = images.mean(1)
    spread = images.std(1, unbiased=False)
    bright = mean > 0.1
    return np.array([(spread[i][bright[i]] / mean[i][bright[i]]).mean().item() for i in range(len(images))])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder of the 3-channel digits model")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--grid", help="also write a grid: grey inputs, colorized, the tinted originals")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, _ = digits_split("heldout")
    tinted = tint_digits(images[: args.count] / DIGITS_GREY_LEVELS, seed=1).float()  # in [0, 1], 3 channels
    pipe = ScoreSDEColorizationPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    grey = tinted.mean(1, keepdim=True) * 2 - 1  # the grey image in the model's [-1, 1] space
    rows = {"real tinted digits": tinted, "grey input copied to 3 channels": tinted.mean(1, keepdim=True).expand_as(tinted)}
    for name, scheduler, steps in (
        ("colorized, exponential integrator 50 steps", ExponentialIntegratorScheduler.from_config(pipe.scheduler.config), 50),
        ("colorized, predictor-corrector 200 steps", PredictorCorrectorScheduler.from_config(pipe.scheduler.config), 200),
    ):
        pipe.scheduler = scheduler
        latent = pipe(grey, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                      output_type="latent").images
        rows[name] = (latent + 1) / 2  # in [0, 1] units, unclamped: the channel mean is kept exactly there
    print("| images | channel mean vs grey input (max abs) | one-colour share (mean) | colourfulness (mean) |")
    print("|---|---|---|---|")
    for name, batch in rows.items():
        kept = (batch.mean(1) - tinted.mean(1)).abs().max().item()
        shown = batch.clamp(0, 1)  # the images a user sees
        print(f"| {name} | {kept:.1e} | {one_colour_share(shown).mean():.3f} | {colourfulness(shown).mean():.3f} |")
    if args.grid:
        import os

        from diffusers.utils import make_image_grid, numpy_to_pil

        columns = [rows["grey input copied to 3 channels"][:8], rows["colorized, exponential integrator 50 steps"][:8],
                   tinted[:8]]
        stacked = torch.cat(columns).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        grid = make_image_grid(numpy_to_pil(stacked), rows=3, cols=8)
        grid = grid.resize((grid.width * 16, grid.height * 16), resample=0)
        grid.save(args.grid + ".tmp", format="PNG")
        os.replace(args.grid + ".tmp", args.grid)
        print(f"wrote {args.grid}: rows of 8: grey inputs, colorized, the tinted originals")

if __name__ == "__main__":
    main()
