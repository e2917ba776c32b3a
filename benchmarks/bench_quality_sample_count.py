"""From how many samples does the CLI's digits quality figure mean something?

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quality_sample_count.py [--repeats 20]

For each count n, draws `repeats` random subsets of n images from (a) the 500 real held-out digits, (b) 500 samples
of the embedded model from a good sampler (exponential integrator, 20 steps: 0.26 at 500 samples, as good as real data by
this measure) and (c) 500 from a visibly worse one (predictor-corrector Euler-Maruyama, 20 steps: 0.83 at 500), and
prints the mean and 10-90% spread of the Frechet distance and the class coverage that `diffusers-sde sample` would report
for n samples, and how often real digits score better than the worse sampler. `sample` skips the figure below the count
where it stops telling that worse sampler from data and real digits stop covering all classes
(`diffusers_sde.cli.MIN_QUALITY_SAMPLES`).
"""

import argparse

import numpy as np
import torch

from diffusers_sde import ExponentialIntegratorScheduler, PredictorCorrectorScheduler, ScoreSDEPipeline
from diffusers_sde import pretrained_model_path
from diffusers_sde.evaluation import DigitsQuality
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split

COUNTS = (2, 4, 8, 16, 32, 48, 64, 80, 100, 128, 200, 300, 500)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)

    quality = DigitsQuality()
    real = digits_split("heldout")[0] / DIGITS_GREY_LEVELS
    pipe = ScoreSDEPipeline.from_pretrained(pretrained_model_path("digits-vp"))
    pipe.set_progress_bar_config(disable=True)
    config = pipe.scheduler.config

    def samples(scheduler):
        pipe.scheduler = scheduler
        return pipe(batch_size=500, num_inference_steps=20, generator=torch.Generator().manual_seed(0),
                    output_type="np").images[..., 0]

    sets = {
        "real": real,
        "good": samples(ExponentialIntegratorScheduler.from_config(config)),
        "worse": samples(PredictorCorrectorScheduler.from_config(config, predictor="euler_maruyama", corrector="none")),
    }

    rng = np.random.RandomState(0)
    print("| n | Frechet: real | good sampler | worse sampler | real < worse | coverage: real | good | worse |")
    print("|---|---|---|---|---|---|---|---|")
    for n in COUNTS:
        distance, coverage = {name: [] for name in sets}, {name: [] for name in sets}
        for _ in range(args.repeats if n < 500 else 1):
            for name, images in sets.items():
                try:
                    result = quality.evaluate(images[rng.choice(len(images), n, replace=False)])
                except np.linalg.LinAlgError:  # n = 1: no covariance
                    result = {"frechet_distance": float("nan"), "class_coverage": float("nan")}
                distance[name].append(result["frechet_distance"])
                coverage[name].append(result["class_coverage"])
        distance = {name: np.array(values) for name, values in distance.items()}
        spread = {name: f"{np.nanmean(d):.2f} ({np.nanpercentile(d, 10):.2f}-{np.nanpercentile(d, 90):.2f})"
                  for name, d in distance.items()}
        print(f"| {n} | {spread['real']} | {spread['good']} | {spread['worse']} |"
              f" {np.mean(distance['real'] < distance['worse']):.2f} | {np.nanmean(coverage['real']):.2f} |"
              f" {np.nanmean(coverage['good']):.2f} | {np.nanmean(coverage['worse']):.2f} |", flush=True)

if __name__ == "__main__":
    main()
