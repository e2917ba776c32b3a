"""NCSNppModel against the closest UNet2DModel at the same parameter count: forward time and peak memory at CIFAR-10
size, and the sampling throughput of ScoreSDEPipeline with each (random weights: speed does not depend on them).

    python benchmarks/bench_models.py                    # CPU: batch 2, 5 sampling steps
    python benchmarks/bench_models.py --device cuda --batch-size 64 --steps 20

The UNet2DModel is DDPM's CIFAR-10 layout (128, 256, 256, 256 channels, attention at 16 px) with as many blocks per
resolution as brings its parameter count closest to the NCSN++ network's. Each network is measured in a fresh process
with random weights materialized in place, so that its CPU peak (resident-set growth over the weights during the first
forward; on a GPU, allocated memory over the weights) is the forward's own.
"""

import argparse
import multiprocessing
import os
import resource
import statistics
import time

import torch
from diffusers import UNet2DModel

from diffusers_sde import NCSNppModel, PredictorCorrectorScheduler, ScoreSDEPipeline
from diffusers_sde.models.conversion import model_config, resolve_config

NCSNPP = {
    "DDPM++ cont. (vp/cifar10_ddpmpp_continuous)": "vp/cifar10_ddpmpp_continuous",
    "NCSN++ cont. (ve/cifar10_ncsnpp_continuous)": "ve/cifar10_ncsnpp_continuous",
}


def ncsnpp(config_name):
    return NCSNppModel(**model_config(resolve_config(config_name)[0]))


def unet(layers_per_block, fourier):
    return UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=layers_per_block,
        time_embedding_type="fourier" if fourier else "positional", norm_eps=1e-6)


def parameters(model):
    return sum(p.numel() for p in model.parameters())


def closest_unet_layers(target, fourier):
    counts = {layers: parameters(unet(layers, fourier)) for layers in range(1, 9)}
    return min(counts, key=lambda layers: abs(counts[layers] - target))


def _resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _build(kind, argument, fourier, device):
    """The network with random weights, materialized in place (no initializer temporaries to inflate the CPU peak)."""
    with torch.device("meta"):
        model = ncsnpp(argument) if kind == "ncsnpp" else unet(argument, fourier)
    model = model.to_empty(device=device).eval()
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.normal_(0.0, 0.02, generator=generator)
    if kind == "ncsnpp" and fourier:
        model.fourier_projection.W.mul_(16 / 0.02)  # Fourier frequencies of scale 16, as in the paper's configs
    return model


def _measure(spec, args, queue):
    kind, argument, fourier = spec
    torch.set_num_threads(args.threads)
    model = _build(kind, argument, fourier, args.device)
    x = torch.rand(args.batch_size, 3, 32, 32, device=args.device)
    t = torch.full((args.batch_size,), 10.0 if fourier else 500.0, device=args.device)
    cuda = args.device.startswith("cuda")
    with torch.no_grad():
        if cuda:
            model(x, t)  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = _resident_mib()  # the first forward's peak is measured: the process has not run one yet
        times = []
        for _ in range(args.repeats + (0 if cuda else 1)):
            start = time.perf_counter()
            model(x, t)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        if cuda:
            peak_mib = (torch.cuda.max_memory_allocated() - before) / 2**20
        else:
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
            times = times[1:]  # the first one was the warm-up
        throughput = _sampling_throughput(model, fourier, args)
    queue.put(dict(parameters=parameters(model), forward_ms=1000 * statistics.median(times), peak_mib=peak_mib,
                   images_per_s=throughput))


def _sampling_throughput(model, fourier, args):
    scheduler = PredictorCorrectorScheduler(sde_type="ve" if fourier else "vp", corrector="none")
    pipe = ScoreSDEPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    pipe(batch_size=args.batch_size, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0),
         output_type="latent")
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return args.batch_size / (time.perf_counter() - start)


def measure(spec, args):
    """Run one measurement in a fresh process (its own resident-set peak)."""
    # A fixed mmap threshold makes glibc return every large freed block to the system at once; with its default,
    # adaptive one, freed blocks are reused without growing the resident set and the CPU peak reads as zero.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(spec, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="sampling steps for the throughput column")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"device={args.device} batch={args.batch_size} 32x32x3, median of {args.repeats} forwards,"
          f" sampling: {args.steps}-step Euler-Maruyama PC")
    header = f"{'network':48s} {'params (M)':>10s} {'forward (ms)':>12s} {'peak (MiB)':>10s} {'images/s':>9s}"
    print(header)
    print("-" * len(header))
    for label, config_name in NCSNPP.items():
        fourier = config_name.startswith("ve/")
        ours = measure(("ncsnpp", config_name, fourier), args)
        layers = closest_unet_layers(ours["parameters"], fourier)
        theirs = measure(("unet", layers, fourier), args)
        for name, row in ((f"NCSNppModel {label}", ours), (f"  UNet2DModel DDPM layout, {layers} blocks/res", theirs)):
            print(f"{name:48s} {row['parameters'] / 1e6:10.1f} {row['forward_ms']:12.1f} {row['peak_mib']:10.1f}"
                  f" {row['images_per_s']:9.3f}")


if __name__ == "__main__":
    main()
