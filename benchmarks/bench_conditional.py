"""Conditional sampling against the exact posterior: inpainting a 16-D Gaussian mixture (4 x 4, top half kept) whose
components share nearby means on the kept pixels, so the measurement only partly decides the component.

Rows: the paper's imputation (noiseless), DPS and the twisted diffusion sampler (SMC, measurement noise 0.05) at
several budgets, on the VP SDE with the exact score; within-component variance ratio (1 = exact; Mahalanobis form) and
the largest error of the posterior component weights, over 4 measurements x 250 samples.

    python benchmarks/bench_conditional.py
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "inverse_problems"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_inverse_problems import MASK, SHAPE, _inpainting_posterior, _mixture, _setup  # noqa: E402
from testing_utils import mixture_model  # noqa: E402

from diffusers_sde import PredictorCorrectorScheduler, ProbabilityFlowScheduler, ScoreSDEInverseProblemPipeline  # noqa: E402
from diffusers_sde.inverse_problems import Masking  # noqa: E402


def run(scheduler, method, steps, noise_std=0.0, **options):
    mixture = _mixture()
    operator = Masking(MASK, SHAPE)
    y = _setup(mixture, operator, noise_std=noise_std)
    pipe = ScoreSDEInverseProblemPipeline(unet=mixture_model(mixture, scheduler), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    out = pipe(y, operator, noise_std=noise_std, method=method, num_inference_steps=steps,
               generator=torch.Generator().manual_seed(1), output_type="latent", **options)
    seconds = time.perf_counter() - start
    fidelity = _inpainting_posterior(mixture, y, noise_std).fidelity(out.images.flatten(1))
    return fidelity, out.nfe, seconds


def main():
    torch.set_num_threads(1)
    pc = lambda: PredictorCorrectorScheduler(sde_type="vp", corrector="none")  # noqa: E731
    rows = [
        ("imputation, PC Euler-Maruyama", pc, "imputation", 100, 0.0, {}),
        ("imputation, PC Euler-Maruyama", pc, "imputation", 500, 0.0, {}),
        ("imputation, probability flow Heun", lambda: ProbabilityFlowScheduler(sde_type="vp"), "imputation", 50, 0.0, {}),
        ("DPS step 0.1, PC", pc, "dps", 500, 0.05, dict(step_size=0.1)),
        ("DPS step 0.5, PC", pc, "dps", 500, 0.05, dict(step_size=0.5)),
        ("DPS step 1.0 (Chung et al.'s), PC", pc, "dps", 500, 0.05, dict(step_size=1.0)),
    ] + [(f"SMC (twisted diffusion sampler), {k} particles", pc, "smc", 200, 0.05, dict(num_particles=k))
         for k in (1, 4, 16, 64)]
    print("| method | grid | evaluations per sample | variance ratio | weight error | seconds |")
    print("|---|---|---|---|---|---|")
    for name, make, method, steps, noise_std, options in rows:
        fidelity, nfe, seconds = run(make(), method, steps, noise_std, **options)
        per_sample = nfe * options.get("num_particles", 1)
        print(f"| {name} | {steps} | {per_sample} | {fidelity['variance_ratio']:.3f} |"
              f" {fidelity['mode_weight_error']:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
