"""The Langevin corrector's step size with norms averaged over the batch (the paper's code, our default: samples depend
on their batch) against per-sample norms (batch-invariant), at the dimensions users have: within-component variance
ratio on a closed-form mixture, VE reverse diffusion + Langevin at snr 0.16 (the paper's CIFAR-10 setting).

    python benchmarks/bench_langevin_norms.py
    python benchmarks/bench_langevin_norms.py --dims 16 64 3072 --steps 1000 --batch 200
"""

import argparse
import math
import time

import torch

from diffusers_sde import GaussianMixture, GaussianMixtureModel, PredictorCorrectorScheduler, ScoreSDEPipeline


def run(mixture, shape, norm, steps, batch, seed):
    scheduler = PredictorCorrectorScheduler(sde_type="ve", corrector="langevin", snr=0.16, langevin_norm=norm)
    model = GaussianMixtureModel.for_scheduler(mixture, scheduler, shape[0], shape[1:])
    pipe = ScoreSDEPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
               output_type="latent")
    return mixture.fidelity(out.images.flatten(1))["variance_ratio"]


def shape_for(dim):
    """An image-like (C, H, W) of ``dim`` elements: 1 x s x s, or 3 x s x s for the RGB sizes."""
    side = math.isqrt(dim)
    if side * side == dim:
        return (1, side, side)
    side = math.isqrt(dim // 3)
    return (3, side, side)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64, 256, 1024, 3072])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"VE, reverse diffusion + Langevin, snr 0.16, N = {args.steps}, batch {args.batch}; mixture of 3 components,"
          " scale 0.3. Variance ratio 1 is exact.")
    print("| dimension | batch norms (paper's code) | per-sample norms | per-sample bias vs batch | seconds |")
    print("|---|---|---|---|---|")
    for dim in args.dims:
        start = time.perf_counter()
        shape = shape_for(dim)
        mixture = GaussianMixture.random(dim, num_components=3, spread=2.0, scale=0.3)
        batch_norms = run(mixture, shape, "batch", args.steps, args.batch, args.seed)
        per_sample = run(mixture, shape, "per_sample", args.steps, args.batch, args.seed)
        print(f"| {dim} ({'x'.join(map(str, shape))}) | {batch_norms:.4f} | {per_sample:.4f} |"
              f" {per_sample / batch_norms - 1:+.1%} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
