"""Train a score-SDE model with continuous denoising score matching, on accelerate, and save a ScoreSDEPipeline; or,
with ``degradation`` set, a Cold Diffusion restoration network (L1 loss) saved as a ColdDiffusionPipeline.

What a run guarantees:

- Exact resumption: the data order and the loss's (t, z) draws are pure functions of (seed, micro-batch index,
  process), so ``resume="latest"`` continues the same trajectory as an uninterrupted run.
- Atomic checkpoints: ``checkpoint-N`` is written under a temporary name and renamed into place, so a run killed while
  saving leaves the previous checkpoint intact and loadable.
- A non-finite loss stops the run with an error naming the step and the last good checkpoint (never overwritten).
- Resuming refuses a checkpoint of a different model (SDE, parameterization, preset, data shape) and reports the options
  that changed; SIGINT and SIGTERM end the run with :class:`TrainingInterrupted`, naming the last checkpoint.
"""

import dataclasses
import inspect
import os
import shutil
import signal
import warnings

import torch
from tqdm.auto import tqdm

from ..cold_diffusion.channel_means import fit_channel_mean_mixture
from ..cold_diffusion.degradations import BlurDegradation, DownsampleDegradation, FadeDegradation, MaskDegradation
from ..command_options import option_name
from ..parameterization import PARAMETERIZATION_DEFAULTS, Parameterization
from ..saving import save_pipeline_atomically
from ..sde import SDE_TYPES, make_sde
from .data import encode_dataset, load_autoencoder, load_dataset, random_horizontal_flip
from .losses import (LOSSES, REDUCTIONS, WEIGHTINGS, cold_diffusion_loss, denoising_score_matching_loss,
                     discrete_score_matching_loss)
from .presets import UNET_PRESETS, build_unet

CHECKPOINT_PREFIX = "checkpoint-"
EMA_DECAYS = {"ve": 0.999, "vp": 0.9999, "subvp": 0.9999}  # paper configs
MIXED_PRECISIONS = ("no", "fp16", "bf16")
# Adam's learning rate and linear warm-up. The paper's 2e-4 over 5000 warm-up steps suits CIFAR-10-size networks trained
# for 10^5+ steps; digits-tiny learns the digits in 2000 steps at 1e-3 after 100 (the embedded model, docs/training.md).
PAPER_OPTIMIZER = dict(learning_rate=2e-4, warmup_steps=5000)
PRESET_OPTIMIZERS = {"digits-tiny": dict(learning_rate=1e-3, warmup_steps=100),
                     "digits-mini": dict(learning_rate=1e-3, warmup_steps=100)}
# Share of labels replaced by the unconditional one when --label-dropout is unset (Ho & Salimans 2021 use 0.1-0.2).
DEFAULT_LABEL_DROPOUT = 0.1
# What the network computes: a checkpoint can only resume with the same values (and data of the same shape).
SDE_PARAMETERS = {"ve": ("sigma_min", "sigma_max"), "vp": ("beta_min", "beta_max"), "subvp": ("beta_min", "beta_max")}
# Cold Diffusion (--degradation): the degradation classes and, for each, the options that set its constructor arguments.
DEGRADATIONS = {"blur": BlurDegradation, "mask": MaskDegradation, "downsample": DownsampleDegradation,
                "fade": FadeDegradation}
DEGRADATION_OPTIONS = {
    "blur": {"degradation_steps": "num_steps", "blur_kernel_size": "kernel_size", "blur_kernel_std": "kernel_std",
             "blur_kernel_std_rate": "kernel_std_rate"},
    "mask": {"degradation_steps": "num_steps", "mask_std": "mask_std", "mask_std_growth": "mask_std_growth",
             "mask_random_center": "random_center"},
    "downsample": {"degradation_steps": "num_steps"},
    "fade": {"degradation_steps": "num_steps", "fade_value": "value"},
}
_DEGRADATION_FIELDS = tuple(dict.fromkeys(name for options in DEGRADATION_OPTIONS.values() for name in options))
# Options of score training only: a restoration network (--degradation) must leave them at their defaults.
SCORE_ONLY_FIELDS = ("sde_type", "sigma_min", "sigma_max", "beta_min", "beta_max", "num_train_timesteps",
                     "prediction_type", "timestep_type", "num_classes", "label_dropout", "loss", "weighting",
                     "importance_sampling", "eps", "vae")
MODEL_FIELDS = ("sde_type", "sigma_min", "sigma_max", "beta_min", "beta_max", "num_train_timesteps", "prediction_type",
                "timestep_type", "data_centered", "model_preset", "num_classes", "vae", "degradation") + _DEGRADATION_FIELDS


class TrainingWarning(UserWarning):
    """A setting that runs but is probably not what was meant (the warm-up outlasting the run, say)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM stopped training; ``last_checkpoint`` is the checkpoint to resume from, or None."""

    def __init__(self, signal_name, step, max_steps, last_checkpoint, checkpointing_steps):
        self.signal_name, self.step, self.last_checkpoint = signal_name, step, last_checkpoint
        self.signal_number = int(getattr(signal, signal_name, signal.SIGINT))
        if last_checkpoint:
            where = f"last checkpoint: {last_checkpoint}"
        elif checkpointing_steps:
            where = f"no checkpoint yet (the first comes at step {checkpointing_steps}): nothing to resume from"
        else:
            where = "no checkpoints (--checkpointing-steps 0): nothing to resume from"
        super().__init__(f"training stopped by {signal_name} at step {step}/{max_steps}; {where}")

    @classmethod
    def at(cls, interrupt, step, config, last_checkpoint):
        """The interruption of ``config``'s run at ``step`` by ``interrupt``, a KeyboardInterrupt (SIGINT) or the
        ``KeyboardInterrupt("SIGTERM")`` that ``_SigtermAsInterrupt`` raises."""
        signal_name = "SIGTERM" if interrupt.args and interrupt.args[0] == "SIGTERM" else "SIGINT"
        return cls(signal_name, step, config.max_steps, last_checkpoint, config.checkpointing_steps)


class PushToHubError(RuntimeError):
    """The pipeline was saved locally, completely; only the upload to the Hub failed."""


@dataclasses.dataclass
class TrainingConfig:
    """Everything a training run depends on. Fields mirror ``diffusers-sde train`` options.

    Args:
        output_dir (`str`): where the final pipeline is saved (``save_pretrained``).
        data (`str`): ``"digits"`` (embedded sklearn digits, train split), a folder of same-size images, a folder
            written by ``datasets``' ``save_to_disk`` or ``imagefolder:<path>`` (see ``data.load_dataset``).
        random_flip (`bool`): mirror each training image left-right with probability 1/2.
        sde_type (`str`): ``"ve"``, ``"vp"`` or ``"subvp"``; sigma_min, sigma_max, beta_min, beta_max: its parameters.
        prediction_type, timestep_type, data_centered: the parameterization; ``None`` takes the SDE's paper default.
        model_preset (`str`): a name in ``UNET_PRESETS``.
        num_classes (`int`, *optional*): K: train a class-conditional network for classifier-free guidance
            (``num_class_embeds = K + 1``, the last label, K, being the unconditional one) on labelled data.
        label_dropout (`float`, *optional*): with ``num_classes``, the probability that a training label is replaced by
            the unconditional label K, so one network learns both scores (default 0.1).
        loss (`str`): ``"continuous"`` (Eq. 7) or ``"discrete"`` (SMLD for VE, DDPM for VP, over
            ``num_train_timesteps`` levels; takes no weighting, importance sampling or eps).
        weighting (`str`), importance_sampling (`bool`), reduction (`str`), eps (`float`): the loss, see ``losses``.
        max_steps (`int`): optimizer steps. batch_size (`int`): per process and micro-batch.
        gradient_accumulation_steps (`int`), mixed_precision (`str`): passed to ``accelerate.Accelerator``.
        learning_rate (`float`), warmup_steps (`int`), grad_clip (`float`): Adam with linear warm-up, norm clipping.
            ``None`` takes the preset's (``PRESET_OPTIMIZERS``: 1e-3 and 100 for ``digits-tiny``), else the paper's
            2e-4 and 5000.
        ema_decay (`float`): ``None`` takes 0.999 (VE) / 0.9999 (VP, sub-VP); EMA uses diffusers' warm-up.
        checkpointing_steps (`int`): save ``checkpoint-N`` every this many steps (0: never).
        checkpoint_dir (`str`): ``None`` means ``<output_dir>/checkpoints``. checkpoints_total_limit: keep this many.
        resume (`str`): ``None``, ``"latest"`` or a checkpoint folder. The checkpoint must come from the same model
            (``MODEL_FIELDS`` and the data's shape); other options may change, and those that do are reported.
        seed (`int`), log_every (`int`).
        sample_every (`int`): every this many steps, write a grid of ``num_samples`` samples of the EMA weights to
            ``<output_dir>/samples/step-N.png`` (0: never).
        push_to_hub (`bool`), hub_model_id (`str`): after saving, push the pipeline to the Hub repo ``hub_model_id``
            (default: the output folder's name).
        vae (`str`, *optional*): an ``AutoencoderKL`` folder (``diffusers-sde train-vae``): the model learns its scaled
            latents (encoded once, before training, from images in [-1, 1]) and a ``ScoreSDELatentPipeline`` is saved.
        degradation (`str`, *optional*): ``"blur"``, ``"mask"``, ``"downsample"`` or ``"fade"``: train a Cold Diffusion
            restoration network R(D(x0, t), t) ~ x0 with the L1 loss (``losses.cold_diffusion_loss``) and save a
            ``ColdDiffusionPipeline`` instead; the score options (``SCORE_ONLY_FIELDS``) must then stay unset.
        degradation_steps (`int`, *optional*): T. blur_kernel_size, blur_kernel_std, blur_kernel_std_rate (blur),
            mask_std, mask_std_growth, mask_random_center (mask), fade_value (fade): the degradation's arguments (``DEGRADATION_OPTIONS``);
            unset ones take the degradation class's defaults.
        channel_mean_components (`int`, *optional*): with ``degradation``, K: the Gaussian mixture fitted (EM) to the
            training images' channel means and stored in the scheduler's config, the start of ``pipe()``'s generation
            (default 1).
    """

    output_dir: str
    data: str = "digits"
    random_flip: bool = False
    sde_type: str = "vp"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    beta_min: float = 0.1
    beta_max: float = 20.0
    num_train_timesteps: int = 1000
    prediction_type: str = None
    timestep_type: str = None
    data_centered: bool = None
    model_preset: str = "digits-tiny"
    num_classes: int = None
    label_dropout: float = None
    loss: str = "continuous"
    weighting: str = "std"
    importance_sampling: bool = False
    reduction: str = "mean"
    eps: float = 1e-5
    max_steps: int = 2000
    batch_size: int = 128
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    learning_rate: float = None
    warmup_steps: int = None
    grad_clip: float = 1.0
    ema_decay: float = None
    checkpointing_steps: int = 500
    checkpoint_dir: str = None
    checkpoints_total_limit: int = 2
    resume: str = None
    seed: int = 0
    log_every: int = 100
    sample_every: int = 0
    num_samples: int = 16
    push_to_hub: bool = False
    hub_model_id: str = None
    vae: str = None
    degradation: str = None
    degradation_steps: int = None
    blur_kernel_size: int = None
    blur_kernel_std: float = None
    blur_kernel_std_rate: float = None
    mask_std: float = None
    mask_std_growth: float = None
    mask_random_center: bool = None
    fade_value: float = None
    channel_mean_components: int = None

    def validate(self):
        checks = [
            ("sde_type", self.sde_type in SDE_TYPES, f"one of {SDE_TYPES}"),
            ("model_preset", self.model_preset in UNET_PRESETS, f"one of {tuple(UNET_PRESETS)}"),
            ("loss", self.loss in LOSSES, f"one of {LOSSES}"),
            ("loss", self.loss == "continuous" or self.sde_type in ("ve", "vp"),
             "'continuous' for sde_type 'subvp' (the discrete losses are SMLD for VE and DDPM for VP)"),
            ("weighting", self.weighting in WEIGHTINGS, f"one of {WEIGHTINGS}"),
            ("weighting", self.loss == "continuous" or self.weighting == "std",
             "'std' with --loss discrete (its weights are fixed: sigma_i^2 for SMLD, 1 for DDPM)"),
            ("reduction", self.reduction in REDUCTIONS, f"one of {REDUCTIONS}"),
            ("mixed_precision", self.mixed_precision in MIXED_PRECISIONS, f"one of {MIXED_PRECISIONS}"),
            ("max_steps", self.max_steps >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, "an integer >= 1"),
            ("learning_rate", self.learning_rate is None or self.learning_rate > 0, "> 0"),
            ("warmup_steps", self.warmup_steps is None or self.warmup_steps >= 0, ">= 0"),
            ("grad_clip", self.grad_clip > 0, "> 0"),
            ("checkpointing_steps", self.checkpointing_steps >= 0, ">= 0 (0 disables checkpoints)"),
            ("checkpoints_total_limit", self.checkpoints_total_limit >= 1, ">= 1"),
            ("eps", 0 < self.eps < 1, "in (0, 1)"),
            ("ema_decay", self.ema_decay is None or 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("sample_every", self.sample_every >= 0, ">= 0 (0 disables sample grids)"),
            ("num_classes", self.num_classes is None or self.num_classes >= 1, "an integer >= 1 (or unset: unconditional)"),
            ("label_dropout", self.label_dropout is None or 0 <= self.label_dropout < 1, "in [0, 1)"),
            ("num_samples", self.num_samples >= 1, "an integer >= 1"),
            ("degradation", self.degradation is None or self.degradation in DEGRADATIONS,
             f"one of {tuple(DEGRADATIONS)} (or unset: score training)"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{option_name(name)} must be {allowed}, got {getattr(self, name)!r}.")
        self._validate_degradation()
        if self.label_dropout is not None and self.num_classes is None:
            raise ValueError(f"--label-dropout {self.label_dropout} needs --num-classes (a class-conditional model).")
        if self.importance_sampling and self.weighting != "likelihood":
            raise ValueError("--importance-sampling needs --weighting likelihood, got --weighting std.")
        if self.loss == "discrete" and self.sde_type == "vp" and self.timestep_type not in (None, "ddpm"):
            raise ValueError(f"--loss discrete with --sde-type vp trains on DDPM's discrete kernel, which only"
                             f" --timestep-type ddpm (the default here) samples with; got --timestep-type"
                             f" {self.timestep_type}.")

    def _validate_degradation(self):
        takes = DEGRADATION_OPTIONS.get(self.degradation, {})
        for name in _DEGRADATION_FIELDS:
            if getattr(self, name) is not None and name not in takes:
                users = [degradation for degradation, options in DEGRADATION_OPTIONS.items() if name in options]
                raise ValueError(f"{option_name(name)} {getattr(self, name)} applies to --degradation {' or '.join(users)};"
                                 f" got --degradation {self.degradation or 'unset (score training)'}.")
        if self.degradation is None:
            if self.channel_mean_components is not None:
                raise ValueError(f"--channel-mean-components {self.channel_mean_components} needs --degradation (the"
                                 " generation start of a Cold Diffusion model).")
            return
        if self.channel_mean_components is not None and self.channel_mean_components < 1:
            raise ValueError(f"--channel-mean-components must be an integer >= 1, got {self.channel_mean_components}.")
        defaults = {field.name: field.default for field in dataclasses.fields(TrainingConfig)}
        for name in SCORE_ONLY_FIELDS:
            if getattr(self, name) != defaults[name]:
                raise ValueError(f"{option_name(name)} {getattr(self, name)} is an option of score training; --degradation"
                                 f" {self.degradation} trains a restoration network with Cold Diffusion's L1 loss:"
                                 f" leave {option_name(name)} unset.")

    def build_degradation(self):
        """The Cold Diffusion degradation of ``degradation`` and its options (``None`` for score training)."""
        if self.degradation is None:
            return None
        options = DEGRADATION_OPTIONS[self.degradation]
        arguments = {argument: self.resolved(name) for name, argument in options.items()}
        try:
            return DEGRADATIONS[self.degradation](**arguments)
        except ValueError as error:
            raise ValueError(f"--degradation {self.degradation}: {error}") from error

    def resolved(self, name):
        """A field's value, with its default when unset (None): the SDE's paper parameterization and EMA decay, the
        preset's optimizer settings, the degradation class's arguments."""
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "channel_mean_components":
            return 1 if self.degradation is not None else None
        if name in DEGRADATION_OPTIONS.get(self.degradation, {}):
            argument = DEGRADATION_OPTIONS[self.degradation][name]
            return inspect.signature(DEGRADATIONS[self.degradation].__init__).parameters[argument].default
        if name in PAPER_OPTIMIZER:
            return PRESET_OPTIMIZERS.get(self.model_preset, PAPER_OPTIMIZER)[name]
        if name == "ema_decay":
            return EMA_DECAYS[self.sde_type]
        if name == "timestep_type" and self.loss == "discrete" and self.sde_type == "vp":
            return "ddpm"  # DDPM's loss trains on its discrete kernel: the saved model must be sampled with it
        if name == "label_dropout":
            return DEFAULT_LABEL_DROPOUT if self.num_classes is not None else None
        return PARAMETERIZATION_DEFAULTS[self.sde_type].get(name)

    def warn_about_settings(self):
        warmup_steps = self.resolved("warmup_steps")
        if warmup_steps > self.max_steps:
            reached = self.max_steps / warmup_steps
            warnings.warn(
                f"--warmup-steps {warmup_steps} exceeds --max-steps {self.max_steps}: the learning rate only climbs to"
                f" {reached:.0%} of --learning-rate {self.resolved('learning_rate'):g}; lower --warmup-steps or raise"
                " --max-steps.", TrainingWarning, stacklevel=3)


# --- checkpoints -------------------------------------------------------------------------------------------------
def list_checkpoints(checkpoint_dir):
    """Completed ``checkpoint-N`` folders, oldest first (temporary, half-written ones are ignored)."""
    if not os.path.isdir(checkpoint_dir):
        return []
    found = []
    for name in os.listdir(checkpoint_dir):
        suffix = name[len(CHECKPOINT_PREFIX):]
        if name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            found.append((int(suffix), os.path.join(checkpoint_dir, name)))
    return [path for _, path in sorted(found)]


def resolve_resume(resume, checkpoint_dir):
    if resume == "latest":
        checkpoints = list_checkpoints(checkpoint_dir)
        if not checkpoints:
            raise ValueError(f"--resume latest: no {CHECKPOINT_PREFIX}N folder in {checkpoint_dir!r}.")
        return checkpoints[-1]
    if not os.path.isfile(os.path.join(resume, "training_state.json")):
        raise ValueError(
            f"--resume {resume!r} is not a checkpoint folder (no training_state.json); pass 'latest' or a"
            f" {CHECKPOINT_PREFIX}N folder."
        )
    return resume


def save_checkpoint_atomically(accelerator, checkpoint_dir, step, state, total_limit):
    """accelerate ``save_state`` into a temporary folder, then rename it to ``checkpoint-<step>``."""
    import json

    final = os.path.join(checkpoint_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(checkpoint_dir, f".tmp-{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(checkpoint_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    if accelerator.is_main_process:
        # Written last: its presence marks the folder as complete.
        with open(os.path.join(temporary, "training_state.json"), "w") as handle:
            json.dump(state, handle)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(temporary, final)
        for old in list_checkpoints(checkpoint_dir)[:-total_limit]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def checkpoint_if_due(accelerator, checkpoint_dir, step, config, data_shape, last_checkpoint):
    """Save ``checkpoint-<step>`` when ``config.checkpointing_steps`` divides ``step``; the newest checkpoint's path."""
    if not config.checkpointing_steps or step % config.checkpointing_steps:
        return last_checkpoint
    state = {"step": step, "config": dataclasses.asdict(config), "data_shape": data_shape}
    return save_checkpoint_atomically(accelerator, checkpoint_dir, step, state, config.checkpoints_total_limit)


def _micro_batch_seed(seed, micro_batch, rank):
    """Seed of the (t, z) draws of one micro-batch on one process: a pure function, like the data order, so resuming
    needs no generator state and stays exact whatever the number of processes."""
    return (seed * 1_000_003 + micro_batch) * 1009 + rank


def _batch_indices(num_examples, batch_size, micro_batch, seed, rank, world_size):
    """Indices of the micro-batch number ``micro_batch`` for this process: a pure function, so resumption is exact."""
    per_epoch = num_examples // (batch_size * world_size)
    if per_epoch < 1:
        raise ValueError(
            f"--batch-size {batch_size} x {world_size} processes exceeds the {num_examples} training examples."
        )
    epoch, position = divmod(micro_batch, per_epoch)
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    start = (position * world_size + rank) * batch_size
    return order[start:start + batch_size]


def linear_warmup(warmup_steps):
    """The learning-rate factor of a linear warm-up over ``warmup_steps`` steps (none at 0), for LambdaLR."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def _save_samples(unet, ema, scheduler, config, path, vae=None):
    """A grid of samples of the EMA weights (20-step exponential integrator, decoded by ``vae`` when given; a
    restoration network generates with its own scheduler), training weights restored after."""
    from ..cold_diffusion import ColdDiffusionPipeline
    from ..image_grid import save_image_grid
    from ..pipelines import ScoreSDELatentPipeline, ScoreSDEPipeline
    from ..schedulers import ExponentialIntegratorScheduler

    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    unet.eval()
    try:
        if config.degradation:
            pipe, options = ColdDiffusionPipeline(unet=unet, scheduler=scheduler), {}
        else:
            sampler = ExponentialIntegratorScheduler.from_config(scheduler.config)
            pipe = (ScoreSDEPipeline(unet=unet, scheduler=sampler) if vae is None
                    else ScoreSDELatentPipeline(vae=vae, unet=unet, scheduler=sampler))
            options = {"num_inference_steps": 20}
        pipe.set_progress_bar_config(disable=True)
        images = pipe(batch_size=config.num_samples, generator=torch.Generator().manual_seed(config.seed),
                      **options).images
        save_image_grid(images, path)
    finally:
        unet.train()
        ema.restore(unet.parameters())



def _compare_with_checkpoint(config, state, data_shape, resume_path):
    """Refuse a checkpoint of another model (one line listing the differences); return the other changed options."""
    if "config" not in state:  # written by another tool: nothing to compare with
        return []
    fields = {field.name for field in dataclasses.fields(TrainingConfig)}
    stored = TrainingConfig(**{name: value for name, value in state["config"].items() if name in fields})
    sde_parameters = {name for names in SDE_PARAMETERS.values() for name in names}
    # An SDE's parameters matter only if it uses them; a degradation's options only for that degradation.
    model_fields = [name for name in MODEL_FIELDS
                    if (name not in sde_parameters or name in SDE_PARAMETERS[stored.sde_type])
                    and (name not in _DEGRADATION_FIELDS or name in DEGRADATION_OPTIONS.get(stored.degradation, {}))]
    def changed(names):
        return [f"{option_name(name)} {stored.resolved(name)} -> {config.resolved(name)}" for name in names
                if stored.resolved(name) != config.resolved(name)]

    differing = changed(model_fields)
    stored_shape = state.get("data_shape")
    if stored_shape is not None and list(stored_shape) != list(data_shape):
        differing.append(f"--data image shape {'x'.join(map(str, stored_shape))} -> {'x'.join(map(str, data_shape))}")
    if differing:
        raise ValueError(
            f"--resume {resume_path} holds a different model: {', '.join(differing)} (checkpoint -> now); resume with"
            " the checkpoint's values, or train the new model into another --output-dir.")
    return changed(sorted(fields - set(MODEL_FIELDS) - {"resume"}))


def _set_learning_rate(optimizer, lr_schedule, learning_rate):
    """After loading a checkpoint: the configured learning rate, at the warm-up's current point."""
    lr_schedule.base_lrs = [learning_rate] * len(optimizer.param_groups)
    for group, factor in zip(optimizer.param_groups, lr_schedule.lr_lambdas):
        group["initial_lr"] = learning_rate
        group["lr"] = learning_rate * factor(lr_schedule.last_epoch)


class _SigtermAsInterrupt:
    """Within the block, SIGTERM raises KeyboardInterrupt("SIGTERM") as Ctrl-C does, so both end the run the same way."""

    def __enter__(self):
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def train(config):
    """Run training as described by a :class:`TrainingConfig`; returns the saved ``ScoreSDEPipeline`` (a
    ``ColdDiffusionPipeline`` with ``degradation`` set).

    Raises :class:`TrainingInterrupted` on SIGINT / SIGTERM, ``FloatingPointError`` on a non-finite loss and
    :class:`PushToHubError` when ``push_to_hub`` fails after the local save."""
    import json

    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from ..cold_diffusion import ColdDiffusionPipeline, ColdDiffusionScheduler
    from ..pipelines import ScoreSDELatentPipeline, ScoreSDEPipeline
    from ..schedulers import PredictorCorrectorScheduler

    config.validate()
    config.warn_about_settings()
    checkpoint_dir = config.checkpoint_dir or os.path.join(config.output_dir, "checkpoints")
    resume_path = resolve_resume(config.resume, checkpoint_dir) if config.resume else None

    # cpu=True on a machine without CUDA makes torchrun / accelerate launch start a gloo (MULTI_CPU) process group.
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available(),
                              gradient_accumulation_steps=config.gradient_accumulation_steps)
    prediction_type, timestep_type, data_centered = (
        config.resolved(name) for name in ("prediction_type", "timestep_type", "data_centered"))
    sde = make_sde(config.sde_type, config.sigma_min, config.sigma_max, config.beta_min, config.beta_max)
    parameterization = Parameterization(sde, prediction_type, timestep_type, config.num_train_timesteps)

    labels = None
    vae = load_autoencoder(config.vae) if config.vae else None
    images_centered = True if vae is not None else data_centered  # diffusers' VAEs take images in [-1, 1]
    if config.num_classes is None:
        data = load_dataset(config.data, images_centered)
    else:
        data, labels = load_dataset(config.data, images_centered, with_labels=True)
        _check_labels(labels, config.num_classes, config.data)
    if vae is not None:
        data = encode_dataset(vae, data)
        accelerator.print(f"encoded {len(data)} images with --vae {config.vae}: latents {tuple(data.shape[1:])}")
    data_shape = list(data.shape[1:])
    degradation = config.build_degradation()
    if degradation is not None:
        _check_degradation_fits(degradation, data[:1], config.degradation)
    changed = []
    if resume_path:
        with open(os.path.join(resume_path, "training_state.json")) as handle:
            state = json.load(handle)
        changed = _compare_with_checkpoint(config, state, data_shape, resume_path)

    learning_rate = config.resolved("learning_rate")
    torch.manual_seed(config.seed)  # network initialization
    unet = build_unet(config.model_preset, tuple(data.shape[2:]) if data.shape[2] != data.shape[3] else data.shape[2],
                      data.shape[1], timestep_type, num_classes=config.num_classes)
    optimizer = torch.optim.Adam(unet.parameters(), lr=learning_rate)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup(config.resolved("warmup_steps")))
    # The warm-up counts optimizer steps, whatever the number of processes: the schedule is stepped by hand.
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema = EMAModel(accelerator.unwrap_model(unet).parameters(), decay=config.resolved("ema_decay"),
                   use_ema_warmup=True, power=3 / 4)
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema, lr_schedule)

    if degradation is not None:
        mixture = fit_channel_mean_mixture(data, config.resolved("channel_mean_components"), seed=config.seed)
        scheduler = ColdDiffusionScheduler(degradation=degradation.to_config(), data_centered=data_centered,
                                           initial_weights=mixture.weights.tolist(), initial_means=mixture.means.tolist(),
                                           initial_stds=mixture.stds.tolist())
    else:
        scheduler = PredictorCorrectorScheduler(
            sde_type=config.sde_type, sigma_min=config.sigma_min, sigma_max=config.sigma_max, beta_min=config.beta_min,
            beta_max=config.beta_max, num_train_timesteps=config.num_train_timesteps, prediction_type=prediction_type,
            timestep_type=timestep_type, data_centered=data_centered)

    step = 0
    if resume_path:
        accelerator.load_state(resume_path)
        step = state["step"]
        # The checkpoint restores the old learning rate and EMA decay: the options given now take over.
        _set_learning_rate(optimizer, lr_schedule, learning_rate)
        ema.decay = config.resolved("ema_decay")
        accelerator.print(f"resumed from {resume_path} at step {step}")
        if changed:
            accelerator.print(f"options changed since the checkpoint (checkpoint -> now, applied from here on):"
                              f" {', '.join(changed)}")
    last_checkpoint = resume_path

    data = data.to(accelerator.device)
    labels = labels.to(accelerator.device) if labels is not None else None
    unet.train()
    accumulation = config.gradient_accumulation_steps
    running, running_steps = 0.0, 0  # the losses summed since the last log line, and over how many steps
    progress = tqdm(total=config.max_steps, initial=step, desc="training", unit="step",
                    disable=not accelerator.is_local_main_process)
    try:
        with _SigtermAsInterrupt():
            while step < config.max_steps:
                for micro in range(accumulation):
                    micro_batch = step * accumulation + micro
                    indices = _batch_indices(len(data), config.batch_size, micro_batch, config.seed,
                                             accelerator.process_index, accelerator.num_processes)
                    noise = torch.Generator().manual_seed(
                        _micro_batch_seed(config.seed, micro_batch, accelerator.process_index))
                    with accelerator.accumulate(unet):
                        # The flips come from the micro-batch's generator too, so resumption stays exact.
                        batch = random_horizontal_flip(data[indices], noise) if config.random_flip else data[indices]
                        model = unet if labels is None else _conditioned(
                            unet, _drop_labels(labels[indices], config.num_classes, config.resolved("label_dropout"),
                                               noise))
                        with accelerator.autocast():
                            if degradation is not None:
                                loss = cold_diffusion_loss(model, batch, degradation, reduction=config.reduction,
                                                           generator=noise)
                            elif config.loss == "discrete":
                                loss = discrete_score_matching_loss(model, batch, sde, parameterization,
                                                                    reduction=config.reduction, generator=noise)
                            else:
                                loss = denoising_score_matching_loss(
                                    model, batch, sde, parameterization, weighting=config.weighting, eps=config.eps,
                                    reduction=config.reduction, importance_sampling=config.importance_sampling,
                                    generator=noise)
                        if not torch.isfinite(loss):
                            raise FloatingPointError(_non_finite_loss_message(loss, step + 1, last_checkpoint))
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(unet.parameters(), config.grad_clip)
                        optimizer.step()
                        optimizer.zero_grad()
                    running += loss.item() / accumulation
                step += 1
                running_steps += 1
                lr_schedule.step()
                ema.step(accelerator.unwrap_model(unet).parameters())
                progress.update(1)
                progress.set_postfix({"last batch loss": f"{loss.item():.4f}"})
                if config.sample_every and step % config.sample_every == 0 and accelerator.is_main_process:
                    _save_samples(accelerator.unwrap_model(unet), ema, scheduler, config,
                                  os.path.join(config.output_dir, "samples", f"step-{step}.png"), vae)
                if config.log_every and step % config.log_every == 0:
                    accelerator.print(
                        f"step {step}/{config.max_steps} mean loss {running / running_steps:.4f} (steps"
                        f" {step - running_steps + 1}-{step}) lr {lr_schedule.get_last_lr()[0]:.2e}"
                        f" ema decay {ema.cur_decay_value:.4f}")
                    running, running_steps = 0.0, 0
                last_checkpoint = checkpoint_if_due(accelerator, checkpoint_dir, step, config, data_shape,
                                                    last_checkpoint)
    except KeyboardInterrupt as interrupt:
        raise TrainingInterrupted.at(interrupt, step, config, last_checkpoint) from interrupt
    finally:
        progress.close()

    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(unet)
    ema.copy_to(final.parameters())
    if degradation is not None:
        pipeline = ColdDiffusionPipeline(unet=final.eval(), scheduler=scheduler)
    elif vae is not None:
        pipeline = ScoreSDELatentPipeline(vae=vae, unet=final.eval(), scheduler=scheduler)
    else:
        pipeline = ScoreSDEPipeline(unet=final.eval(), scheduler=scheduler)
    if accelerator.is_main_process:
        save_pipeline_atomically(pipeline, config.output_dir)
        accelerator.print(f"saved the EMA pipeline to {config.output_dir}")
        if config.push_to_hub:  # after the local save: a failed upload loses nothing
            repo_id = config.hub_model_id or os.path.basename(os.path.abspath(config.output_dir))
            try:
                pipeline.push_to_hub(repo_id)
            except Exception as error:  # noqa: BLE001 - any failure of the upload; the local save is done
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise PushToHubError(f"the pipeline is saved in {config.output_dir} (complete); pushing it to the Hub"
                                     f" repo {repo_id!r} failed: {reason}") from error
    accelerator.end_training()
    return pipeline


def _check_degradation_fits(degradation, images, name):
    """Degrade one training image to every level T before training: a degradation the images cannot take (a blur
    kernel wider than the image, more halvings than its size allows) fails here, naming the option."""
    try:
        degradation(images, degradation.num_steps)
    except ValueError as error:
        raise ValueError(f"--degradation {name} does not fit the training images: {error}") from error


def _check_labels(labels, num_classes, data):
    """Every label of the data must be a class of the model: 0 <= label < num_classes."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"--num-classes {num_classes} allows labels 0..{num_classes - 1}, but --data {data!r} has labels"
                         f" {int(labels.min())}..{int(labels.max())}; pass --num-classes {int(labels.max()) + 1}.")


def _drop_labels(labels, num_classes, label_dropout, generator):
    """Classifier-free guidance training (Ho & Salimans 2021, Alg. 1 line 3): each label becomes the unconditional
    label ``num_classes`` with probability ``label_dropout``; drawn from the micro-batch's generator (exact resumption)."""
    dropped = torch.rand(len(labels), generator=generator, device=generator.device) < label_dropout
    return torch.where(dropped.to(labels.device), torch.full_like(labels, num_classes), labels)


def _conditioned(unet, class_labels):
    """The network as the losses call it, ``model(sample, timestep)``, fed the batch's class labels."""
    return lambda sample, timestep: unet(sample, timestep, class_labels=class_labels)


def _non_finite_loss_message(loss, step, last_checkpoint):
    if last_checkpoint:
        advice = (f"Last good checkpoint: {last_checkpoint} (resume with --resume latest, perhaps with a lower"
                  " --learning-rate).")
    else:
        advice = "No checkpoint was saved before it: start again, with a lower --learning-rate."
    return f"training loss is {loss.item()} at step {step}; stopped without saving. {advice}"
