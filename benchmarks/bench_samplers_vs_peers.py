"""Every fast sampler of diffusers-sde against k-diffusion 0.1.1's and diffusers' samplers, in one run, on the exact
score of the issue-12 mixtures: 64 dimensions, 10 components, component std 0.02-0.15 per coordinate; VE with
sigma_min 0.001 and sigma_max 50, VP and sub-VP (beta 0.1 -> 20); every run ends at t = 1e-5 with the noise removal.

For each sampler, SDE, NFE budget and seed the samples are scored by the mixture's within-component variance ratio
(1 for exact samples) and mode weights. The summary gives the NFE from which every larger budget of the grid stays
within 1% on every seed (with mode weights within ``MODE_TOLERANCE``), never a first crossing, and the errors at 10,
20 and 50 NFE (worst seed).

k-diffusion is a benchmark-only requirement, not a dependency of the package:

    .venv/bin/pip install --no-deps k-diffusion==0.1.1.post1   # its sampling module needs scipy, torchdiffeq, torchsde
    .venv/bin/python benchmarks/bench_samplers_vs_peers.py [--sde ve vp subvp] [--seeds 3] [--batch-size 1000]
        [--only SUBSTRING] [--no-peers]

k-diffusion's package ``__init__`` imports its training code (torchvision, scikit-image, ...); only its ``sampling``
module is loaded here, with ``append_dims`` (the one helper it takes from ``k_diffusion.utils``) provided in place of
``utils``. Peers see the same denoiser, written from the SDE: k-diffusion and EDMEulerScheduler work in
x_hat = x / a against sigma = s / a (exact for VP and sub-VP too); diffusers' DPMSolverMultistepScheduler and
UniPCMultistepScheduler are discrete-time DDPM schedulers, so they run on the VP mixture under DDPM's own discrete
kernel (beta 1e-4 -> 0.02, the discrete twin of the VP SDE) and do not apply to VE or sub-VP; with their default
timestep spacing their last grid level is t = 1000 / n (noise 0.18 at 20 steps) before the final jump to the data,
so a tuned variant (log-SNR or Karras levels) is run as well.
"""

import argparse
import importlib.util
import inspect
import math
import sys
import types
from pathlib import Path

import torch

from diffusers_sde import (
    EDMHeunScheduler,
    ERSDEScheduler,
    ExponentialIntegratorScheduler,
    GaussianMixture,
    RestartScheduler,
    SDEDPMSolverScheduler,
    UniPCScheduler,
    make_sde,
)
from diffusers_sde.sde import tweedie_denoise

DIM, NUM_COMPONENTS, STD_RANGE = 64, 10, (0.02, 0.15)
SDE_CONFIGS = {
    "ve": dict(sde_type="ve", sigma_min=0.001, sigma_max=50.0),
    "vp": dict(sde_type="vp", beta_min=0.1, beta_max=20.0),
    "subvp": dict(sde_type="subvp", beta_min=0.1, beta_max=20.0),
}
SAMPLING_EPS = 1e-5
NFE_GRID = (10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150)
TOLERANCE = 0.01
MODE_TOLERANCE = 0.04  # about 3 standard errors of the largest weight's share at batch 1000


def issue_mixture(seed=0):
    """The issue-12 mixture: 10 components in 64-D, per-coordinate std uniform in [0.02, 0.15], unequal weights."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(NUM_COMPONENTS, DIM, generator=generator, dtype=torch.float64)
    low, high = STD_RANGE
    stds = low + (high - low) * torch.rand(NUM_COMPONENTS, DIM, generator=generator, dtype=torch.float64)
    weights = torch.arange(1, NUM_COMPONENTS + 1, dtype=torch.float64)
    return GaussianMixture(weights / weights.sum(), means, stds**2)


class MixtureScore:
    """``mixture.score`` through matrix products (the quadratic forms of diagonal Gaussians expand into x^2 / v,
    x mu / v and mu^2 / v terms): the same closed form, about 10x faster at 10 components; checked against
    ``GaussianMixture.score`` at construction."""

    def __init__(self, mixture):
        self.mixture = mixture
        self.log_weights, self.means, self.variances = mixture.weights.log(), mixture.means, mixture.variances
        probe = torch.randn(8, self.means.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for a, s in ((1.0, 0.001), (0.5, 0.8), (0.01, 1.0)):
            torch.testing.assert_close(self(probe, a, s), mixture.score(probe, a, s), rtol=1e-9, atol=1e-9)

    def __call__(self, x, a, s):
        a, s = (torch.as_tensor(value, dtype=torch.float64).reshape(-1, 1) for value in (a, s))  # (B or 1, 1)
        if a.shape[0] == 1:
            variances = a**2 * self.variances + s**2  # (K, D)
            precision, means = 1 / variances, a * self.means
            quadratic = (x**2) @ precision.T - 2 * x @ (means * precision).T + (means**2 * precision).sum(1)
            log_probs = self.log_weights - 0.5 * (quadratic + torch.log(variances).sum(1))
            responsibilities = torch.softmax(log_probs, dim=1)
            return -(x * (responsibilities @ precision) - responsibilities @ (means * precision))
        return self.mixture.score(x, a[:, 0], s[:, 0])  # per-sample levels (k-diffusion's sigma vectors)


def exact_score(mixture, sde):
    fast = MixtureScore(mixture)

    def score(x, t):
        a, s = sde.marginal(torch.as_tensor(t, dtype=torch.float64))
        return fast(x, a, s)

    return score


# --- diffusers-sde ---------------------------------------------------------------------------------------------------
def ours(sde_type):
    """(label, make scheduler, NFE -> num_inference_steps) for every fixed-step sampler of ours."""
    config = dict(SDE_CONFIGS[sde_type], sampling_eps=SAMPLING_EPS, prediction_type="score", timestep_type="continuous")
    one = lambda nfe: nfe  # noqa: E731 (one evaluation per grid time)
    heun = lambda nfe: (nfe + 1) // 2  # noqa: E731 (2N - 1 evaluations)
    return [
        ("ours EI 3M (default grid)", lambda: ExponentialIntegratorScheduler(**config), one),
        ("ours EI 2M", lambda: ExponentialIntegratorScheduler(**config, solver_order=2), one),
        ("ours EI 3M clipped log(100) (old default)",
         lambda: ExponentialIntegratorScheduler(**config, lambda_max_clipped=math.log(100.0)), one),
        ("ours SDE-DPM-Solver++ 3M", lambda: SDEDPMSolverScheduler(**config), one),
        ("ours SDE-DPM-Solver++ 2M", lambda: SDEDPMSolverScheduler(**config, solver_order=2), one),
        ("ours SDE-DPM-Solver++ 1S", lambda: SDEDPMSolverScheduler(**config, solver_order=1), one),
        ("ours ER-SDE-Solver-3 (er_sde_5)", lambda: ERSDEScheduler(**config), one),
        ("ours ER-SDE-Solver-2 (er_sde_5)", lambda: ERSDEScheduler(**config, solver_order=2), one),
        ("ours ER-SDE-Solver-3 (reverse_sde)", lambda: ERSDEScheduler(**config, noise_scale_function="reverse_sde"),
         one),
        ("ours ER-SDE-Solver-3 (ode)", lambda: ERSDEScheduler(**config, noise_scale_function="ode"), one),
        ("ours EDM Heun", lambda: EDMHeunScheduler(**config), heun),
        ("ours EDM Heun churn 5", lambda: EDMHeunScheduler(**config, s_churn=5.0, s_tmin=0.01, s_tmax=5.0), heun),
        ("ours UniPC 3 (bh2, UniC)", lambda: UniPCScheduler(**config), one),
        ("ours UniPC 2 (bh2, UniC)", lambda: UniPCScheduler(**config, solver_order=2), one),
        ("ours UniPC 2 (bh1, UniC)", lambda: UniPCScheduler(**config, solver_order=2, solver_type="bh1"), one),
        # Restart's CIFAR-10 interval (K = 2 x N_restart = 3 grid times); budgets under 15 NFE cannot hold it.
        ("ours Restart (paper's interval)", lambda: RestartScheduler(**config), heun),
    ]


def run_ours(make, steps, mixture, sde_type, nfe, batch_size, seed):
    scheduler = make()
    if isinstance(scheduler, RestartScheduler) and steps(nfe) < scheduler._restart_steps + 2:
        return None, None
    score = exact_score(mixture, scheduler.sde)
    generator = torch.Generator().manual_seed(seed)
    x = scheduler.init_noise_sigma * torch.randn(batch_size, DIM, generator=generator, dtype=torch.float64)
    scheduler.set_timesteps(steps(nfe))
    for t in scheduler.timesteps:
        x = scheduler.step(score(x, scheduler.parameterization.time_from_model_time(t.double())), t, x,
                           generator=generator).prev_sample
    return x, len(scheduler.timesteps)


# --- k-diffusion -----------------------------------------------------------------------------------------------------
def load_k_diffusion_sampling():
    """k_diffusion.sampling without the package __init__ (training imports); None when k-diffusion is missing."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        return None
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, target_dims: x[(...,) + (None,) * (target_dims - x.ndim)]
    sys.modules.setdefault("k_diffusion", package)
    sys.modules.setdefault("k_diffusion.utils", utils)
    sampling_spec = importlib.util.spec_from_file_location(
        "k_diffusion.sampling", Path(package.__path__[0]) / "sampling.py")
    sampling = importlib.util.module_from_spec(sampling_spec)
    sampling_spec.loader.exec_module(sampling)
    return sampling


class CountingDenoiser:
    """k-diffusion's model convention D(x_hat, sigma) for the SDE's exact denoiser, with x = a x_hat, sigma = s / a."""

    def __init__(self, mixture, sde):
        self.score, self.sde, self.calls = MixtureScore(mixture), sde, 0

    def __call__(self, x_hat, sigma, **kwargs):
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=torch.float64).flatten()[:1]  # every sampler here passes one level
        t = self.sde.time_from_log_snr(-torch.log(sigma))
        a, s = self.sde.marginal(t)
        x = a * x_hat
        return tweedie_denoise(x, self.score(x, a, s), a, s)


def sigma_range(sde):
    (a_max, s_max), (a_min, s_min) = (sde.marginal(torch.tensor(t, dtype=torch.float64)) for t in (1.0, SAMPLING_EPS))
    return (s_min / a_min).item(), (s_max / a_max).item()


def k_diffusion_runs(sampling):
    fixed = [("lms", sampling.sample_lms, 1), ("heun", sampling.sample_heun, 2), ("dpmpp_2m", sampling.sample_dpmpp_2m, 1),
             ("dpmpp_2m_sde", sampling.sample_dpmpp_2m_sde, 1), ("dpmpp_3m_sde", sampling.sample_dpmpp_3m_sde, 1)]
    schedules = [("karras", sampling.get_sigmas_karras), ("exponential", sampling.get_sigmas_exponential)]
    return [(f"k-diffusion {name} ({schedule})", function, per_step, get_sigmas)
            for name, function, per_step in fixed for schedule, get_sigmas in schedules]


def run_k_diffusion(sampling, function, per_step, get_sigmas, mixture, sde, nfe, batch_size, seed):
    sigma_min, sigma_max = sigma_range(sde)
    # Heun's last step (to sigma = 0) is an Euler step: n steps cost 2n - 1 evaluations.
    steps = (nfe + 1) // 2 if per_step == 2 else nfe
    sigmas = get_sigmas(steps, sigma_min, sigma_max).to(torch.float64)
    torch.manual_seed(seed)  # k-diffusion draws its noise from the global generator
    x = sigma_max * torch.randn(batch_size, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    model = CountingDenoiser(mixture, sde)
    # The SDE samplers' default Brownian-tree noise costs minutes per run at this batch; on a fixed grid independent
    # Gaussian increments per step have the same law, so they get k-diffusion's own i.i.d. noise sampler.
    takes_noise = "noise_sampler" in inspect.signature(function).parameters
    extra = {"noise_sampler": sampling.default_noise_sampler(x)} if takes_noise else {}
    return function(model, x, sigmas, disable=True, **extra), model.calls


def run_k_diffusion_adaptive(sampling, mixture, sde, rtol, batch_size, seed):
    sigma_min, sigma_max = sigma_range(sde)
    torch.manual_seed(seed)
    x = sigma_max * torch.randn(batch_size, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    model = CountingDenoiser(mixture, sde)
    out = sampling.sample_dpm_adaptive(model, x, sigma_min, sigma_max, rtol=rtol, atol=rtol / 10, disable=True)
    return out, model.calls


# --- diffusers -------------------------------------------------------------------------------------------------------
def run_diffusers_edm_euler(mixture, sde, nfe, batch_size, seed, s_churn):
    """diffusers' EDMEulerScheduler (Karras sigmas, final sigma 0) in x_hat = x / a; one evaluation per step."""
    from diffusers import EDMEulerScheduler

    sigma_min, sigma_max = sigma_range(sde)
    scheduler = EDMEulerScheduler(sigma_min=sigma_min, sigma_max=sigma_max)
    scheduler.set_timesteps(nfe)
    scheduler.sigmas = scheduler.sigmas.to(torch.float64)
    model = CountingDenoiser(mixture, sde)
    generator = torch.Generator().manual_seed(seed)
    x = sigma_max * torch.randn(batch_size, DIM, generator=generator, dtype=torch.float64)
    for index, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[index]
        scheduler.scale_model_input(x, t)  # the exact denoiser takes x_hat itself; the call only satisfies the check
        denoised = model(x, sigma)
        # The scheduler's preconditioning is linear in the output: invert it so it rebuilds the exact denoiser.
        base = scheduler.precondition_outputs(x, torch.zeros_like(x), sigma)
        unit = scheduler.precondition_outputs(x, torch.ones_like(x), sigma) - base
        x = scheduler.step((denoised - base) / unit, t, x, s_churn=s_churn, generator=generator).prev_sample
    return x, model.calls


def run_diffusers_discrete_vp(cls_name, mixture, nfe, batch_size, seed, **kwargs):
    """A diffusers DDPM-family multistep scheduler on the VP mixture under DDPM's discrete kernel (epsilon model)."""
    import diffusers

    scheduler = getattr(diffusers, cls_name)(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **kwargs)
    scheduler.set_timesteps(nfe)
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, DIM, generator=generator, dtype=torch.float64)
    score, calls = MixtureScore(mixture), 0
    for t in scheduler.timesteps:
        calls += 1
        a, s = alphas_cumprod[t].sqrt(), (1 - alphas_cumprod[t]).sqrt()
        epsilon = -s * score(x, a, s)
        noise = dict(generator=generator) if "generator" in inspect.signature(scheduler.step).parameters else {}
        x = scheduler.step(epsilon, t, x, **noise).prev_sample
    return x, calls


def peer_runs(sde_type, sampling):
    """(label, run(mixture, sde, nfe, batch_size, seed) -> (samples, nfe)) for the peers that apply to this SDE."""
    runs = []
    if sampling is not None:
        for label, function, per_step, get_sigmas in k_diffusion_runs(sampling):
            runs.append((label, lambda m, sde, n, b, s, f=function, p=per_step, g=get_sigmas:
                         run_k_diffusion(sampling, f, p, g, m, sde, n, b, s)))
    for churn in (0.0, 5.0):
        runs.append((f"diffusers EDMEulerScheduler (churn {churn:g})",
                     lambda m, sde, n, b, s, c=churn: run_diffusers_edm_euler(m, sde, n, b, s, c)))
    if sde_type == "vp":
        for label, name, kwargs in (
            ("diffusers DPMSolverMultistep 2M (discrete VP)", "DPMSolverMultistepScheduler", {}),
            ("diffusers DPMSolverMultistep 2M lu_lambdas", "DPMSolverMultistepScheduler", dict(use_lu_lambdas=True)),
            ("diffusers DPMSolverMultistep SDE 2M (discrete VP)", "DPMSolverMultistepScheduler",
             dict(algorithm_type="sde-dpmsolver++")),
            ("diffusers DPMSolverMultistep SDE 2M lu_lambdas", "DPMSolverMultistepScheduler",
             dict(algorithm_type="sde-dpmsolver++", use_lu_lambdas=True)),
            ("diffusers UniPCMultistep (discrete VP)", "UniPCMultistepScheduler", {}),
            ("diffusers UniPCMultistep karras sigmas", "UniPCMultistepScheduler", dict(use_karras_sigmas=True)),
        ):
            runs.append((label, lambda m, sde, n, b, s, c=name, k=kwargs: run_diffusers_discrete_vp(c, m, n, b, s, **k)))
    return runs


# --- scoring ---------------------------------------------------------------------------------------------------------
def within_from(results):
    """The smallest NFE of the grid from which every larger budget is within TOLERANCE on every seed, or None."""
    ok = {nfe: all(abs(ratio - 1) < TOLERANCE and mode < MODE_TOLERANCE for ratio, mode in runs)
          for nfe, runs in results.items()}
    passing = None
    for nfe in sorted(ok, reverse=True):
        if not ok[nfe]:
            break
        passing = nfe
    return passing


def worst(results, nfe):
    """Worst-seed error at the largest budget used that does not exceed ``nfe`` (Heun's budgets are odd)."""
    used = [n for n in results if nfe - 1 <= n <= nfe]
    return None if not used else max(abs(ratio - 1) for ratio, _ in results[max(used)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sde", nargs="+", choices=tuple(SDE_CONFIGS), default=list(SDE_CONFIGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4000,
                        help="samples per run (default 4000: the ratio's sampling noise is 0.28%%, 1%% is 3.6 std)")
    parser.add_argument("--only", nargs="+", help="only samplers whose label contains one of these")
    parser.add_argument("--no-peers", action="store_true", help="our samplers only")
    parser.add_argument("--nfe", type=int, nargs="+", default=list(NFE_GRID))
    parser.add_argument("--report", type=int, nargs="+", default=[10, 20, 50],
                        help="budgets whose worst-seed error the table shows (default 10 20 50)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mixture = issue_mixture()
    sampling = None if args.no_peers else load_k_diffusion_sampling()
    if sampling is None and not args.no_peers:
        print("k-diffusion not installed: its samplers are skipped (see the module docstring)")
    for sde_type in args.sde:
        sde = make_sde(**SDE_CONFIGS[sde_type])
        samplers = [(label, lambda m, sde_, n, b, s, make=make, steps=steps, sde_type=sde_type:
                     run_ours(make, steps, m, sde_type, n, b, s)) for label, make, steps in ours(sde_type)]
        if not args.no_peers:
            samplers += peer_runs(sde_type, sampling)
        print(f"\n## {sde_type.upper()}: 64-D, 10 components, std 0.02-0.15, batch {args.batch_size}, "
              f"{args.seeds} seeds; worst-seed |variance ratio - 1|")
        print(f"| {'sampler':50s} | within 1% from NFE | " + " | ".join(f"{'@' + str(n):>7s}" for n in args.report) + " |")
        print(f"|{'-' * 52}|{'-' * 20}|" + f"{'-' * 9}|" * len(args.report))
        for label, run in samplers:
            if args.only is not None and not any(part in label for part in args.only):
                continue
            results = {}
            for nfe in args.nfe:
                for seed in range(args.seeds):
                    samples, used = run(mixture, sde, nfe, args.batch_size, seed)
                    if samples is None:
                        continue  # a budget the sampler cannot run
                    fidelity = mixture.fidelity(samples)
                    results.setdefault(used, []).append((fidelity["variance_ratio"], fidelity["mode_weight_error"]))
            start = within_from(results)
            cells = [f"{worst(results, n):7.4f}" if worst(results, n) is not None else f"{'-':>7s}" for n in args.report]
            print(f"| {label:50s} | {str(start) if start else f'> {max(results)}':>18s} | " + " | ".join(cells) + " |",
                  flush=True)
        if sampling is not None and (args.only is None or "adaptive" in args.only):
            for rtol in (0.05, 0.01, 0.002):
                runs = [run_k_diffusion_adaptive(sampling, mixture, sde, rtol, args.batch_size, seed)
                        for seed in range(args.seeds)]
                errors = [abs(mixture.fidelity(samples)["variance_ratio"] - 1) for samples, _ in runs]
                print(f"| k-diffusion dpm_adaptive rtol {rtol:<5g} (mean NFE {sum(n for _, n in runs) / len(runs):5.0f})"
                      f" | worst error {max(errors):.4f} |", flush=True)


if __name__ == "__main__":
    main()
