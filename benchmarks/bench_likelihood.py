"""Probability-flow likelihood: this package's solver against the original algorithm, on an exact score.

The original (score_sde's ``likelihood.py``): scipy ``solve_ivp`` RK45 with rtol = atol = 1e-5 over the flattened
batch and log-det, one Rademacher probe per solve. Ours: torchdiffeq dopri5 at the same tolerances with one Rademacher
probe (the same estimator), with 4 probes, and with the exact divergence; then at the looser tolerances of
``--loose-tol`` with 1, 2 and 4 probes and the exact divergence (which isolates the solver's own error). The network is
the exact score of a Gaussian mixture, so every estimate is compared with the closed-form log p_eps(x).

Columns, per method and SDE (bits/dim, over the same data points):
  bias     mean of (estimate - truth), +- its standard error: the Hutchinson estimator should be unbiased;
  rmse     root mean square per-sample error (probe noise + solver error + prior gap);
  prior    mean of log p_1(x_1) - log N(x_1; prior): the part of the error owed to the SDE's prior, not the solver;
  nfe      network evaluations per solve; time: wall seconds per solve of the whole batch.

Then the digits section: bits/dim of the held-out sklearn digits (never seen in training) under the embedded digits
model, their integer values 0..16 dequantized at 17 levels, with the 95% interval of the mean over images, NFE and wall
time, at the paper's setting (rtol = atol = 1e-5, one Rademacher probe, one dequantization) and at ``--fast-tol``
with 4 probes.

Usage: .venv/bin/python benchmarks/bench_likelihood.py [--dim 16] [--samples 64] [--tol 1e-5] [--loose-tol 1e-4 1e-3 3e-3 1e-2]
       [--fast-tol 3e-3] [--seed 0] [--digits-images 500] [--digits-only]
"""

import argparse
import math
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

from diffusers_sde import GaussianMixture, GaussianMixtureModel, ProbabilityFlowODE, ProbabilityFlowScheduler
from diffusers_sde import ScoreSDEPipeline, score_function
from diffusers_sde.cli import DEFAULT_MODEL
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split

torch.set_num_threads(1)


def setup(sde_type, dim, seed):
    scheduler = ProbabilityFlowScheduler(sde_type=sde_type)
    mixture = GaussianMixture.random(dim, generator=torch.Generator().manual_seed(seed))
    model = GaussianMixtureModel.for_scheduler(mixture, scheduler, dim, 1)
    return scheduler, mixture, model


def original_rk45(ode, x, eps, tol, generator):
    """score_sde's likelihood: RK45 over the flattened (x, log-det) state, one Rademacher probe for the solve."""
    shape, batch = x.shape, x.shape[0]
    probe = (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(x.dtype)
    nfe = 0

    def func(t, y):
        nonlocal nfe
        nfe += 1
        sample = torch.from_numpy(y[: -batch]).view(shape).requires_grad_(True)
        with torch.enable_grad():
            drift = ode.drift(sample, torch.tensor(t, dtype=x.dtype))
            (vjp,) = torch.autograd.grad(drift, sample, probe)
        divergence = (vjp * probe).flatten(1).sum(1)
        return np.concatenate([drift.detach().numpy().ravel(), divergence.numpy()])

    start = np.concatenate([x.numpy().ravel(), np.zeros(batch)])
    solution = solve_ivp(func, (eps, 1.0), start, rtol=tol, atol=tol, method="RK45")
    end = torch.from_numpy(solution.y[:, -1])
    latents, delta = end[: -batch].view(shape), end[-batch:]
    return ode.sde.prior_log_prob(latents) + delta, latents, nfe


def run(sde_type, dim, num_samples, tol, loose_tols, seed):
    scheduler, mixture, model = setup(sde_type, dim, seed)
    sde = scheduler.sde
    x = mixture.sample(num_samples, generator=torch.Generator().manual_seed(seed + 1))[0].view(num_samples, dim, 1, 1)
    eps = 1e-5
    a, s = sde.marginal(torch.tensor(eps, dtype=torch.float64))
    truth = mixture.log_prob(x.flatten(1), a, s)
    a1, s1 = sde.marginal(torch.tensor(1.0, dtype=torch.float64))
    score = score_function(model, scheduler)
    ode = ProbabilityFlowODE(sde, score, rtol=tol, atol=tol)

    methods = {
        ("scipy RK45, 1 probe (original)", tol): lambda g: original_rk45(ode, x, eps, tol, g),
        ("dopri5, 1 Rademacher probe", tol): lambda g: _ours(ode, x, eps, g, divergence="hutchinson", num_probes=1),
        ("dopri5, 4 Rademacher probes", tol): lambda g: _ours(ode, x, eps, g, divergence="hutchinson", num_probes=4),
        ("dopri5, exact divergence", tol): lambda g: _ours(ode, x, eps, g, divergence="exact"),
    }
    for loose in loose_tols:
        loose_ode = ProbabilityFlowODE(sde, score, rtol=loose, atol=loose)
        for probes in (1, 2, 4):
            methods[(f"dopri5, {probes} Rademacher probe{'s' if probes > 1 else ''}", loose)] = (
                lambda g, o=loose_ode, k=probes: _ours(o, x, eps, g, divergence="hutchinson", num_probes=k))
        methods[("dopri5, exact divergence", loose)] = lambda g, o=loose_ode: _ours(o, x, eps, g, divergence="exact")
    rows = []
    for (name, method_tol), method in methods.items():
        generator = torch.Generator().manual_seed(seed + 2)
        start = time.perf_counter()
        log_prob, latents, nfe = method(generator)
        seconds = time.perf_counter() - start
        error = (truth - log_prob) / (dim * math.log(2))  # NLL error in bits/dim
        prior_gap = (mixture.log_prob(latents.flatten(1), a1, s1) - sde.prior_log_prob(latents)) / (dim * math.log(2))
        rows.append((name, method_tol, error.mean().item(), error.std().item() / math.sqrt(num_samples),
                     error.pow(2).mean().sqrt().item(), prior_gap.mean().item(), nfe, seconds))
    return rows


def _ours(ode, x, eps, generator, **kwargs):
    out = ode.log_likelihood(x, eps=eps, generator=generator, **kwargs)
    return out.log_prob, out.latents, out.nfe


def digits(num_images, tol, num_probes, seed):
    """bits/dim of the first ``num_images`` held-out digits under the embedded model, 17-level dequantization.

    Returns (mean, 95% half-width, NFE of the one batched solve, wall seconds).
    """
    pipe = ScoreSDEPipeline.from_pretrained(DEFAULT_MODEL)
    pipe.set_progress_bar_config(disable=True)
    images, _ = digits_split("heldout")
    pixels = torch.from_numpy(images[:num_images]).to(torch.uint8)[:, None]  # integers 0..16, (N, 1, 8, 8)
    start = time.perf_counter()
    out = pipe.log_likelihood(pixels, generator=torch.Generator().manual_seed(seed), rtol=tol, atol=tol,
                              num_probes=num_probes, num_levels=DIGITS_GREY_LEVELS + 1)
    seconds = time.perf_counter() - start
    values = out.bits_per_dim
    # 95% normal-approximation interval of the mean over images (image-to-image spread and estimator noise).
    return values.mean().item(), 1.96 * values.std().item() / math.sqrt(len(values)), out.nfe, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--loose-tol", dest="loose_tols", type=float, nargs="*", default=[1e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--fast-tol", dest="fast_tol", type=float, default=3e-3, help="digits: the loose setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--digits-images", dest="digits_images", type=int, default=500)
    parser.add_argument("--digits-only", dest="digits_only", action="store_true", help="skip the mixture section")
    args = parser.parse_args()
    if not args.digits_only:
        print(f"Gaussian mixture, dim {args.dim}, {args.samples} samples, eps = 1e-5, float64,"
              f" torch threads {torch.get_num_threads()}")
        print(f"{'sde':6} {'method':32} {'tol':>6} {'bias (bpd)':>20} {'rmse (bpd)':>11} {'prior (bpd)':>12}"
              f" {'nfe':>5} {'time (s)':>9}")
        for sde_type in ("ve", "vp", "subvp"):
            rows = run(sde_type, args.dim, args.samples, args.tol, args.loose_tols, args.seed)
            for name, tol, bias, stderr, rmse, prior, nfe, seconds in rows:
                print(f"{sde_type:6} {name:32} {tol:6.0e} {bias:+10.5f} +- {stderr:7.5f} {rmse:11.5f} {prior:+12.6f}"
                      f" {nfe:5d} {seconds:9.2f}")
    settings = [(args.tol, 1), (args.fast_tol, 4)]
    print(f"\nHeld-out sklearn digits ({args.digits_images} images, never seen in training), embedded digits-vp model,"
          f" {DIGITS_GREY_LEVELS + 1}-level dequantization, 1 repeat, Rademacher probes, eps = 1e-5, one batch")
    print(f"{'tol':>6} {'probes':>6} {'bits/dim (95% CI)':>22} {'nfe':>5} {'time (s)':>9}")
    for tol, probes in settings:
        mean, half_width, nfe, seconds = digits(args.digits_images, tol, probes, args.seed)
        print(f"{tol:6.0e} {probes:6d} {mean:12.4f} +- {half_width:.4f} {nfe:5d} {seconds:9.1f}")


if __name__ == "__main__":
    main()
