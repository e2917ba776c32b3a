"""The ``inpaint``, ``colorize`` and ``img2img`` commands: a model, an image file, and the output file."""

import functools
import os
import time

import torch

from .command_options import check_device, refuse_latent_model, resolve_model, silence_progress_bars
from .image_grid import image_format, save_image_grid
from .pipelines import ScoreSDEColorizationPipeline, ScoreSDEImg2ImgPipeline, ScoreSDEInpaintPipeline

COMMANDS = {
    "inpaint": (ScoreSDEInpaintPipeline, "fill the white pixels of --mask in --image (the paper's imputation)"),
    "colorize": (ScoreSDEColorizationPipeline, "colour a grey --image with a colour model (the paper's colorization)"),
    "img2img": (ScoreSDEImg2ImgPipeline, "edit --image by noising it to --strength and sampling back (SDEdit)"),
}


def add_conditional_parsers(commands):
    """Register the three commands on the ``diffusers-sde`` parser."""
    for name, (pipeline_class, description) in COMMANDS.items():
        p = commands.add_parser(name, help=description, description=description)
        p.add_argument("--model", default="digits-vp",
                       help="model folder, Hub repo id or embedded model name (default: digits-vp)")
        p.add_argument("--image", required=True, help="the input image file, of the model's size")
        if name == "inpaint":
            p.add_argument("--mask", required=True, help="mask image of the same size: white = generate, black = keep")
        if name == "img2img":
            p.add_argument("--strength", type=float, default=0.8,
                           help="share of the schedule that runs, in (0, 1] (default 0.8)")
        p.add_argument("--steps", type=int, help="grid size (default: the scheduler's own)")
        p.add_argument("--seed", type=int, default=0, help="seed of the run's noise (default 0)")
        p.add_argument("--device", default="cpu", help="torch device (default cpu)")
        p.add_argument("--out", required=True, help="output image file; its extension picks the format")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=functools.partial(_run, name, pipeline_class))


def _open_image(path, flag):
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise SystemExit(f"{flag} {path!r} is not a file.")
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as error:
        raise SystemExit(f"{flag} {path!r} is not an image Pillow can read: {error}") from None


def _run(name, pipeline_class, args):

    try:
        image_format(args.out)
    except ValueError as error:
        raise SystemExit(f"--out {args.out!r}: {error}") from None
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}.")
    image = _open_image(args.image, "--image")
    mask = _open_image(args.mask, "--mask").convert("L") if name == "inpaint" else None
    check_device(args.device)
    if args.quiet:
        silence_progress_bars()
    refuse_latent_model(args.model, name)
    try:
        pipe = pipeline_class.from_pretrained(resolve_model(args.model)).to(args.device)
    except (OSError, ValueError) as error:
        raise SystemExit(f"--model {args.model!r} could not be loaded: {error}") from error
    pipe.set_progress_bar_config(disable=args.quiet)
    options = dict(num_inference_steps=args.steps, generator=torch.Generator().manual_seed(args.seed))
    if name == "inpaint":
        options["mask_image"] = mask  # white = generate; a grey (anti-aliased) mask is refused, as in Python
    if name == "img2img":
        options["strength"] = args.strength
    start = time.perf_counter()
    try:
        output = pipe(image, **options)
    except ValueError as error:
        raise SystemExit(f"{name}: {error}") from None
    save_image_grid(output.images, args.out)
    print(f"wrote {args.out}: {name} of {args.image}, NFE={output.nfe}, wall time {time.perf_counter() - start:.2f} s")
    return output
