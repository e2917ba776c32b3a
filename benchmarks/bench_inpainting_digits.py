"""Half-masked digits completed by the embedded digits model: does the completion keep the digit's class?

The held-out sklearn digits (500, never seen by the generative model) with their bottom (or top) half masked are
inpainted with the paper's imputation; the digits classifier of ``diffusers_sde.evaluation`` (fit on those same held-out
digits, so it recognizes the originals almost perfectly) labels the completions. Beside it, the same classifier on the
masked input with the hidden half left blank, and on the originals.

    python benchmarks/bench_inpainting_digits.py
"""

import time

import numpy as np
import torch

from diffusers_sde import ExponentialIntegratorScheduler, PredictorCorrectorScheduler, ScoreSDEInpaintPipeline
from diffusers_sde import pretrained_model_path
from diffusers_sde.evaluation import DigitsQuality
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split


def main():
    torch.set_num_threads(1)
    images, labels = digits_split("heldout")
    quality = DigitsQuality()
    accuracy = lambda unit: float((quality.classifier.predict(unit.reshape(len(unit), -1)) == labels).mean())  # noqa: E731
    pixels = np.round(images / DIGITS_GREY_LEVELS * 255).astype(np.uint8)  # the model's 8-bit input
    print("| hidden half | sampler | class agreement with the true label | seconds |")
    print("|---|---|---|---|")
    print(f"| none (the originals) | - | {accuracy(images / DIGITS_GREY_LEVELS):.3f} | - |")
    pipe = ScoreSDEInpaintPipeline.from_pretrained(pretrained_model_path("digits-vp"))
    pipe.set_progress_bar_config(disable=True)
    for half, rows in (("bottom", slice(4, 8)), ("top", slice(0, 4))):
        mask = np.zeros((8, 8), dtype=np.float32)
        mask[rows] = 1
        blank = images / DIGITS_GREY_LEVELS * (1 - mask)
        print(f"| {half} | left blank | {accuracy(blank):.3f} | - |")
        for name, scheduler, steps in (
            ("exponential integrator, 50 steps", ExponentialIntegratorScheduler.from_config(pipe.scheduler.config), 50),
            ("predictor-corrector (Euler-Maruyama), 200 steps", PredictorCorrectorScheduler.from_config(pipe.scheduler.config), 200),
        ):
            pipe.scheduler = scheduler
            start = time.perf_counter()
            out = pipe(pixels, mask, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                       output_type="np")
            completed = out.images[..., 0]
            assert np.abs(completed * (1 - mask) - pixels / 255 * (1 - mask)).max() < 1e-6  # kept pixels unchanged
            print(f"| {half} | {name} | {accuracy(completed):.3f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
