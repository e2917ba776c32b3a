"""Quality of the embedded digits model: Frechet distance in a digits classifier's feature space and class coverage.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_digits_quality.py [--model PATH] [--samples 500] [--steps 200]

Prints the same figures for real held-out digits and for uniform noise, which bracket what the model should reach.
"""

import argparse
import time

import numpy as np
import torch

from diffusers_sde import ScoreSDEPipeline
from diffusers_sde.cli import DEFAULT_MODEL
from diffusers_sde.evaluation import DigitsQuality
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split


def _row(name, result):
    print(f"{name:<28} FD {result['frechet_distance']:8.2f}   coverage {result['class_coverage']:.2f}"
          f"   confidence {result['mean_confidence']:.3f}   shares {result['class_shares']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    quality = DigitsQuality()
    heldout, _ = digits_split("heldout")
    size = min(args.samples, len(heldout))
    _row(f"real held-out ({size})", quality.evaluate(heldout[:size] / DIGITS_GREY_LEVELS))
    noise = np.random.RandomState(args.seed).rand(args.samples, 8, 8)
    _row(f"uniform noise ({args.samples})", quality.evaluate(noise))

    pipe = ScoreSDEPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    images = pipe(batch_size=args.samples, num_inference_steps=args.steps,
                  generator=torch.Generator().manual_seed(args.seed), output_type="np").images
    seconds = time.perf_counter() - start
    _row(f"model, {args.steps} steps ({args.samples})", quality.evaluate(images[..., 0]))
    print(f"sampling took {seconds:.1f} s on CPU")


if __name__ == "__main__":
    main()
