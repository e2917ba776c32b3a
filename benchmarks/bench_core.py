"""Core samplers: (a) accuracy against NFE on a closed-form mixture, beside diffusers' ScoreSdeVeScheduler loop and an
Euler-Maruyama loop written straight from the paper; (b) pipeline overhead against the bare network forwards and
against diffusers' ScoreSdeVePipeline at equal NFE.

    python benchmarks/bench_core.py            # both tables
    python benchmarks/bench_core.py --only overhead
"""

import argparse
import time

import torch
from diffusers import ScoreSdeVePipeline, ScoreSdeVeScheduler, UNet2DModel

from diffusers_sde import GaussianMixture, GaussianMixtureModel, PredictorCorrectorScheduler, ProbabilityFlowScheduler, ScoreSDEPipeline

SHAPE = (1, 8, 8)  # a 64-dimensional mixture
BATCH = 2000


def exact_model(mixture, scheduler):
    return GaussianMixtureModel.for_scheduler(mixture, scheduler, SHAPE[0], SHAPE[1])


def ours(mixture, scheduler, steps):
    pipe = ScoreSDEPipeline(unet=exact_model(mixture, scheduler), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=BATCH, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="latent")
    return out.images.flatten(1), out.nfe


def diffusers_score_sde_ve_loop(mixture, steps, snr=0.16):
    """The loop of diffusers' (deprecated) ScoreSdeVePipeline, on the same exact score."""
    scheduler = ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0, snr=snr, num_train_timesteps=steps)
    model = exact_model(mixture, PredictorCorrectorScheduler(sde_type="ve"))
    generator = torch.Generator().manual_seed(0)
    scheduler.set_timesteps(steps)
    scheduler.set_sigmas(steps)
    x = torch.randn(BATCH, *SHAPE, generator=generator) * scheduler.init_noise_sigma
    nfe = 0
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i] * torch.ones(BATCH)
        for _ in range(scheduler.config.correct_steps):
            x = scheduler.step_correct(model(x, sigma).sample.float(), x, generator=generator).prev_sample
            nfe += 1
        out = scheduler.step_pred(model(x, sigma).sample.float(), t, x, generator=generator)
        x, x_mean = out.prev_sample, out.prev_sample_mean
        nfe += 1
    return x_mean.flatten(1), nfe


def paper_euler_maruyama_loop(mixture, sde_type, steps):
    """Euler-Maruyama as in the paper's code: dt = -1/N from t = 1 on linspace(1, eps, N), returns the final mean."""
    scheduler = PredictorCorrectorScheduler(sde_type=sde_type)
    sde, eps = scheduler.sde, scheduler.config.sampling_eps
    mix = mixture
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, SHAPE[0] * SHAPE[1] * SHAPE[2], generator=generator, dtype=torch.float64) * sde.prior_std
    dt = -1.0 / steps
    for t in torch.linspace(1.0, eps, steps, dtype=torch.float64):
        a, s = sde.marginal(t)
        score = mix.score(x, a, s)
        drift, g = sde.sde(x, t)
        x_mean = x + (drift - g**2 * score) * dt
        x = x_mean + g * (-dt) ** 0.5 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return x_mean, steps


def accuracy_table():
    torch.set_num_threads(1)
    mixture = GaussianMixture.random(64, num_components=3, spread=2.0, scale=0.3)
    rows = []

    def record(sde, name, samples_nfe):
        samples, nfe = samples_nfe
        f = mixture.fidelity(samples)
        rows.append((sde, name, nfe, abs(f["variance_ratio"] - 1), f["mode_weight_error"]))
        print(f"| {sde:5} | {name:42} | {nfe:5d} | {abs(f['variance_ratio'] - 1):8.4f} | {f['mode_weight_error']:6.3f} |", flush=True)

    print("| SDE   | sampler                                    |   NFE | |var-1|  | mode err |")
    print("|-------|--------------------------------------------|-------|----------|----------|")
    for steps in (100, 500, 1000):
        record("ve", f"diffusers ScoreSdeVe loop (PC), N={steps}", diffusers_score_sde_ve_loop(mixture, steps))
        record("ve", f"ours PC rd+langevin, N={steps}", ours(mixture, PredictorCorrectorScheduler(sde_type="ve"), steps))
    for sde in ("ve", "vp", "subvp"):
        for steps in (100, 500, 1000):
            record(sde, f"paper Euler-Maruyama loop, N={steps}", paper_euler_maruyama_loop(mixture, sde, steps))
            for predictor in ("euler_maruyama", "reverse_diffusion", "ancestral"):
                scheduler = PredictorCorrectorScheduler(sde_type=sde, predictor=predictor, corrector="none")
                record(sde, f"ours {predictor}, N={steps}", ours(mixture, scheduler, steps))
        for steps in (25, 50, 100):
            record(sde, f"ours probability flow heun, N={steps}", ours(mixture, ProbabilityFlowScheduler(sde_type=sde), steps))
    return rows


def _unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       time_embedding_type="fourier").eval()


def overhead_table(steps=15, batch=8, repeats=5):
    torch.set_num_threads(1)
    unet = _unet()
    x = torch.randn(batch, 3, 32, 32)
    ours_pipe = ScoreSDEPipeline(unet=unet, scheduler=PredictorCorrectorScheduler(sde_type="ve", corrector_steps=1))
    stock = ScoreSdeVePipeline(unet=unet, scheduler=ScoreSdeVeScheduler(sigma_max=50.0, snr=0.16))
    for pipe in (ours_pipe, stock):
        pipe.set_progress_bar_config(disable=True)
    nfe = 2 * steps
    sigmas = torch.linspace(50.0, 0.01, steps)

    @torch.no_grad()
    def bare():
        for sigma in sigmas.repeat_interleave(2):
            unet(x, sigma).sample

    runs = {
        "bare network forwards": bare,
        "ScoreSDEPipeline (ours)": lambda: ours_pipe(batch_size=batch, num_inference_steps=steps, output_type="latent"),
        "diffusers ScoreSdeVePipeline": lambda: stock(batch_size=batch, num_inference_steps=steps, output_type="np"),
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):  # interleaved, so a burst of load on the machine hits every run alike
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"\nOverhead, VE PC (reverse diffusion + Langevin), {nfe} NFE, batch {batch} x 3 x 32 x 32, UNet2DModel "
          f"(32, 64) channels, 1 thread, best of {repeats} interleaved runs:")
    print("| run                          | wall s | vs bare forwards |")
    print("|------------------------------|--------|------------------|")
    for name, value in best.items():
        print(f"| {name:28} | {value:6.2f} | {100 * (value / best['bare network forwards'] - 1):+15.1f}% |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("accuracy", "overhead"))
    args = parser.parse_args()
    if args.only != "overhead":
        accuracy_table()
    if args.only != "accuracy":
        overhead_table()
