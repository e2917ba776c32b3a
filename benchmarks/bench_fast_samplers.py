"""Accuracy against network evaluations for every sampler of diffusers-sde, on the exact score of a Gaussian mixture.

Per SDE (VE, VP, sub-VP) every sampler starts from the same prior draws of a 64-dimensional, 3-component mixture and
is scored by the mixture's fidelity: |variance_ratio - 1| (within-component variance, 1 for exact samples) and the
mode-weight error. Side by side: diffusers' own ``ScoreSdeVeScheduler`` predictor-corrector loop (VE), an
Euler-Maruyama loop written from the paper, and scipy's RK45 (rtol = atol = 1e-5) on the probability-flow ODE, all on
the same exact score. Also measured: torchsde's per-step overhead against a small ``UNet2DModel`` forward pass.

    .venv/bin/python benchmarks/bench_fast_samplers.py [--batch-size 1000] [--quick] [--sde subvp] [--only exponential]
    .venv/bin/python benchmarks/bench_fast_samplers.py --gotta-go-fast-bias

Prints a table and, on a full run (every SDE, every sampler), the torchsde overhead and docs/fast_samplers.png.
``--gotta-go-fast-bias`` instead measures the variance bias of Gotta Go Fast's rejected steps on a single Gaussian
N(0.7, 0.09 I): the solver as it is (the rejected step's Brownian path kept) against the published rule (redrawn).
"""

import argparse
import math
import time
from pathlib import Path

import torch

from diffusers_sde import (
    EDMHeunScheduler,
    ExponentialIntegratorScheduler,
    GaussianMixture,
    GaussianMixtureModel,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    ScoreSDEPipeline,
)
from diffusers_sde.solvers import remove_noise

DOCS = Path(__file__).resolve().parent.parent / "docs"
SHAPE = (1, 8, 8)


def exact_score(mixture, sde):
    def score(x, t):
        a, s = sde.marginal(torch.as_tensor(t, dtype=torch.float64))
        return mixture.score(x.flatten(1), a, s).view_as(x).to(x.dtype)

    return score


def euler_maruyama_loop(sde, score, latents, eps, num_steps, generator):
    """Song et al. Alg. (Euler-Maruyama predictor, no corrector) on the reverse SDE, written from Eq. 6."""
    times = torch.linspace(1.0, eps, num_steps, dtype=torch.float64)
    dt = (1.0 - eps) / (num_steps - 1)
    x = latents
    for t in times[:-1].tolist():
        drift = sde.reverse_drift(x, t, score(x, t)).to(x.dtype)
        diffusion = sde.diffusion(torch.tensor(t)).item()
        x = x - drift * dt + diffusion * math.sqrt(dt) * torch.randn(x.shape, generator=generator)
    return remove_noise(sde, x, score(x, eps), eps), num_steps


def diffusers_ve_loop(sde, score, latents, num_steps, generator):
    """diffusers' ScoreSdeVeScheduler (step_correct then step_pred per time), as ScoreSdeVePipeline runs it."""
    from diffusers import ScoreSdeVeScheduler

    scheduler = ScoreSdeVeScheduler(sigma_min=sde.sigma_min, sigma_max=sde.sigma_max, snr=0.16, sampling_eps=1e-5)
    scheduler.set_timesteps(num_steps)
    scheduler.set_sigmas(num_steps)
    x, nfe = latents, 0
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i].item()
        model_output = score(x, sde.time_from_std(torch.tensor(sigma, dtype=torch.float64)))
        x = scheduler.step_correct(model_output, x, generator=generator).prev_sample
        model_output = score(x, sde.time_from_std(torch.tensor(sigma, dtype=torch.float64)))
        output = scheduler.step_pred(model_output, t, x, generator=generator)
        x, x_mean = output.prev_sample, output.prev_sample_mean
        nfe += 2
    return x_mean, nfe


def scipy_rk45(sde, score, latents, eps):
    """The paper's ODE sampler: RK45 with rtol = atol = 1e-5 on Eq. 13, then the noise removal."""
    from scipy.integrate import solve_ivp

    shape = latents.shape

    def velocity(t, y):
        x = torch.from_numpy(y).view(shape)
        return sde.reverse_drift(x, t, score(x, t), probability_flow=True).flatten().numpy()

    solution = solve_ivp(velocity, (1.0, eps), latents.double().flatten().numpy(), rtol=1e-5, atol=1e-5, method="RK45")
    x = torch.from_numpy(solution.y[:, -1]).view(shape).to(latents.dtype)
    return remove_noise(sde, x, score(x, eps), eps), solution.nfev + 1


def pipeline_runs(mixture, sde_type, batch_size, quick, only=None):
    """(label, nfe, samples) for every sampler of the project (those whose label contains ``only``, if given)."""
    base = PredictorCorrectorScheduler(sde_type=sde_type)
    model = GaussianMixtureModel.for_scheduler(mixture, base, SHAPE[0], SHAPE[1])
    pipe = ScoreSDEPipeline(unet=model, scheduler=base)
    pipe.set_progress_bar_config(disable=True)
    few = [10, 20, 50] if quick else [10, 15, 20, 24, 30, 50]
    many = [100, 500] if quick else [100, 250, 500, 1000]
    configs = [
        ("exponential integrator (3M, log-SNR)", ExponentialIntegratorScheduler.from_config(base.config), few, {}),
        ("exponential integrator (2M, log-SNR)",
         ExponentialIntegratorScheduler.from_config(base.config, solver_order=2), few, {}),
        ("EDM Heun (Karras rho=7)", EDMHeunScheduler.from_config(base.config), [n // 2 + 1 for n in few], {}),
        ("probability-flow Heun (uniform t)", ProbabilityFlowScheduler.from_config(base.config),
         [n // 2 + 1 for n in few + [100]], {}),
        ("predictor-corrector (paper default)", base, many, {}),
        ("torchsde euler", base, many[:-1], dict(sampler="torchsde")),
        ("torchsde srk", base, [20, 50] if quick else [20, 50, 100], dict(sampler="torchsde", method="srk")),
        ("gotta go fast", base, [None], dict(sampler="gotta_go_fast")),
        ("gotta go fast (rtol 0.05)", base, [None], dict(sampler="gotta_go_fast", rtol=0.05)),
        ("probability-flow ODE RK45 (rtol 1e-5)", base, [None], dict(sampler="adaptive_ode")),
        ("probability-flow ODE RK45 (rtol 1e-3)", base, [None], dict(sampler="adaptive_ode", rtol=1e-3, atol=1e-3)),
    ]
    for label, scheduler, steps, kwargs in configs:
        if only is not None and only not in label:
            continue
        pipe.scheduler = scheduler
        for num_steps in steps:
            out = pipe(batch_size=batch_size, num_inference_steps=num_steps, generator=torch.Generator().manual_seed(0),
                       output_type="latent", **kwargs)
            yield label, out.nfe, out.images.flatten(1)


def baseline_runs(mixture, sde, eps, batch_size, quick):
    score = exact_score(mixture, sde)
    latents = torch.randn((batch_size, *SHAPE), generator=torch.Generator().manual_seed(0)) * sde.prior_std
    for num_steps in [100, 500] if quick else [100, 250, 500, 1000]:
        sample, nfe = euler_maruyama_loop(sde, score, latents, eps, num_steps, torch.Generator().manual_seed(1))
        yield "Euler-Maruyama loop (paper)", nfe, sample.flatten(1)
    if sde.sde_type == "ve":
        for num_steps in [100, 500] if quick else [100, 250, 500, 1000]:
            sample, nfe = diffusers_ve_loop(sde, score, latents, num_steps, torch.Generator().manual_seed(1))
            yield "diffusers ScoreSdeVeScheduler", nfe, sample.flatten(1)
    sample, nfe = scipy_rk45(sde, score, latents, eps)
    yield "scipy RK45 (rtol=atol=1e-5)", nfe, sample.flatten(1)


class _RedrawnPaths:
    """The published Gotta Go Fast rule: every proposal, a rejected step's retry included, draws fresh noise."""

    def __init__(self, batch, shape, like):
        pass

    def propose(self, active, step, noise):
        return step.sqrt().to(noise.dtype).view(-1, *([1] * (noise.dim() - 1))) * noise

    def advance(self, done):
        pass


def gotta_go_fast_bias():
    """Relative variance error of Gotta Go Fast on N(0.7, 0.09 I) with the rejected path kept and redrawn."""
    from unittest import mock

    from diffusers_sde import VESDE, VPSDE
    from diffusers_sde.solvers import gotta_go_fast

    print(f"| {'dim':>3s} | SDE | rtol | samples | kept: NFE, var error | redrawn: NFE, var error | sampling noise |")
    print("|-----|-----|------|---------|----------------------|-------------------------|----------------|")
    for dim, batch in ((16, 8000), (64, 2000)):
        for sde, eps in ((VPSDE(), 1e-3), (VESDE(), 1e-5)):
            latents = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0)) * sde.prior_std
            a, s = sde.marginal(torch.tensor(eps, dtype=torch.float64))
            exact = (a**2 * 0.09**2 / (a**2 * 0.09 + s**2)).item()  # Var of the noise-removed marginal at eps
            score = exact_score(GaussianMixture([1.0], torch.full((1, dim), 0.7), torch.full((1, dim), 0.09)), sde)
            for rtol in (0.05, 0.01):
                row = []
                for paths in (gotta_go_fast._BrownianPaths, _RedrawnPaths):
                    with mock.patch.object(gotta_go_fast, "_BrownianPaths", paths):
                        sample, nfe = gotta_go_fast.sample_gotta_go_fast(
                            sde, lambda x, t: score(x, t).to(x.dtype), latents, eps, rtol=rtol,
                            generator=torch.Generator().manual_seed(1))
                    row.append(f"{nfe:5d}, {sample.double().var().item() / exact - 1:+.4f}")
                print(f"| {dim:3d} | {sde.sde_type:3s} | {rtol:4g} | {batch:7d} | {row[0]:>20s} | {row[1]:>23s} |"
                      f" {math.sqrt(2 / (batch * dim)):14.4f} |", flush=True)


def torchsde_overhead():
    """Seconds per step: sdeint euler vs a hand-written Euler loop on a trivial drift, and a small UNet2DModel forward."""
    import torchsde
    from diffusers import UNet2DModel

    from diffusers_sde.solvers import brownian_motion

    batch, steps = 64, 100
    y0 = torch.randn(batch, 3 * 32 * 32)

    class Trivial(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return torch.ones_like(y)

    start = time.perf_counter()
    x = y0
    for _ in range(steps):
        x = x - x / steps + math.sqrt(1 / steps) * torch.randn_like(x)
    hand = (time.perf_counter() - start) / steps
    bm = brownian_motion(y0.shape, 0.0, 1.0, torch.Generator().manual_seed(0), dt=1 / steps)
    start = time.perf_counter()
    torchsde.sdeint(Trivial(), y0, torch.tensor([0.0, 1.0]), bm=bm, method="euler", dt=1 / steps)
    sdeint = (time.perf_counter() - start) / steps
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3)
    images = y0.view(batch, 3, 32, 32)
    with torch.no_grad():
        unet(images, torch.tensor(10))
        start = time.perf_counter()
        for _ in range(3):
            unet(images, torch.tensor(10))
    forward = (time.perf_counter() - start) / 3
    return hand, sdeint, forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="fewer step counts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sde", nargs="+", choices=("ve", "vp", "subvp"), default=["ve", "vp", "subvp"],
                        help="SDEs to run (default: all)")
    parser.add_argument("--only", help="only the project's samplers whose label contains this (baselines always run)")
    parser.add_argument("--gotta-go-fast-bias", action="store_true",
                        help="only the rejected-step variance bias of Gotta Go Fast (kept vs redrawn Brownian path)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.gotta_go_fast_bias:
        gotta_go_fast_bias()
        return
    mixture = GaussianMixture.random(64, num_components=3, spread=2.0, scale=0.3)
    results = {}
    for sde_type in args.sde:
        base = PredictorCorrectorScheduler(sde_type=sde_type)
        runs = list(pipeline_runs(mixture, sde_type, args.batch_size, args.quick, args.only))
        runs += list(baseline_runs(mixture, base.sde, base.config.sampling_eps, args.batch_size, args.quick))
        rows = []
        print(f"\n## {sde_type.upper()} (batch {args.batch_size}, 64-dim mixture)")
        print(f"| {'sampler':40s} | {'NFE':>5s} | {'|var ratio - 1|':>15s} | {'mode-weight err':>15s} |")
        print(f"|{'-' * 42}|{'-' * 7}|{'-' * 17}|{'-' * 17}|")
        for label, nfe, samples in runs:
            fidelity = mixture.fidelity(samples)
            error = abs(fidelity["variance_ratio"] - 1)
            rows.append((label, nfe, error, fidelity["mode_weight_error"]))
            print(f"| {label:40s} | {nfe:5d} | {error:15.4f} | {fidelity['mode_weight_error']:15.4f} |", flush=True)
        results[sde_type] = rows
    if args.only is not None or len(args.sde) < 3:
        return  # a partial run leaves the figure of the last full run in place
    hand, sdeint, forward = torchsde_overhead()
    print(f"\ntorchsde overhead (batch 64x3x32x32): hand-written Euler {hand * 1e3:.2f} ms/step, sdeint euler"
          f" {sdeint * 1e3:.2f} ms/step -> overhead {(sdeint - hand) * 1e3:.2f} ms/step;"
          f" small UNet2DModel forward {forward * 1e3:.1f} ms ({100 * (sdeint - hand) / forward:.1f}% of a forward)")
    plot(results, noise_floor=math.sqrt(2 / (64 * args.batch_size)))  # std of the ratio for exact samples


def plot(results, noise_floor):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(18, 5.5), sharey=True)
    colors = plt.get_cmap("tab20").colors
    # One style per sampler across the panels (VE lists every sampler, diffusers' VE scheduler included).
    styles = {label: index for index, label in enumerate(dict.fromkeys(row[0] for rows in results.values() for row in rows))}
    for axis, (sde_type, rows) in zip(axes, results.items()):
        for label, index in styles.items():
            if not any(name == label for name, *_ in rows):
                continue
            points = sorted((nfe, max(error, 1e-4)) for name, nfe, error, _ in rows if name == label)
            nfes, errors = zip(*points)
            axis.plot(nfes, errors, marker="osD^v<>"[index % 7], color=colors[index % 20], label=label,
                      linestyle="-" if index < 7 else "--")
        axis.axhline(noise_floor, color="grey", linewidth=0.8, linestyle=":", label="sampling noise (1 std)")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(f"{sde_type.upper()}: 64-dim Gaussian mixture, exact score")
        axis.set_xlabel("network evaluations (NFE)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("|within-component variance ratio - 1|")
    axes[0].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    DOCS.mkdir(exist_ok=True)
    figure.savefig(DOCS / "fast_samplers.png", dpi=110)
    print(f"wrote {DOCS / 'fast_samplers.png'}")


if __name__ == "__main__":
    main()
