"""What ScoreSDEPipeline costs on top of its network, for every fast scheduler and dtype: the pipeline's wall time
against the bare network forwards at the same NFE, batch and dtype (issue 12, part 7: within 5% of the bare network at
batch 256 in float16 and bfloat16 on a GPU). On CUDA each pipeline run is repeated once under
``torch.cuda.set_sync_debug_mode("warn")`` and the host-device synchronizations it makes are counted.

    .venv/bin/python benchmarks/bench_pipeline_overhead.py                                   # CPU: digits model
    .venv/bin/python benchmarks/bench_pipeline_overhead.py --device cuda --network ddpmpp   # GPU: CIFAR-10 DDPM++

``--network digits`` (default) is the embedded digits model (1 x 8 x 8); ``ddpmpp`` is the paper's DDPM++ continuous
network at CIFAR-10 size (3 x 32 x 32) with random weights (speed does not depend on them). Runs are interleaved and
the median of ``--repeats`` is kept, so a burst of load on a shared machine hits every row alike.
"""

import argparse
import statistics
import time
import warnings

import torch

from diffusers_sde import (
    EDMHeunScheduler,
    ERSDEScheduler,
    ExponentialIntegratorScheduler,
    NCSNppModel,
    ScoreSDEPipeline,
    SDEDPMSolverScheduler,
    UniPCScheduler,
    pretrained_model_path,
)
from diffusers_sde.models.conversion import model_config, resolve_config

SCHEDULERS = {
    "UniPC-3": UniPCScheduler,
    "exponential integrator 3M": ExponentialIntegratorScheduler,
    "SDE-DPM-Solver++ 3M": SDEDPMSolverScheduler,
    "ER-SDE-Solver-3": ERSDEScheduler,
    "EDM Heun": EDMHeunScheduler,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_pipeline(network, device, dtype):
    if network == "digits":
        pipe = ScoreSDEPipeline.from_pretrained(pretrained_model_path("digits-vp"))
    else:
        unet = NCSNppModel(**model_config(resolve_config("vp/cifar10_ddpmpp_continuous")[0]))
        pipe = ScoreSDEPipeline(unet=unet, scheduler=UniPCScheduler(sde_type="vp", prediction_type="epsilon"))
    pipe.unet.eval().to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def synchronized(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pipeline_run(pipe, batch_size, steps, device):
    def run():
        pipe(batch_size=batch_size, num_inference_steps=steps, output_type="latent",
             generator=torch.Generator(device).manual_seed(0))
    return run


def bare_run(pipe, batch_size, steps, device, dtype):
    """The same network calls as the pipeline's, and nothing else: one forward per entry of its timesteps."""
    pipe.scheduler.set_timesteps(steps, device=device)
    timesteps = list(pipe.scheduler.timesteps)
    unet = pipe.unet
    x = torch.randn(batch_size, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size,
                    device=device, dtype=dtype)

    def run():
        for t in timesteps:
            unet(x, t).sample
    return run, len(timesteps)


def count_syncs(run):
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--network", choices=("digits", "ddpmpp"), default="digits")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    cuda = args.device.startswith("cuda")
    rows = []
    with torch.no_grad():
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            pipe = load_pipeline(args.network, args.device, dtype)
            config = pipe.scheduler.config
            runs = {}
            for label, cls in SCHEDULERS.items():
                pipe.scheduler = cls.from_config(config)
                bare, nfe = bare_run(pipe, args.batch_size, args.steps, args.device, dtype)
                runs[label] = (pipe.scheduler, nfe, pipeline_run(pipe, args.batch_size, args.steps, args.device), bare)
            times = {(label, kind): [] for label in runs for kind in ("pipeline", "bare")}
            for _ in range(args.repeats + 1):  # the first round warms up (kernels, allocator) and is dropped
                for label, (scheduler, _, pipeline, bare) in runs.items():
                    pipe.scheduler = scheduler
                    for kind, run in (("pipeline", pipeline), ("bare", bare)):
                        synchronized(args.device)
                        start = time.perf_counter()
                        run()
                        synchronized(args.device)
                        times[label, kind].append(time.perf_counter() - start)
            median = {key: statistics.median(values[1:]) for key, values in times.items()}
            for label, (scheduler, nfe, pipeline, _) in runs.items():
                pipe.scheduler = scheduler
                syncs = count_syncs(pipeline) if cuda else None
                rows.append((label, dtype_name, nfe, median[label, "pipeline"], median[label, "bare"], syncs))
    print(f"\n{args.network} network, batch {args.batch_size}, {args.steps} steps, device {args.device}, median of "
          f"{args.repeats} interleaved runs")
    print("| scheduler | dtype | NFE | pipeline s | bare network s | overhead | host syncs per run |")
    print("|---|---|---|---|---|---|---|")
    for label, dtype_name, nfe, pipeline, bare, syncs in rows:
        print(f"| {label} | {dtype_name} | {nfe} | {pipeline:.3f} | {bare:.3f} | {100 * (pipeline / bare - 1):+.1f}% |"
              f" {'-' if syncs is None else syncs} |")


if __name__ == "__main__":
    main()
