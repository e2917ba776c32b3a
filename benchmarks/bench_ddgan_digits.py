"""A DDGAN on the sklearn digits against the embedded score model at few and many network evaluations.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_ddgan_digits.py --model DDGAN_FOLDER [--samples 500]
        [--grid docs/images/ddgan_digits.png]

Prints one markdown table: Frechet distance and class coverage of the digits judge (diffusers_sde.evaluation), and the
class histogram of the samples (mode coverage), for the DDGAN (``diffusers-sde train-ddgan`` output) and for the
embedded ``digits-vp`` model sampled with the exponential integrator (DPM-Solver++(3M), the best fixed-step sampler of
docs/fast_samplers.md at low NFE) at 4, 10 and 200 steps. The judge's own reference row scores real held-out digits
against the train split its statistics come from. Every sampler starts from the same seed.
"""

import argparse
import time

import torch

from diffusers_sde import DDGANPipeline, ExponentialIntegratorScheduler, ScoreSDEPipeline, pretrained_model_path
from diffusers_sde.evaluation import DigitsQuality
from diffusers_sde.image_grid import save_image_grid
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split

SCORE_MODEL_STEPS = (4, 10, 200)


def _row(name, nfe, result, seconds=None):
    shares = " | ".join(f"{share:.2f}" for share in result["class_shares"])
    timing = "-" if seconds is None else f"{seconds:.1f}"
    print(f"| {name} | {nfe} | {result['frechet_distance']:.2f} | {result['class_coverage']:.1f} | {shares} |"
          f" {timing} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a DDGANPipeline folder (diffusers-sde train-ddgan's output)")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default=None, help="also save a grid of 64 DDGAN samples here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    quality = DigitsQuality()
    print("| sample set | NFE | Frechet distance | class coverage | " + " | ".join(f"share {c}" for c in range(10))
          + " | seconds |")
    print("|---|---|---|---|" + "---|" * 10 + "---|")
    heldout, _ = digits_split("heldout")
    _row(f"real held-out digits ({min(args.samples, len(heldout))}, judge reference)", "-",
         quality.evaluate(heldout[:args.samples] / DIGITS_GREY_LEVELS))

    ddgan = DDGANPipeline.from_pretrained(args.model)
    ddgan.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    output = ddgan(batch_size=args.samples, generator=torch.Generator().manual_seed(args.seed), output_type="np")
    _row(f"DDGAN, T = {ddgan.scheduler.num_timesteps}", output.nfe, quality.evaluate(output.images[..., 0]),
         time.perf_counter() - start)
    if args.grid:
        save_image_grid(ddgan(batch_size=64, generator=torch.Generator().manual_seed(args.seed)).images, args.grid)

    pipe = ScoreSDEPipeline.from_pretrained(pretrained_model_path("digits-vp"))
    pipe.scheduler = ExponentialIntegratorScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for steps in SCORE_MODEL_STEPS:
        start = time.perf_counter()
        output = pipe(batch_size=args.samples, num_inference_steps=steps,
                      generator=torch.Generator().manual_seed(args.seed), output_type="np")
        _row(f"digits-vp, exponential integrator {steps} steps", output.nfe, quality.evaluate(output.images[..., 0]),
             time.perf_counter() - start)


if __name__ == "__main__":
    main()
