"""The ``diffusers-sde`` command line."""

import argparse
import os
import sys
import time

import torch

from .pipelines import ScoreSDEPipeline
from .schedulers import CORRECTORS, PREDICTORS, SOLVERS, PredictorCorrectorScheduler, ProbabilityFlowScheduler

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "pretrained", "digits-vp")


def _build_scheduler(pipe, args):
    overrides = {}
    if args.sampler == "pc":
        for name in ("predictor", "corrector", "snr", "corrector_steps"):
            if getattr(args, name) is not None:
                overrides[name] = getattr(args, name)
        return PredictorCorrectorScheduler.from_config(pipe.scheduler.config, **overrides)
    return ProbabilityFlowScheduler.from_config(pipe.scheduler.config, solver=args.solver)


def _save_grid(images, path):
    from diffusers.utils import make_image_grid

    cols = int(len(images) ** 0.5) or 1
    while len(images) % cols:
        cols -= 1
    grid = make_image_grid(images, rows=len(images) // cols, cols=cols)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp.png"
    grid.save(tmp)
    os.replace(tmp, path)  # never leave a half-written grid behind


def sample(args):
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}.")
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be >= 1, got {args.batch_size}.")
    try:
        pipe = ScoreSDEPipeline.from_pretrained(args.model)
    except (OSError, ValueError, EnvironmentError) as error:
        raise SystemExit(f"--model {args.model!r} could not be loaded: {error}") from error
    pipe.scheduler = _build_scheduler(pipe, args)
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=args.quiet)
    generator = [torch.Generator().manual_seed(args.seed + i) for i in range(args.batch_size)]
    start = time.perf_counter()
    output = pipe(batch_size=args.batch_size, num_inference_steps=args.steps, generator=generator)
    seconds = time.perf_counter() - start
    _save_grid(output.images, args.out)
    print(f"wrote {args.out}: {args.batch_size} samples, sampler={args.sampler}, NFE={output.nfe}, wall time {seconds:.2f} s")
    return output


def build_parser():
    parser = argparse.ArgumentParser(prog="diffusers-sde", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("sample", help="generate an image grid from a model folder or Hub repo")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder or Hub repo id (default: the embedded digits model)")
    p.add_argument("--sampler", choices=("pc", "ode"), default="pc")
    p.add_argument("--predictor", choices=PREDICTORS)
    p.add_argument("--corrector", choices=CORRECTORS)
    p.add_argument("--snr", type=float)
    p.add_argument("--corrector-steps", dest="corrector_steps", type=int)
    p.add_argument("--solver", choices=SOLVERS, default="heun", help="ODE solver for --sampler ode")
    p.add_argument("--steps", type=int, help="grid size (default: the scheduler's num_train_timesteps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="samples.png")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=sample)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
