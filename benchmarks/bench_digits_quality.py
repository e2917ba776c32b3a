"""Quality of the embedded digits model against network evaluations: Frechet distance in a digits classifier's feature
space and class coverage, for every fixed-step sampler.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_digits_quality.py [--model PATH] [--samples 500] [--quick]

Every sampler starts from the same seed. Real held-out digits (the floor) and uniform noise bracket what a sampler can
reach. Prints a markdown table (the one in docs/training.md).
"""

import argparse
import time

import numpy as np
import torch

from diffusers_sde import (
    EDMHeunScheduler,
    ExponentialIntegratorScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    ScoreSDEPipeline,
)
from diffusers_sde.cli import DEFAULT_MODEL
from diffusers_sde.evaluation import DigitsQuality
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split


def _row(name, nfe, result, seconds=None):
    shares = result["class_shares"]
    timing = "" if seconds is None else f"{seconds:.0f}"
    print(f"| {name:<42} | {nfe:>4} | {result['frechet_distance']:8.2f} | {result['class_coverage']:.2f} |"
          f" {min(shares):.3f}-{max(shares):.3f} | {timing:>4} |", flush=True)


def samplers(config, quick):
    """(label, scheduler, step counts) for every fixed-step sampler, all built from the model's own config."""
    def pc(predictor):
        return PredictorCorrectorScheduler.from_config(config, predictor=predictor, corrector="none")

    return [
        ("PC Euler-Maruyama", pc("euler_maruyama"), [50, 200] if quick else [20, 50, 100, 200]),
        ("PC reverse diffusion", pc("reverse_diffusion"), [50] if quick else [50, 200]),
        ("PC ancestral", pc("ancestral"), [50] if quick else [50, 200]),
        ("probability flow, Heun", ProbabilityFlowScheduler.from_config(config, integrator="heun"), [10, 25]),
        ("exponential integrator (3M, log-SNR)", ExponentialIntegratorScheduler.from_config(config), [10, 20]),
        ("EDM Heun (Karras rho=7)", EDMHeunScheduler.from_config(config), [6, 11]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer step counts")
    args = parser.parse_args()
    torch.set_num_threads(1)

    quality = DigitsQuality()
    print("| sample set | NFE | Frechet distance | class coverage | class shares | seconds |")
    print("|---|---|---|---|---|---|")
    heldout, _ = digits_split("heldout")
    size = min(args.samples, len(heldout))
    _row(f"real held-out digits ({size}, floor)", "-", quality.evaluate(heldout[:size] / DIGITS_GREY_LEVELS))
    noise = np.random.RandomState(args.seed).rand(args.samples, 8, 8)
    _row(f"uniform noise ({args.samples})", "-", quality.evaluate(noise))

    pipe = ScoreSDEPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    for label, scheduler, step_counts in samplers(pipe.scheduler.config, args.quick):
        pipe.scheduler = scheduler
        for steps in step_counts:
            start = time.perf_counter()
            output = pipe(batch_size=args.samples, num_inference_steps=steps,
                          generator=torch.Generator().manual_seed(args.seed), output_type="np")
            _row(f"{label}, {steps} steps", output.nfe, quality.evaluate(output.images[..., 0]),
                 time.perf_counter() - start)


if __name__ == "__main__":
    main()
