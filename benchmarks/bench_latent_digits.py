"""A latent score model against the pixel-space one on the sklearn digits, at equal network evaluations: Frechet
distance in the digits classifier's feature space and class coverage (``diffusers_sde.evaluation``).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_latent_digits.py \
        [--latent-model digits-vp-latent] [--pixel-model digits-vp] [--samples 500] [--seed 0] [--only latent]

Rows: real held-out digits (the measure's floor), the VAE's reconstructions of those held-out digits (the floor a
latent model can reach: its samples are decoded by the same VAE), uniform noise, then both models with the same
samplers and step counts, each from the same seed. ``nearest train digit`` is the mean distance from a sample to its
nearest training digit (a model that copies its training set scores near 0; the held-out digits give the reference).
Prints a markdown table (the one in docs/latent.md).
"""

import argparse
import time

import numpy as np
import torch

from diffusers_sde import (
    ExponentialIntegratorScheduler,
    PRETRAINED_MODELS,
    PredictorCorrectorScheduler,
    ScoreSDELatentPipeline,
    ScoreSDEPipeline,
    pretrained_model_path,
)
from diffusers_sde.evaluation import DigitsQuality
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split


def nearest_train_distance(images, train):
    """Mean Euclidean distance (images in [0, 1]) from each image to its nearest training digit: a copy of the training
    set scores 0, new digits score as the held-out ones do."""
    flat = torch.as_tensor(np.asarray(images), dtype=torch.float64).flatten(1)
    return torch.cdist(flat, train).min(1).values.mean().item()


def _row(name, nfe, images, quality, train, seconds=None):
    result = quality.evaluate(images)
    shares = result["class_shares"]
    timing = "" if seconds is None else f"{seconds:.0f}"
    print(f"| {name:<52} | {nfe:>4} | {result['frechet_distance']:8.2f} | {result['class_coverage']:.2f} |"
          f" {min(shares):.3f}-{max(shares):.3f} | {nearest_train_distance(images, train):.2f} | {timing:>4} |",
          flush=True)


def _path(model):
    return pretrained_model_path(model) if model in PRETRAINED_MODELS else model


def samplers(config):
    """(label, scheduler, step counts), built from a model's own scheduler config."""
    return [
        ("PC Euler-Maruyama", PredictorCorrectorScheduler.from_config(config, predictor="euler_maruyama",
                                                                      corrector="none"), [50, 200]),
        ("exponential integrator (3M, log-SNR)", ExponentialIntegratorScheduler.from_config(config), [10, 20]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent-model", default="digits-vp-latent", help="a ScoreSDELatentPipeline folder or name")
    parser.add_argument("--pixel-model", default="digits-vp", help="a ScoreSDEPipeline folder or embedded name")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("latent", "pixel"), help="sample one model only (the other is slow)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    quality = DigitsQuality()
    latent = ScoreSDELatentPipeline.from_pretrained(_path(args.latent_model))
    pixel = ScoreSDEPipeline.from_pretrained(_path(args.pixel_model))
    for pipe in (latent, pixel):
        pipe.set_progress_bar_config(disable=True)

    print("| sample set | NFE | Frechet distance | class coverage | class shares | nearest train digit | seconds |")
    print("|---|---|---|---|---|---|---|")
    train = torch.from_numpy(digits_split("train")[0] / DIGITS_GREY_LEVELS).flatten(1)
    heldout, _ = digits_split("heldout")
    size = min(args.samples, len(heldout))
    real = heldout[:size]
    _row(f"real held-out digits ({size}, floor)", "-", real / DIGITS_GREY_LEVELS, quality, train)
    pixels = torch.from_numpy(real.astype(np.uint8))[:, None]
    reconstructed = (latent.decode_latents(latent.encode_image(pixels, num_levels=DIGITS_GREY_LEVELS + 1)) + 1) / 2
    _row("VAE reconstructions of those digits (latent floor)", "-", reconstructed.clamp(0, 1)[:, 0].numpy(), quality,
         train)
    _row(f"uniform noise ({args.samples})", "-", np.random.RandomState(args.seed).rand(args.samples, 8, 8), quality, train)

    for label, _, step_counts in samplers(pixel.scheduler.config):
        for steps in step_counts:
            for name, pipe in (("pixel", pixel), ("latent", latent)):
                if args.only not in (None, name):
                    continue
                pipe.scheduler = dict((row[0], row[1]) for row in samplers(pipe.scheduler.config))[label]
                start = time.perf_counter()
                output = pipe(batch_size=args.samples, num_inference_steps=steps,
                              generator=torch.Generator().manual_seed(args.seed), output_type="np")
                seconds = time.perf_counter() - start
                _row(f"{name}: {label}, {steps} steps", output.nfe, output.images[..., 0], quality, train, seconds)
    error = (reconstructed.clamp(0, 1)[:, 0].double() - torch.from_numpy(real / DIGITS_GREY_LEVELS)).pow(2).mean().sqrt()
    print(f"\nVAE reconstruction of the {size} held-out digits: root mean square error {error.item():.3f} per pixel"
          " (images in [0, 1])")


if __name__ == "__main__":
    main()
