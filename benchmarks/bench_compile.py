"""``torch.compile`` of the network with ScoreSDEPipeline: compile time and sampling time against eager, per backend.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_compile.py [--backends aot_eager inductor] [--model PATH]
        [--batch-size 64] [--steps 20]

Times the first compiled run (graph capture and compilation included), a second compiled run, and an eager run, all
with UniPC on the same noise, and prints the largest difference from the eager samples. The default model is the
embedded digits model.
"""

import argparse
import time

import torch

from diffusers_sde import ScoreSDEPipeline, UniPCScheduler, pretrained_model_path


def _timed(pipe, batch_size, steps):
    start = time.perf_counter()
    images = pipe(batch_size=batch_size, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                  output_type="latent").images
    return images, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=pretrained_model_path("digits-vp"))
    parser.add_argument("--backends", nargs="+", default=["aot_eager", "inductor"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)

    pipe = ScoreSDEPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = UniPCScheduler.from_config(pipe.scheduler.config)
    eager_unet = pipe.unet
    _timed(pipe, args.batch_size, args.steps)  # warm-up
    eager, eager_seconds = _timed(pipe, args.batch_size, args.steps)
    print(f"torch {torch.__version__}, batch {args.batch_size}, {args.steps} steps")
    print(f"| backend | first run (compiles), s | second run, s | eager run, s | max abs difference from eager |")
    print("|---|---|---|---|---|")
    for backend in args.backends:
        torch._dynamo.reset()
        pipe.unet = torch.compile(eager_unet, backend=backend)
        _, first = _timed(pipe, args.batch_size, args.steps)
        compiled, second = _timed(pipe, args.batch_size, args.steps)
        difference = (compiled - eager).abs().max().item()
        print(f"| {backend} | {first:.1f} | {second:.2f} | {eager_seconds:.2f} | {difference:.2e} |", flush=True)
    pipe.unet = eager_unet


if __name__ == "__main__":
    main()
