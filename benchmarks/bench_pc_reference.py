"""The paper's VP predictor-corrector setting against the reference code (yang-song/score_sde_pytorch), on a closed-form
mixture: 64-D, 10 components, component std 0.02-0.15, exact score, ancestral + Langevin at snr 0.01, N = 1000.

The reference code is imported from a checkout given on the command line (it is not a dependency and none of it is
copied here); its sampler gets an epsilon network built from the exact mixture score, exactly as it would call a
DDPM++ model. Beside it: our PC scheduler with the paper's ancestral noise (the default), with the posterior's noise,
and with the cumulative corrector alpha a(t)^2 of the earlier versions; and two exact references, the law of x at
t = eps (what a sampler that stops there holds) and the law of E[x_0 | x_eps] (what a sampler that ends with the
noise-free step returns).

    python benchmarks/bench_pc_reference.py --score-sde /path/to/score_sde_pytorch   # commit cb1f359 was used
    python benchmarks/bench_pc_reference.py --score-sde ... --steps 1000 4000
"""

import argparse
import sys
import time

import torch

from diffusers_sde import GaussianMixture, GaussianMixtureModel, PredictorCorrectorScheduler, ScoreSDEPipeline
from diffusers_sde.schedulers import scheduling_predictor_corrector as pc
from diffusers_sde.sde import tweedie_denoise

SHAPE = (1, 8, 8)
EPS = 1e-3


def narrow_mixture(dim=64, components=10):
    generator = torch.Generator().manual_seed(0)
    means = torch.rand(components, dim, generator=generator, dtype=torch.float64) * 1.6 - 0.8
    stds = 0.02 + 0.13 * torch.rand(components, dim, generator=generator, dtype=torch.float64)
    return GaussianMixture(torch.full((components,), 1.0 / components, dtype=torch.float64), means, stds**2)


class _CumulativeAlpha(PredictorCorrectorScheduler):
    """The corrector alpha of earlier versions, a(t)^2 (the paper's cumulative alpha-bar), for comparison only."""

    def _build_plan(self, levels):
        return [pc.CorrectorStep(e.level, e.target, e.level.a**2) if isinstance(e, pc.CorrectorStep) else e
                for e in super()._build_plan(levels)]


def ours(mixture, steps, batch, seed, scheduler_class=PredictorCorrectorScheduler, **config):
    scheduler = scheduler_class(sde_type="vp", predictor="ancestral", corrector="langevin", snr=0.01, **config)
    pipe = ScoreSDEPipeline(unet=GaussianMixtureModel.for_scheduler(mixture, scheduler, 1, 8), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
               output_type="latent")
    return out.images.flatten(1)


def reference_code(path, mixture, steps, batch, seed):
    sys.path.insert(0, path)
    import sampling
    import sde_lib

    sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=steps)
    vp = PredictorCorrectorScheduler(sde_type="vp").sde

    class EpsilonNetwork(torch.nn.Module):  # a continuous DDPM++ model: fed t * 999, returns epsilon
        def forward(self, x, labels):
            t = labels.double() / 999
            a, s = (v[:, None] for v in vp.marginal(t))
            score = mixture.score(x.flatten(1).double(), a, s)
            return (-s * score).view_as(x).float()

    sampler = sampling.get_pc_sampler(
        sde, (batch, *SHAPE), sampling.AncestralSamplingPredictor, sampling.LangevinCorrector, lambda x: x, snr=0.01,
        n_steps=1, probability_flow=False, continuous=True, denoise=True, eps=EPS, device="cpu",
    )
    torch.manual_seed(seed)
    samples, _ = sampler(EpsilonNetwork())
    return samples.flatten(1)


def exact_references(mixture, batch=20000):
    a, s = PredictorCorrectorScheduler(sde_type="vp").sde.marginal(torch.tensor(EPS, dtype=torch.float64))
    x0, _ = mixture.sample(batch, torch.Generator().manual_seed(2))
    x_eps = a * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return x_eps, tweedie_denoise(x_eps, mixture.score(x_eps, a, s), a, s)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--score-sde", help="checkout of yang-song/score_sde_pytorch (omit to skip the reference code)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    mixture = narrow_mixture()
    x_eps, denoised = exact_references(mixture)
    print("| sampler | N | within-component variance ratio (per seed) | mode weight error | seconds |")
    print("|---|---|---|---|---|")
    print(f"| exact law of x at t = eps | - | {mixture.fidelity(x_eps)['variance_ratio']:.4f} | - | - |")
    print(f"| exact law of E[x_0 given x_eps] | - | {mixture.fidelity(denoised)['variance_ratio']:.4f} | - | - |")
    runs = [
        ("ours (ancestral: paper's beta_i noise)", lambda n, seed: ours(mixture, n, args.batch, seed)),
        ("ours, posterior noise (beta-tilde)",
         lambda n, seed: ours(mixture, n, args.batch, seed, ancestral_variance="posterior")),
        ("ours, posterior noise + cumulative alpha (earlier versions)",
         lambda n, seed: ours(mixture, n, args.batch, seed, _CumulativeAlpha, ancestral_variance="posterior")),
    ]
    if args.score_sde:
        runs.insert(0, ("score_sde_pytorch (reference code)",
                        lambda n, seed: reference_code(args.score_sde, mixture, n, args.batch, seed)))
    for name, run in runs:
        for steps in args.steps:
            start = time.perf_counter()
            fidelities = [mixture.fidelity(run(steps, seed)) for seed in args.seeds]
            ratios = ", ".join(f"{f['variance_ratio']:.4f}" for f in fidelities)
            error = max(f["mode_weight_error"] for f in fidelities)
            print(f"| {name} | {steps} | {ratios} | {error:.3f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
