"""The ``diffusers-sde`` command line."""

import argparse
import math
import os
import sys
import time

import torch

from .guidance.guidance import resolve_guidance
from .command_options import check_device as _check_device
from .command_options import option_name, refuse_latent_model
from .command_options import resolve_model as _resolve_model
from .command_options import silence_progress_bars as _silence_progress_bars
from .image_grid import image_format, save_image_grid
from .pipelines import ScoreSDELatentPipeline, ScoreSDEPipeline
from .pipelines.image_processing import sample_shape as _sample_shape
from .pretrained_models import PRETRAINED_CLASSIFIERS, PRETRAINED_MODELS, pretrained_model_path
from .schedulers import (
    CORRECTORS,
    PREDICTORS,
    INTEGRATORS,
    EDMHeunScheduler,
    ERSDEScheduler,
    ExponentialIntegratorScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    RestartScheduler,
    SDEDPMSolverScheduler,
    UniPCScheduler,
)
from .schedulers.recommended import recommended_samplers_text
from .solvers.probability_flow_ode import DIVERGENCES, PROBES, METHODS as ODE_METHODS
from .solvers.reverse_sde_torchsde import TORCHSDE_METHODS

DEFAULT_MODEL = pretrained_model_path("digits-vp")

SCHEDULER_SAMPLERS = {  # --sampler -> the scheduler that runs in the diffusers loop
    "predictor_corrector": PredictorCorrectorScheduler,
    "probability_flow": ProbabilityFlowScheduler,
    "exponential_integrator": ExponentialIntegratorScheduler,
    "edm_heun": EDMHeunScheduler,
    "sde_dpm_solver": SDEDPMSolverScheduler,
    "restart": RestartScheduler,
    "unipc": UniPCScheduler,
    "er_sde": ERSDEScheduler,
}
SOLVER_SAMPLERS = ("torchsde", "gotta_go_fast", "adaptive_ode")  # pipe(sampler=...): adaptive or torchsde solvers
SAMPLERS = (*SCHEDULER_SAMPLERS, *SOLVER_SAMPLERS)
SAMPLER_ALIASES = {"pc": "predictor_corrector", "ode": "probability_flow"}  # deprecated CLI names

# The sampler options (flag -> argparse dest) and the samplers each applies to; the others refuse them.
SAMPLER_OPTIONS = {
    "--steps": ("steps", (*SCHEDULER_SAMPLERS, "torchsde")),
    "--predictor": ("predictor", ("predictor_corrector",)),
    "--corrector": ("corrector", ("predictor_corrector",)),
    "--snr": ("snr", ("predictor_corrector",)),
    "--corrector-steps": ("corrector_steps", ("predictor_corrector",)),
    "--integrator": ("integrator", ("probability_flow",)),
    "--method": ("method", ("torchsde", "adaptive_ode")),
    "--rtol": ("rtol", ("torchsde", "gotta_go_fast", "adaptive_ode")),
    "--atol": ("atol", ("torchsde", "gotta_go_fast", "adaptive_ode")),
}
METHODS = {"torchsde": tuple(TORCHSDE_METHODS), "adaptive_ode": ODE_METHODS}

# Below this many samples the digits quality figure is noise: real held-out digits score no better than a visibly worse
# sampler and miss classes (benchmarks/bench_quality_sample_count.py, docs/training.md).
MIN_QUALITY_SAMPLES = 100


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" where there is a default to show (not for unset options and flags)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


# Python argument -> the flag that sets it, for errors raised past the CLI's own checks (by a scheduler or the pipeline).
PYTHON_ARGUMENT_FLAGS = {"num_inference_steps": "--steps", "batch_size": "--batch-size", "corrector_steps": "--corrector-steps",
                         "predictor": "--predictor", "corrector": "--corrector", "snr": "--snr", "integrator": "--integrator",
                         "method": "--method", "rtol": "--rtol", "atol": "--atol", "class_labels": "--class-label",
                         "guidance_scale": "--guidance-scale"}


def _with_flags(message):
    """``num_inference_steps must be ...`` -> ``--steps must be ...``; ``got rtol=0`` -> ``got --rtol 0``."""
    import re

    for name, flag in PYTHON_ARGUMENT_FLAGS.items():
        message = re.sub(rf"\b{name}=", f"{flag} ", message)
        message = re.sub(rf"(^|[\s(,]){name}(?= must| and| or| was| has|,)", rf"\g<1>{flag}", message)
    return message


def _note(message):
    print(f"note: {message}", file=sys.stderr)


def _positive(flag, value, allow_zero=False):
    if value is not None and not (value >= 0 if allow_zero else value > 0):
        raise SystemExit(f"{flag} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")


def _pipeline_class(path):
    """ScoreSDELatentPipeline for a folder saved as one (it holds a vae), else ScoreSDEPipeline, which also maps the
    stock diffusers score-SDE and DDPM folders."""
    try:
        name = ScoreSDEPipeline.load_config(path).get("_class_name")
    except (OSError, ValueError, EnvironmentError):
        return ScoreSDEPipeline  # from_pretrained reports what is wrong with the folder
    return ScoreSDELatentPipeline if name == ScoreSDELatentPipeline.__name__ else ScoreSDEPipeline


def _load_pipeline(model, device, classifier=None):
    try:
        path = _resolve_model(model)
        pipe = _pipeline_class(path).from_pretrained(path)
    except (OSError, ValueError, EnvironmentError) as error:
        raise SystemExit(
            f"--model {model!r} could not be loaded: {error} (pass a model folder, a Hub repo id or one of the embedded"
            f" models {', '.join(PRETRAINED_MODELS)})") from error
    if classifier is not None:
        pipe.register_modules(classifier=_load_classifier(classifier))
    return pipe.to(device)


def _load_classifier(classifier):
    """--classifier: a classifier folder, a folder holding classifier/ (train-classifier's output), or an embedded name."""
    from .guidance import NoiseConditionalClassifier

    path = pretrained_model_path(classifier) if classifier in PRETRAINED_CLASSIFIERS and not os.path.exists(
        classifier) else classifier
    subfolder = "classifier" if os.path.isdir(os.path.join(path, "classifier")) else None
    try:
        return NoiseConditionalClassifier.from_pretrained(path, subfolder=subfolder)
    except (OSError, ValueError, EnvironmentError) as error:
        raise SystemExit(f"--classifier {classifier!r} could not be loaded: {error} (pass the --output-dir of"
                         f" train-classifier, a classifier folder, or one of {', '.join(PRETRAINED_CLASSIFIERS)})") from error


# --- sample ------------------------------------------------------------------------------------------------------------
def _check_sample_arguments(args):
    """Resolve deprecated names, refuse options that do not apply to --sampler, check values: before any loading."""
    if args.sampler in SAMPLER_ALIASES:
        _note(f"--sampler {args.sampler} is deprecated; it means --sampler {SAMPLER_ALIASES[args.sampler]}.")
        args.sampler = SAMPLER_ALIASES[args.sampler]
    if args.solver is not None:
        _note(f"--solver is deprecated; use --integrator {args.solver}.")
        if args.integrator is not None and args.integrator != args.solver:
            raise SystemExit(f"--solver {args.solver} and --integrator {args.integrator} disagree; pass --integrator only.")
        args.integrator = args.solver
    misplaced = [flag for flag, (dest, samplers) in SAMPLER_OPTIONS.items()
                 if getattr(args, dest) is not None and args.sampler not in samplers]
    if misplaced:
        accepted = [flag for flag, (_, samplers) in SAMPLER_OPTIONS.items() if args.sampler in samplers]
        raise SystemExit(
            f"{', '.join(misplaced)} {'does' if len(misplaced) == 1 else 'do'} not apply to --sampler {args.sampler},"
            f" which takes {', '.join(accepted) if accepted else 'none of the sampler options'}.")
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}.")
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.guidance_scale is not None and args.class_label is None:
        raise SystemExit(f"--guidance-scale {args.guidance_scale} needs --class-label (the class to guide towards).")
    _positive("--guidance-scale", args.guidance_scale, allow_zero=True)
    for flag in ("--snr", "--rtol", "--atol"):
        _positive(flag, getattr(args, SAMPLER_OPTIONS[flag][0]))
    _positive("--corrector-steps", args.corrector_steps, allow_zero=True)
    if args.predictor == "none" and (args.corrector == "none" or args.corrector_steps == 0):
        raise SystemExit("--predictor none needs a corrector (--corrector langevin or ald, --corrector-steps >= 1).")
    if args.method is not None and args.method not in METHODS[args.sampler]:
        raise SystemExit(f"--method must be one of {', '.join(METHODS[args.sampler])} for --sampler {args.sampler},"
                         f" got {args.method!r}.")
    try:
        image_format(args.out)
    except ValueError as error:
        raise SystemExit(f"--out {args.out!r}: {error}") from None
    _check_device(args.device)


def _build_scheduler(pipe, args):
    if args.sampler not in SCHEDULER_SAMPLERS:
        return pipe.scheduler  # the solver only reads the SDE and the parameterization from it
    options = ("predictor", "corrector", "snr", "corrector_steps", "integrator")
    overrides = {name: getattr(args, name) for name in options if getattr(args, name) is not None}
    return SCHEDULER_SAMPLERS[args.sampler].from_config(pipe.scheduler.config, **overrides)


def _sampler_arguments(args):
    if args.sampler not in SOLVER_SAMPLERS:
        return {}
    given = {"method": args.method, "rtol": args.rtol, "atol": args.atol}
    return {"sampler": args.sampler, **{name: value for name, value in given.items() if value is not None}}


def _report_digits_quality(pipe, images, class_label=None):
    """For a 1 x 8 x 8 model (the embedded digits model): Frechet distance and class coverage in a digits classifier.

    A report, never a failure: whatever goes wrong here, the samples are already written."""
    if pipe.image_shape() != (1, 8, 8):
        return
    if class_label is not None:
        _report_class_recognition(images, class_label)
        return
    if len(images) < MIN_QUALITY_SAMPLES:
        print(f"digits quality skipped: {len(images)} samples; it needs --batch-size >= {MIN_QUALITY_SAMPLES}, below"
              " which even real held-out digits score no better than a visibly worse sampler.")
        return
    try:
        from .evaluation import DigitsQuality
        from .training.data import DIGITS_GREY_LEVELS, digits_split

        quality = DigitsQuality()
        real, _ = digits_split("heldout")
        floor = quality.evaluate(real[: len(images)] / DIGITS_GREY_LEVELS)
        result = quality.evaluate(images[..., 0])
    except Exception as error:  # noqa: BLE001 - the report is optional, the run has succeeded
        print(f"digits quality not computed ({type(error).__name__}: {error}); the samples are written.")
        return
    print(
        f"digits quality ({len(images)} samples; a classifier fit on held-out digits): Frechet distance"
        f" {result['frechet_distance']:.2f} (real held-out digits, same count: {floor['frechet_distance']:.2f}),"
        f" class coverage {result['class_coverage']:.2f} ({floor['class_coverage']:.2f}),"
        f" mean confidence {result['mean_confidence']:.3f} ({floor['mean_confidence']:.3f})"
    )



def _report_class_recognition(images, class_label):
    """Guided digits: the share of samples the digits classifier recognises as the requested class (a report, as above;
    the whole-data-set Frechet distance does not apply to one class: benchmarks/bench_guidance.py scores each class)."""
    try:
        from .evaluation import DigitsQuality

        shares = DigitsQuality().evaluate(images[..., 0])["class_shares"]
    except Exception as error:  # noqa: BLE001 - the report is optional, the run has succeeded
        print(f"class recognition not computed ({type(error).__name__}: {error}); the samples are written.")
        return
    print(f"class {class_label}: a digits classifier fit on held-out digits recognises {shares[class_label]:.1%} of the"
          f" {len(images)} samples as the requested class")


def sample(args):
    _check_sample_arguments(args)
    if args.quiet:
        _silence_progress_bars()
    pipe = _load_pipeline(args.model, args.device, args.classifier)
    guidance = {} if args.class_label is None else {"class_labels": args.class_label,
                                                    "guidance_scale": 1.0 if args.guidance_scale is None else args.guidance_scale}
    try:
        resolve_guidance(pipe.unet, pipe.classifier, batch_size=args.batch_size, **{"class_labels": None,
                                                                                  "guidance_scale": 1.0, **guidance})
    except ValueError as error:
        raise SystemExit(f"--model {args.model}: {_with_flags(str(error))}") from None
    try:
        pipe.scheduler = _build_scheduler(pipe, args)
    except ValueError as error:
        raise SystemExit(f"--sampler {args.sampler}: {_with_flags(str(error))}") from None
    pipe.set_progress_bar_config(disable=args.quiet)
    # One generator per sample: a sample does not depend on the batch size. torchsde then keeps one Brownian interval
    # per sample, whose bookkeeping costs ~5 ms per sample and step on the CPU, so it gets a single generator.
    generator = [torch.Generator().manual_seed(args.seed + i) for i in range(args.batch_size)]
    if args.sampler == "torchsde":
        generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    try:  # num_inference_steps=None: the sampler's own default step count.
        output = pipe(batch_size=args.batch_size, num_inference_steps=args.steps, generator=generator,
                      output_type="np", **_sampler_arguments(args), **guidance)
    except ValueError as error:
        raise SystemExit(f"--sampler {args.sampler}: {_with_flags(str(error))}") from None
    seconds = time.perf_counter() - start
    save_image_grid(pipe.numpy_to_pil(output.images), args.out)
    print(f"wrote {args.out}: {args.batch_size} samples, sampler={args.sampler}, NFE={output.nfe}, wall time {seconds:.2f} s")
    if not args.no_quality:
        _report_digits_quality(pipe, output.images, args.class_label)
    return output


# --- likelihood --------------------------------------------------------------------------------------------------------
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _list_image_folder(folder, limit):
    """The image files of --data, sorted by name: checked before the model is loaded."""
    if not os.path.isdir(folder):
        raise SystemExit(f"--data {folder!r} is not a folder.")
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS))[:limit]
    if not names:
        raise SystemExit(f"--data {folder!r} holds no images with an extension in {IMAGE_EXTENSIONS}.")
    return names


def _load_image_folder(folder, names, shape):
    """The images as PIL images in their own colour mode, grey ("L") or colour ("RGB"): the pipeline applies the same
    rule to them as to PIL images passed in Python. Sizes must already match the model."""
    import PIL.Image

    _, height, width = shape
    images = []
    for name in names:
        with PIL.Image.open(os.path.join(folder, name)) as image:
            image.load()
            if image.mode in ("1", "P"):  # bilevel and palette files: their pixels as grey or colour values
                image = image.convert("L" if image.mode == "1" else "RGB")
            if image.mode not in ("L", "RGB"):
                raise SystemExit(f"--data image {name!r} has colour mode {image.mode!r}; the likelihood takes 8-bit grey"
                                 " (L) or colour (RGB) images (convert the data set first).")
            images.append(image.copy())
        if images[-1].size != (width, height):
            raise SystemExit(
                f"--data image {name!r} is {images[-1].size[0]}x{images[-1].size[1]} pixels, the model takes"
                f" {width}x{height}; resize the data set first (bits/dim of resampled images are not comparable)."
            )
    return images


def likelihood(args):
    import numpy as np

    for name in ("batch_size", "repeats", "probes"):
        if getattr(args, name) < 1:
            raise SystemExit(f"{option_name(name)} must be >= 1, got {getattr(args, name)}.")
    if args.probe == "hadamard" and args.probes & (args.probes - 1):
        raise SystemExit(f"--probe hadamard needs --probes a power of two (1, 2, 4, ...), got {args.probes}.")
    if args.levels < 2:
        raise SystemExit(f"--levels must be >= 2 (pixel values 0..levels-1), got {args.levels}.")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {args.limit}.")
    _positive("--rtol", args.rtol)
    _positive("--atol", args.atol)
    if not 0 < args.eps < 1:
        raise SystemExit(f"--eps must be in (0, 1), got {args.eps}.")
    names = _list_image_folder(args.data, args.limit)
    _check_device(args.device)
    if args.quiet:
        _silence_progress_bars()
    refuse_latent_model(args.model, "likelihood")
    pipe = _load_pipeline(args.model, args.device)
    pipe.set_progress_bar_config(disable=args.quiet)
    images = _load_image_folder(args.data, names, _sample_shape(pipe.unet))
    dim = math.prod(_sample_shape(pipe.unet))
    most_probes = {"orthogonal": dim, "hadamard": 1 << (dim - 1).bit_length()}.get(args.probe, args.probes)
    if args.probes > most_probes:
        raise SystemExit(f"--probe {args.probe} allows at most {most_probes} probes for this model's {dim} dimensions,"
                         f" got --probes {args.probes}.")
    largest = max(int(np.asarray(image).max()) for image in images)
    if largest >= args.levels:
        raise SystemExit(f"--levels {args.levels} allows pixel values 0..{args.levels - 1}, but the images in --data"
                         f" reach {largest}; pass --levels {largest + 1} or more (256 for 8-bit images).")
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    bits_per_dim, nfe = [], 0
    for first in range(0, len(images), args.batch_size):
        try:
            output = pipe.log_likelihood(
                images[first : first + args.batch_size], generator=generator, num_repeats=args.repeats, eps=args.eps,
                rtol=args.rtol, atol=args.atol, divergence=args.divergence, probe=args.probe, num_probes=args.probes,
                num_levels=args.levels,
            )
        except ValueError as error:
            raise SystemExit(f"--data {args.data!r}: {error}") from None
        bits_per_dim.append(output.bits_per_dim)
        nfe += output.nfe
    seconds = time.perf_counter() - start
    values = torch.cat(bits_per_dim)
    if args.per_image:
        for name, value in zip(names, values.tolist()):
            print(f"{name}\t{value:.4f}")
    if len(values) > 1:
        # 95% normal-approximation interval of the data set's mean over images (image-to-image and estimator noise).
        half_width = 1.96 * values.std().item() / len(values) ** 0.5
        figure = f"{len(values)} images, {values.mean().item():.4f} +- {half_width:.4f} bits/dim (95% CI)"
    else:
        figure = f"1 image, {values.item():.4f} bits/dim (one image: no interval)"
    estimator = args.divergence if args.divergence == "exact" else f"hutchinson ({args.probes} {args.probe})"
    print(f"{args.data}: {figure}, repeats={args.repeats}, divergence={estimator}, NFE={nfe},"
          f" wall time {seconds:.2f} s")
    return values


# --- parsers -----------------------------------------------------------------------------------------------------------
MODEL_HELP = (f"model folder, Hub repo id, or an embedded model: {', '.join(PRETRAINED_MODELS)} (a local folder of that"
              " name wins)")


class _TableEpilogFormatter(_HelpFormatter):
    """Keeps texts with line breaks (the sample command's table of recommended samplers) as written."""

    def _fill_text(self, text, width, indent):
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "".join(indent + line for line in text.splitlines(keepends=True))


def _add_sample_parser(commands):
    p = commands.add_parser(
        "sample", help="generate an image grid from a model folder or Hub repo",
        formatter_class=_TableEpilogFormatter,
        description="An option whose help starts with sampler names in parentheses applies only to those samplers;"
                    " the others refuse it.",
        epilog=recommended_samplers_text(SCHEDULER_SAMPLERS))
    p.add_argument("--model", default="digits-vp", help=MODEL_HELP)
    p.add_argument("--sampler", choices=(*SAMPLERS, *SAMPLER_ALIASES), default="predictor_corrector",
                   help="predictor_corrector / probability_flow / exponential_integrator / edm_heun / sde_dpm_solver /"
                        " restart / unipc / er_sde run their scheduler in the diffusers loop (which to use per SDE and budget:"
                        " below); torchsde / gotta_go_fast / adaptive_ode (RK45) are solvers outside it"
                        " (pc and ode: deprecated names of predictor_corrector and probability_flow)")
    p.add_argument("--steps", type=int,
                   help="(all samplers but gotta_go_fast and adaptive_ode) number of steps; default: the sampler's own")
    p.add_argument("--predictor", choices=PREDICTORS, help="(predictor_corrector) default: the model's")
    p.add_argument("--corrector", choices=CORRECTORS, help="(predictor_corrector) default: the model's")
    p.add_argument("--snr", type=float, help="(predictor_corrector) corrector signal-to-noise ratio; default: the model's")
    p.add_argument("--corrector-steps", dest="corrector_steps", type=int,
                   help="(predictor_corrector) corrector updates per step; default: the model's")
    p.add_argument("--integrator", choices=INTEGRATORS, help="(probability_flow) default: heun")
    p.add_argument("--solver", choices=INTEGRATORS, help="deprecated name of --integrator")
    p.add_argument("--method",
                   help=f"(torchsde: {', '.join(METHODS['torchsde'])}; adaptive_ode: {', '.join(ODE_METHODS)})")
    p.add_argument("--rtol", type=float, help="(torchsde, gotta_go_fast, adaptive_ode) relative tolerance")
    p.add_argument("--atol", type=float, help="(torchsde, gotta_go_fast, adaptive_ode) absolute tolerance")
    p.add_argument("--class-label", dest="class_label", type=int,
                   help="class of every sample: needs a class-conditional model (classifier-free guidance, e.g."
                        " digits-vp-cfg) or --classifier")
    p.add_argument("--guidance-scale", dest="guidance_scale", type=float,
                   help="with --class-label: classifier guidance weight (score + W grad log p_t(y | x)) or classifier-free"
                        " guidance scale (uncond + W (cond - uncond)); default 1")
    p.add_argument("--classifier",
                   help="noise-conditional classifier for classifier guidance: train-classifier's --output-dir, a"
                        f" classifier folder, or {', '.join(PRETRAINED_CLASSIFIERS)} (for digits-vp)")
    p.add_argument("--seed", type=int, default=0,
                   help="sample i is drawn with seed + i (torchsde: one generator, seed, for the batch)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="number of samples")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--out", default="samples.png", help="image grid; the format follows the extension (.png, .jpg, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-quality", dest="no_quality", action="store_true",
                   help=f"skip the digits quality figure (computed for the 8x8 digits models from {MIN_QUALITY_SAMPLES}"
                        " samples on)")
    p.set_defaults(func=sample)


def _add_likelihood_parser(commands):
    p = commands.add_parser("likelihood", help="bits/dim of an image folder under the probability-flow ODE",
                            formatter_class=_HelpFormatter)
    p.add_argument("--model", default="digits-vp", help=MODEL_HELP)
    p.add_argument("--data", required=True, help="folder of images of the model's size (png, jpg, bmp, webp)")
    p.add_argument("--repeats", type=int, default=1, help="dequantizations per image (paper: 5)")
    p.add_argument("--divergence", choices=DIVERGENCES, default="hutchinson", help="divergence estimator")
    p.add_argument("--probes", type=int, default=1,
                   help="Hutchinson probes per image, all in one network pass per evaluation (paper: 1)")
    p.add_argument("--probe", choices=PROBES, default="rademacher",
                   help="probe kind (paper: rademacher); hadamard needs --probes a power of two and has less variance"
                        " (docs/likelihood.md)")
    p.add_argument("--levels", type=int, default=256,
                   help="grey levels of the data: pixel values are 0..levels-1, dequantized as (value + U) / levels"
                        " (256: 8-bit images; 17: the sklearn digits)")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of the ODE solver (paper: 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance of the ODE solver (paper: 1e-5)")
    p.add_argument("--eps", type=float, default=1e-5, help="the data's time; the ODE runs from eps to 1")
    p.add_argument("--limit", type=int, help="score only the first N images (sorted by name)")
    p.add_argument("--per-image", dest="per_image", action="store_true", help="also print each image's bits/dim")
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantization noise and the probes")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64, help="images per ODE solve")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=likelihood)


def build_parser():
    parser = argparse.ArgumentParser(prog="diffusers-sde", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_sample_parser(commands)
    _add_likelihood_parser(commands)

    from .conditional_commands import add_conditional_parsers
    from .ddgan.command import add_train_ddgan_parser
    from .guidance.training import add_train_classifier_parser
    from .training.command import add_train_parser
    from .training.autoencoder import add_train_vae_parser
    from .models.conversion import add_convert_parser

    add_train_parser(commands)
    add_conditional_parsers(commands)
    add_convert_parser(commands)
    add_train_classifier_parser(commands)
    add_train_vae_parser(commands)
    add_train_ddgan_parser(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
