"""Cold Diffusion restoration networks on the sklearn digits: restoration error of Algorithm 1 vs 2, and generation.

For each pipeline folder written by ``diffusers-sde train --degradation ...`` (docs/cold_diffusion.md gives the
commands):

- restoration: the 500 held-out digits (never trained on) degraded to level t (T, and an intermediate level), then
  restored by Algorithm 1 (naive), Algorithm 2 (improved), and by one direct call x0_hat = R(x_t, t); the RMSE against
  the originals, in [0, 1] pixel units, beside the RMSE of the degraded input itself;
- generation: 500 samples from the fully degraded start x_T = D(u, T) + 0.002 z, u constant, its value drawn from the
  channel-mean mixture (the one in the pipeline's scheduler config, else fitted here to the train split, K = 1),
  scored by the digits judge (``diffusers_sde.evaluation``: Frechet distance to the train split in a small classifier's
  features, class coverage), against the judge's own held-out-vs-train distance;
- a grid per degradation, ``<grids>/cold_<degradation>.png``.

    python benchmarks/bench_cold_diffusion_digits.py runs/cold-blur runs/cold-mask runs/cold-downsample runs/cold-fade \\
        --grids docs/images
"""

import argparse
import time

import numpy as np
import torch
from PIL import Image

from diffusers_sde import ColdDiffusionPipeline, ColdDiffusionScheduler, fit_channel_mean_mixture
from diffusers_sde.evaluation import DigitsQuality
from diffusers_sde.image_grid import save_image_grid
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split, to_model_range

NAMES = {"BlurDegradation": "blur", "MaskDegradation": "mask", "DownsampleDegradation": "downsample",
         "FadeDegradation": "fade"}
ALGORITHMS = (("naive", "Alg. 1"), ("improved", "Alg. 2"))
GRID_COLUMNS = 10


def _unit(sample, data_centered):
    """Data-space samples -> [0, 1] numpy (N, H, W), clipped like the pipeline's images."""
    unit = (sample + 1) / 2 if data_centered else sample
    return unit.clamp(0, 1)[:, 0].cpu().numpy()


def _rmse(images, truth):
    return float(np.sqrt(((images - truth) ** 2).mean()))


def _with_algorithm(pipe, algorithm):
    pipe.scheduler = ColdDiffusionScheduler.from_config(pipe.scheduler.config, algorithm=algorithm)
    return pipe


def _start_description(name, mixture):
    spread = f"u ~ N({mixture['means'][0][0]:.3f}, {mixture['stds'][0][0]:.3f}^2)"
    if len(mixture["means"]) > 1:
        spread = f"u from a {len(mixture['means'])}-component mixture"
    return {"blur": f"D(u, T), {spread} (fully blurred: constant)",
            "downsample": f"D(u, T), {spread} (one 8x8 block: constant)",
            "mask": "D(u, T) = u x mask_T: ~0 (all but 0.3% of the mask hidden)",
            "fade": "D(u, T) = the fade value (0): one fixed image"}[name]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="+", help="folders of trained ColdDiffusionPipelines")
    parser.add_argument("--grids", default=None, help="folder for the cold_<degradation>.png grids")
    parser.add_argument("--num-samples", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)

    heldout, _ = digits_split("heldout")
    truth = heldout / DIGITS_GREY_LEVELS
    judge = DigitsQuality()
    restoration_rows, generation_rows = [], []
    for folder in args.pipelines:
        pipe = ColdDiffusionPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        config = pipe.scheduler.config
        name, total = NAMES[config.degradation["type"]], pipe.scheduler.num_train_timesteps
        x0 = to_model_range(torch.tensor(truth, dtype=torch.float32)[:, None], config.data_centered)
        grid_rows = [truth[:GRID_COLUMNS]]
        for level in ((total + 1) // 2, total):
            x_t = pipe.scheduler.degrade(x0, level)
            with torch.no_grad():
                direct = pipe.unet(x_t, torch.full((len(x_t),), level)).sample
            row = {"degradation": name, "T": total, "t": level, "input": _rmse(_unit(x_t, config.data_centered), truth),
                   "direct": _rmse(_unit(direct, config.data_centered), truth)}
            grid_rows.append(_unit(x_t[:GRID_COLUMNS], config.data_centered))
            for algorithm, label in ALGORITHMS:
                restored = _with_algorithm(pipe, algorithm)(image=x_t, degradation_level=level,
                                                            output_type="latent").images
                row[label] = _rmse(_unit(restored, config.data_centered), truth)
                if algorithm == "improved" or level == total:
                    grid_rows.append(_unit(restored[:GRID_COLUMNS], config.data_centered))
            restoration_rows.append(row)
            print(f"restoration {row}", flush=True)

        mixture = {key: config.get(f"initial_{key}") for key in ("weights", "means", "stds")}
        fitted_here = mixture["means"] is None
        if fitted_here:  # a pipeline saved without one: fit it as training does (train split, K = 1, seed 0)
            train_images = to_model_range(torch.tensor(digits_split("train")[0] / DIGITS_GREY_LEVELS,
                                                       dtype=torch.float32)[:, None], config.data_centered)
            fit = fit_channel_mean_mixture(train_images, num_components=1, seed=0)
            mixture = {"weights": fit.weights.tolist(), "means": fit.means.tolist(), "stds": fit.stds.tolist()}
        for algorithm, label in ALGORITHMS:
            start = time.perf_counter()
            samples = _with_algorithm(pipe, algorithm)(
                batch_size=args.num_samples, initial_weights=mixture["weights"], initial_means=mixture["means"],
                initial_stds=mixture["stds"], generator=torch.Generator().manual_seed(0), output_type="np").images
            scores = judge.evaluate(samples[..., 0])
            generation_rows.append({"degradation": name, "algorithm": label, "start": _start_description(name, mixture),
                                    "fd": scores["frechet_distance"], "coverage": scores["class_coverage"],
                                    "seconds": time.perf_counter() - start})
            print(f"generation {generation_rows[-1]}", flush=True)
            if algorithm == "improved":
                grid_rows += [samples[:GRID_COLUMNS, ..., 0], samples[GRID_COLUMNS:2 * GRID_COLUMNS, ..., 0]]
        if args.grids:
            pictures = [Image.fromarray(np.round(image * 255).astype(np.uint8)) for row in grid_rows for image in row]
            save_image_grid(pictures, f"{args.grids}/cold_{name}.png", cols=GRID_COLUMNS)

    reference = judge.evaluate(truth)
    print("\n| degradation | T | from level t | degraded input | direct R(x_t, t) | Alg. 1 (naive) | Alg. 2 (improved) |")
    print("|---|---|---|---|---|---|---|")
    for row in restoration_rows:
        print(f"| {row['degradation']} | {row['T']} | {row['t']} | {row['input']:.3f} | {row['direct']:.3f} |"
              f" {row['Alg. 1']:.3f} | {row['Alg. 2']:.3f} |")
    print("\n| degradation | algorithm | start | Frechet distance | class coverage | seconds |")
    print("|---|---|---|---|---|---|")
    for row in generation_rows:
        print(f"| {row['degradation']} | {row['algorithm']} | {row['start']} | {row['fd']:.2f} | {row['coverage']:.1f} |"
              f" {row['seconds']:.0f} |")
    print(f"| reference | - | the 500 held-out digits themselves | {reference['frechet_distance']:.2f} |"
          f" {reference['class_coverage']:.1f} | - |")


if __name__ == "__main__":
    main()
