"""The ``diffusers-sde`` command line."""

import argparse
import os
import sys
import time

import torch

from .image_grid import save_image_grid
from .pipelines import ScoreSDEPipeline
from .pipelines.pipeline_score_sde import _sample_shape
from .schedulers import (
    CORRECTORS,
    PREDICTORS,
    SOLVERS,
    EDMHeunScheduler,
    ExponentialIntegratorScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
)
from .solvers.probability_flow_ode import DIVERGENCES

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "pretrained", "digits-vp")


SCHEDULER_SAMPLERS = {  # --sampler -> the scheduler that runs in the diffusers loop
    "pc": PredictorCorrectorScheduler,
    "ode": ProbabilityFlowScheduler,
    "exponential_integrator": ExponentialIntegratorScheduler,
    "edm_heun": EDMHeunScheduler,
}
SOLVER_SAMPLERS = {"torchsde": "torchsde", "gotta_go_fast": "gotta_go_fast", "adaptive_ode": "ode"}  # pipe(solver=...)


def _build_scheduler(pipe, args):
    if args.sampler not in SCHEDULER_SAMPLERS:
        return pipe.scheduler  # the solver only reads the SDE and the parameterization from it
    overrides = {}
    if args.sampler == "pc":
        for name in ("predictor", "corrector", "snr", "corrector_steps"):
            if getattr(args, name) is not None:
                overrides[name] = getattr(args, name)
    if args.sampler == "ode":
        overrides["solver"] = args.solver
    return SCHEDULER_SAMPLERS[args.sampler].from_config(pipe.scheduler.config, **overrides)


def _solver_arguments(args):
    if args.sampler not in SOLVER_SAMPLERS:
        return {}
    given = {"method": args.method, "rtol": args.rtol, "atol": args.atol}
    return {"solver": SOLVER_SAMPLERS[args.sampler], **{k: v for k, v in given.items() if v is not None}}


def _report_digits_quality(pipe, images):
    """For a 1 x 8 x 8 model (the embedded digits model): Frechet distance and class coverage in a digits classifier."""
    if _sample_shape(pipe.unet) != (1, 8, 8):
        return
    try:
        from .evaluation import DigitsQuality
        from .training.data import DIGITS_GREY_LEVELS, digits_split
    except ImportError:
        return
    quality = DigitsQuality()
    real, _ = digits_split("heldout")
    floor = quality.evaluate(real[: len(images)] / DIGITS_GREY_LEVELS)
    result = quality.evaluate(images[..., 0])
    print(
        f"digits quality ({len(images)} samples; a classifier fit on held-out digits): Frechet distance"
        f" {result['frechet_distance']:.2f} (real held-out digits, same count: {floor['frechet_distance']:.2f}),"
        f" class coverage {result['class_coverage']:.2f} ({floor['class_coverage']:.2f}),"
        f" mean confidence {result['mean_confidence']:.3f} ({floor['mean_confidence']:.3f})"
    )


def _load_pipeline(model):
    try:
        return ScoreSDEPipeline.from_pretrained(model)
    except (OSError, ValueError, EnvironmentError) as error:
        raise SystemExit(f"--model {model!r} could not be loaded: {error}") from error


def sample(args):
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}.")
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be >= 1, got {args.batch_size}.")
    pipe = _load_pipeline(args.model)
    pipe.scheduler = _build_scheduler(pipe, args)
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=args.quiet)
    # One generator per sample: a sample does not depend on the batch size. torchsde then keeps one Brownian interval
    # per sample, whose bookkeeping costs ~5 ms per sample and step on the CPU, so it gets a single generator.
    generator = [torch.Generator().manual_seed(args.seed + i) for i in range(args.batch_size)]
    if args.sampler == "torchsde":
        generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    output = pipe(batch_size=args.batch_size, num_inference_steps=args.steps, generator=generator, output_type="np",
                  **_solver_arguments(args))
    seconds = time.perf_counter() - start
    save_image_grid(pipe.numpy_to_pil(output.images), args.out)
    print(f"wrote {args.out}: {args.batch_size} samples, sampler={args.sampler}, NFE={output.nfe}, wall time {seconds:.2f} s")
    if not args.no_quality:
        _report_digits_quality(pipe, output.images)
    return output


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _load_image_folder(folder, shape, limit):
    """The folder's images as a (B, H, W, C) uint8 array in the model's channel count; sizes must already match."""
    import numpy as np
    import PIL.Image

    if not os.path.isdir(folder):
        raise SystemExit(f"--data {folder!r} is not a folder.")
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS))[:limit]
    if not names:
        raise SystemExit(f"--data {folder!r} holds no images with an extension in {IMAGE_EXTENSIONS}.")
    channels, height, width = shape
    if channels not in (1, 3):
        raise SystemExit(f"the model takes {channels} channels; image folders can only feed 1 (grey) or 3 (RGB).")
    arrays = []
    for name in names:
        with PIL.Image.open(os.path.join(folder, name)) as image:
            image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (width, height):
            raise SystemExit(
                f"--data image {name!r} is {image.size[0]}x{image.size[1]} pixels, the model takes {width}x{height};"
                " resize the data set first (bits/dim of resampled images are not comparable)."
            )
        array = np.asarray(image)
        arrays.append(array[..., None] if array.ndim == 2 else array)
    return np.stack(arrays), names


def likelihood(args):
    for name in ("batch_size", "repeats", "probes"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.levels < 2:
        raise SystemExit(f"--levels must be >= 2 (pixel values 0..levels-1), got {args.levels}.")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {args.limit}.")
    pipe = _load_pipeline(args.model)
    pipe.to(args.device)
    images, names = _load_image_folder(args.data, _sample_shape(pipe.unet), args.limit)
    if images.max() >= args.levels:
        raise SystemExit(f"--levels {args.levels} allows pixel values 0..{args.levels - 1}, but the images in --data"
                         f" reach {images.max()}; pass --levels {images.max() + 1} or more (256 for 8-bit images).")
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    bits_per_dim, nfe = [], 0
    for first in range(0, len(images), args.batch_size):
        output = pipe.log_likelihood(
            images[first : first + args.batch_size], generator=generator, num_repeats=args.repeats, eps=args.eps,
            rtol=args.rtol, atol=args.atol, divergence=args.divergence, num_probes=args.probes,
            num_levels=args.levels,
        )
        bits_per_dim.append(output.bits_per_dim)
        nfe += output.nfe
    seconds = time.perf_counter() - start
    values = torch.cat(bits_per_dim)
    if args.per_image:
        for name, value in zip(names, values.tolist()):
            print(f"{name}\t{value:.4f}")
    # 95% normal-approximation interval of the data set's mean over images (image-to-image and estimator noise).
    half_width = 1.96 * values.std().item() / len(values) ** 0.5 if len(values) > 1 else float("nan")
    print(
        f"{args.data}: {len(values)} images, {values.mean().item():.4f} +- {half_width:.4f} bits/dim (95% CI),"
        f" repeats={args.repeats}, divergence={args.divergence}, NFE={nfe}, wall time {seconds:.2f} s"
    )
    return values


def _add_likelihood_parser(commands):
    p = commands.add_parser("likelihood", help="bits/dim of an image folder under the probability-flow ODE")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder or Hub repo id (default: the embedded digits model)")
    p.add_argument("--data", required=True, help="folder of images of the model's size (png, jpg, bmp, webp)")
    p.add_argument("--repeats", type=int, default=1, help="dequantizations per image (paper: 5)")
    p.add_argument("--divergence", choices=DIVERGENCES, default="hutchinson")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per evaluation")
    p.add_argument("--levels", type=int, default=256,
                   help="grey levels of the data: pixel values are 0..levels-1, dequantized as (value + U) / levels"
                        " (default 256, 8-bit)")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--eps", type=float, default=1e-5, help="the data's time; the ODE runs from eps to 1")
    p.add_argument("--limit", type=int, help="score only the first N images (sorted by name)")
    p.add_argument("--per-image", dest="per_image", action="store_true", help="also print each image's bits/dim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=likelihood)


def build_parser():
    parser = argparse.ArgumentParser(prog="diffusers-sde", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("sample", help="generate an image grid from a model folder or Hub repo")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder or Hub repo id (default: the embedded digits model)")
    p.add_argument("--sampler", choices=(*SCHEDULER_SAMPLERS, *SOLVER_SAMPLERS), default="pc",
                   help="pc / ode (Euler, Heun) / exponential_integrator / edm_heun run in the diffusers loop;"
                        " torchsde / gotta_go_fast / adaptive_ode (RK45) are adaptive or torchsde solvers")
    p.add_argument("--predictor", choices=PREDICTORS)
    p.add_argument("--corrector", choices=CORRECTORS)
    p.add_argument("--snr", type=float)
    p.add_argument("--corrector-steps", dest="corrector_steps", type=int)
    p.add_argument("--solver", choices=SOLVERS, default="heun", help="ODE solver for --sampler ode")
    p.add_argument("--method", help="torchsde method (euler, milstein, heun, midpoint, srk) or torchdiffeq method")
    p.add_argument("--rtol", type=float, help="tolerance of the adaptive samplers")
    p.add_argument("--atol", type=float, help="tolerance of the adaptive samplers")
    p.add_argument("--steps", type=int, help="grid size (default: the scheduler's num_train_timesteps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="samples.png")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-quality", dest="no_quality", action="store_true", help="skip the digits quality figure")
    p.set_defaults(func=sample)
    _add_likelihood_parser(commands)

    from .training.command import add_train_parser
    from .models.conversion import add_convert_parser

    add_train_parser(commands)
    add_convert_parser(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
