"""Training throughput: our loss and optimizer step against a plain diffusers-style loop, on the same network and batch.

Side by side, interleaved step by step in a rotating order (so load on a shared machine and cache effects hit every
column alike), on one copy of each
``UNet2DModel`` preset with identical initial weights:

- ``continuous``: :func:`denoising_score_matching_loss` (VP, epsilon network, DDPM time input) + Adam step;
- ``discrete``: :func:`discrete_score_matching_loss` (DDPM) + Adam step;
- ``diffusers``: the ``train_unconditional`` recipe, ``DDPMScheduler.add_noise`` + epsilon MSE + Adam step.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_training.py [--steps 20] [--threads 1]

Prints images/s (batch size over the median step time) per preset; the target is that ours is not slower. Neither
side clips gradients or updates an EMA (the trainer does both, identically for any loss).
"""

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from diffusers_sde import Parameterization, make_sde
from diffusers_sde.training import build_unet, denoising_score_matching_loss, discrete_score_matching_loss

# (preset, sample size, channels, batch size)
CASES = [("digits-tiny", 8, 1, 128), ("small", 32, 3, 8)]


def diffusers_loss(unet, scheduler, x0, generator):
    """What diffusers' examples/unconditional_image_generation/train_unconditional.py computes per step."""
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    return F.mse_loss(unet(noisy, timesteps).sample, noise)


def make_step(unet, loss_fn):
    optimizer = torch.optim.Adam(unet.parameters(), lr=2e-4)

    def step(x0, generator):
        loss = loss_fn(unet, x0, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(preset, size, channels, batch_size, steps, warmup=3):
    torch.manual_seed(0)
    base = build_unet(preset, size, channels, timestep_type="discrete")
    sde = make_sde("vp")
    parameterization = Parameterization(sde, "epsilon", "discrete", 1000)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    losses = {
        "continuous": lambda unet, x0, g: denoising_score_matching_loss(unet, x0, sde, parameterization, generator=g),
        "discrete": lambda unet, x0, g: discrete_score_matching_loss(unet, x0, sde, parameterization, generator=g),
        "diffusers": lambda unet, x0, g: diffusers_loss(unet, scheduler, x0, g),
    }
    stepper = {name: make_step(copy.deepcopy(base).train(), loss) for name, loss in losses.items()}
    x0 = torch.rand(batch_size, channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    times = {name: [] for name in losses}
    names = list(stepper)
    for index in range(warmup + steps):
        for name in names[index % 3:] + names[:index % 3]:
            step = stepper[name]
            generator = torch.Generator().manual_seed(index)
            start = time.perf_counter()
            step(x0, generator)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in base.parameters()) / 1e6
    return parameters, {name: batch_size / statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per column (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| preset | input | batch | parameters | continuous (ours) | discrete DDPM (ours) | diffusers loop | ours / diffusers |")
    print("|---|---|---|---|---|---|---|---|")
    for preset, size, channels, batch_size in CASES:
        parameters, rates = measure(preset, size, channels, batch_size, args.steps)
        ratio = rates["continuous"] / rates["diffusers"]
        print(f"| {preset} | {channels}x{size}x{size} | {batch_size} | {parameters:.2f} M | {rates['continuous']:.1f} img/s"
              f" | {rates['discrete']:.1f} img/s | {rates['diffusers']:.1f} img/s | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
