"""What every diffusers-sde scheduler shares: the SDE config, the time grid, the plan, and the diffusers contract.

A scheduler here is a thin plan over the SDE object. ``set_timesteps`` precomputes the plan: one :class:`PlanStep` per
network evaluation, holding as Python floats the noise level the network sees and the one the step returns (so
``step`` does no host-device synchronization and allocates only its noise). ``step`` finds its place in the plan from
the ``timestep`` it is handed (or from :meth:`set_begin_index`), the way diffusers' schedulers do, so a run can start
anywhere on the schedule (img2img, SDEdit, inpainting), and after each step the noise level of the returned sample is
public (:attr:`ScoreSDESchedulerOutput.prev_level`, :attr:`ScoreSDESchedulerMixin.sample_level`).

``order`` is the number of network evaluations per grid time, so diffusers' arithmetic
(``timesteps[t_start * order:]``, ``set_begin_index(t_start * order)``) lands on the first evaluation of a grid time.
"""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, deprecate
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import PARAMETERIZATION_DEFAULTS, Parameterization
from ..sde import SDE_TYPES, make_sde
from ..validation import check_integer

# The paper's last sampling time per SDE (score_sde configs: sampling.eps, 1e-5 for VE, 1e-3 for VP and sub-VP).
SAMPLING_EPS_DEFAULTS = {"ve": 1e-5, "vp": 1e-3, "subvp": 1e-3}

# Every diffusers-sde scheduler class, by name; filled by ScoreSDESchedulerMixin.__init_subclass__.
_SCHEDULER_CLASSES = {}


@dataclass(frozen=True)
class NoiseLevel:
    """A point of the reverse process: time ``t`` and the kernel x_t = a x_0 + s z there.

    Args:
        t (`float`): continuous SDE time in [0, 1] (0 is the data).
        a (`float`): mean coefficient a(t).
        s (`float`): kernel standard deviation s(t).
        g (`float`): diffusion g(t) of the forward SDE.
        f (`float`): drift coefficient, f(x, t) = f x.
    """

    t: float
    a: float
    s: float
    g: float = 0.0
    f: float = 0.0

    def perturb(self, original_samples, noise):
        """Forward-noise clean data to this level: a x_0 + s noise (the data itself at the data level)."""
        return self.a * original_samples + self.s * noise


DATA_LEVEL = NoiseLevel(t=0.0, a=1.0, s=0.0)  # where every run ends: the noise-free data


@dataclass(frozen=True)
class PlanStep:
    """One network evaluation of a plan: the network sees the sample at ``level``; the step returns it at ``target``."""

    level: NoiseLevel
    target: NoiseLevel


@dataclass(frozen=True)
class HeunCorrection(PlanStep):
    """Heun's second evaluation, at the end of a step that began at ``start``; its ``target`` may be a churned level."""

    start: NoiseLevel


@dataclass(frozen=True)
class Denoise(PlanStep):
    """The final noise removal (Tweedie's formula) at the last grid time; its ``target`` is :data:`DATA_LEVEL`."""


@dataclass
class ScoreSDESchedulerOutput(BaseOutput):
    """Output of a diffusers-sde scheduler's ``step``.

    Args:
        prev_sample (`torch.Tensor`): the sample to feed the next step.
        prev_sample_mean (`torch.Tensor`): the same update without its fresh noise (the paper's ``x_mean``); at the
            final step it is the noise-free (denoised) result and equals ``prev_sample``.
        prev_level (`NoiseLevel`): where ``prev_sample`` lies: its time t and kernel coefficients (a, s). Inpainting
            re-noises the known pixels to exactly this level (``prev_level.perturb(x0, noise)``).
    """

    prev_sample: torch.Tensor
    prev_sample_mean: torch.Tensor
    prev_level: NoiseLevel = None


def _is_foreign(config):
    """A config not written by a diffusers-sde scheduler (``scheduler.config`` carries no ``_class_name``)."""
    name = config.get("_class_name")
    if name is not None:
        return name not in _SCHEDULER_CLASSES
    return "sde_type" not in config and ("beta_start" in config or "correct_steps" in config)


def _translate_foreign_config(config):
    """Map a stock diffusers scheduler config to the equivalent SDE config, or explain why it cannot be."""
    name = config.get("_class_name") or ("ScoreSdeVeScheduler" if "correct_steps" in config else "a DDPM-family scheduler")
    if name == "ScoreSdeVeScheduler":
        return dict(
            sde_type="ve", sigma_min=config.get("sigma_min", 0.01), sigma_max=config.get("sigma_max", 1348.0),
            num_train_timesteps=config.get("num_train_timesteps", 2000), sampling_eps=config.get("sampling_eps", 1e-5),
            snr=config.get("snr", 0.15), corrector_steps=config.get("correct_steps", 1),
            prediction_type="score", timestep_type="sigma", data_centered=False,
        )
    if "beta_start" in config and "beta_end" in config:
        schedule = config.get("beta_schedule", "linear")
        if schedule != "linear" or config.get("trained_betas") is not None:
            raise ValueError(
                f"scheduler config of {name} has beta_schedule={schedule!r}"
                f"{' with trained_betas' if config.get('trained_betas') is not None else ''}; only beta_schedule='linear'"
                " corresponds to a VP SDE (beta(t) linear in t), so it cannot be mapped."
            )
        steps = config.get("num_train_timesteps", 1000)
        return dict(
            sde_type="vp", beta_min=config["beta_start"] * steps, beta_max=config["beta_end"] * steps,
            num_train_timesteps=steps, prediction_type=config.get("prediction_type", "epsilon"),
            timestep_type="ddpm", data_centered=True,  # trained on DDPM's discrete schedule
        )
    raise ValueError(
        f"scheduler config of class {name!r} cannot be mapped to a score SDE. Allowed: diffusers-sde schedulers"
        f" {tuple(_SCHEDULER_CLASSES)}, diffusers' ScoreSdeVeScheduler, or a DDPM-family config (beta_start, beta_end,"
        " beta_schedule='linear')."
    )


class ScoreSDESchedulerMixin(SchedulerMixin, ConfigMixin):
    """Shared base of the diffusers-sde schedulers.

    A subclass sets ``order``, builds its plan in :meth:`_build_plan` (a list of :class:`PlanStep`) and applies one
    plan step in :meth:`_update`; :meth:`step`, the position in the plan, the NaN guard and the output live here.
    """

    config_name = "scheduler_config.json"
    _renamed_config_keys = {}  # old config key -> new one, for configs saved by earlier versions

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _SCHEDULER_CLASSES[cls.__name__] = cls  # registers itself: compatibles and config mapping need no name list

    def _setup(self, sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
               prediction_type, timestep_type, data_centered):
        """Validate the shared config, resolve its paper defaults (None -> the SDE's) and build the SDE."""
        if sde_type not in SDE_TYPES:
            raise ValueError(f"sde_type must be one of {SDE_TYPES}, got {sde_type!r}.")
        given = dict(prediction_type=prediction_type, timestep_type=timestep_type, data_centered=data_centered)
        resolved = {key: PARAMETERIZATION_DEFAULTS[sde_type][key] if value is None else value for key, value in given.items()}
        resolved["sampling_eps"] = SAMPLING_EPS_DEFAULTS[sde_type] if sampling_eps is None else sampling_eps
        self.register_to_config(**resolved)
        if not 0 < resolved["sampling_eps"] < 1:
            raise ValueError(f"sampling_eps must be in (0, 1), got {resolved['sampling_eps']}.")
        if not (isinstance(num_train_timesteps, int) and num_train_timesteps >= 2):
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {num_train_timesteps!r}.")
        self.sde = make_sde(sde_type, sigma_min, sigma_max, beta_min, beta_max)
        self.parameterization = Parameterization(
            self.sde, resolved["prediction_type"], resolved["timestep_type"], num_train_timesteps
        )
        self.init_noise_sigma = self.sde.prior_std
        self.num_inference_steps = None
        self.timesteps = None
        self._plan = []
        self._grid_levels = []
        self._step_index = None
        self._begin_index = None
        self._finite_flags = []

    # --- diffusers contract --------------------------------------------------------------------------------
    def __len__(self):
        return self.config.num_train_timesteps

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """Like diffusers' ``from_config``; a stock diffusers config (DDPM family, ``ScoreSdeVeScheduler``) is first
        mapped to the equivalent SDE config, so ``PredictorCorrectorScheduler.from_config(ddpm.scheduler.config)`` works."""
        if config is not None and not isinstance(config, str):
            config = dict(config)
            if _is_foreign(config):
                config = _translate_foreign_config(config)
            for old, new in cls._renamed_config_keys.items():
                if old in config:
                    value = config.pop(old)
                    deprecate(old, "1.0.0", f"The config key {old!r} of {cls.__name__} is now {new!r}.", standard_warn=False)
                    config[new] = value
                    config["_use_default_values"] = [k for k in config.get("_use_default_values", []) if k != new]
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def _get_compatibles(cls):
        # diffusers resolves `_compatibles` by name inside its own package only; ours register themselves.
        return list(_SCHEDULER_CLASSES.values())

    def scale_model_input(self, sample, timestep=None):
        """The network takes the sample as it is (the time input already carries the noise level)."""
        return sample

    @property
    def default_num_inference_steps(self):
        """Grid size used when ``set_timesteps`` gets no ``num_inference_steps`` (each scheduler documents its own)."""
        return self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None):
        """Set the reverse-time grid: ``num_inference_steps`` times from 1 down to ``sampling_eps``, or custom
        ``timesteps`` in the network's time convention (decreasing). Precomputes the plan.

        Args:
            num_inference_steps (`int`, *optional*): number of times on the grid; defaults to
                :attr:`default_num_inference_steps`.
            device (`str` or `torch.device`, *optional*): where ``self.timesteps`` lives.
            timesteps (`list[float]`, *optional*): custom network-time values, strictly decreasing.
        """
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("Pass either num_inference_steps or timesteps, not both.")
            model_times = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
            times = self.parameterization.time_from_model_time(model_times)
            if len(times) < 1 or not bool((times[1:] < times[:-1]).all()) or not bool(((times > 0) & (times <= 1)).all()):
                raise ValueError(
                    f"timesteps must be strictly decreasing network times for t in (0, 1], got {list(timesteps)}."
                )
        else:
            if num_inference_steps is None:
                num_inference_steps = self.default_num_inference_steps
            num_inference_steps = check_integer("num_inference_steps", num_inference_steps, minimum=1)
            times = self._grid_times(num_inference_steps)
        self.num_inference_steps = len(times)
        self._grid_levels = [self._level(t) for t in times.tolist()]
        self._plan = self._build_plan(self._grid_levels)
        plan_times = torch.tensor([entry.level.t for entry in self._plan], dtype=torch.float64)
        self.timesteps = self.parameterization.model_time(plan_times).to(device=device, dtype=torch.float32)
        self._step_index = None
        self._begin_index = None
        self._finite_flags = []

    def _grid_times(self, num_inference_steps):
        """The default grid: ``num_inference_steps`` times uniform in t from 1 to ``sampling_eps`` (float64)."""
        return torch.linspace(1.0, self.config.sampling_eps, num_inference_steps, dtype=torch.float64)

    def _level(self, t):
        t64 = torch.tensor(t, dtype=torch.float64)
        a, s = self.parameterization.marginal(t64)
        return NoiseLevel(t=t, a=a.item(), s=s.item(), g=self.sde.diffusion(t64).item(),
                          f=self.sde.drift_coefficient(t64).item())

    def add_noise(self, original_samples, noise, timesteps):
        """Forward marginal x_t = a(t) x_0 + s(t) noise (the kernel the network was trained with, see
        ``Parameterization.marginal``), with ``timesteps`` in the network's time convention (one for the batch, or one
        per sample)."""
        t = self.parameterization.time_from_model_time(torch.as_tensor(timesteps, device=original_samples.device))
        a, s = self.parameterization.marginal(t.to(torch.float64).flatten())
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        return (a.reshape(shape) * original_samples + s.reshape(shape) * noise).to(original_samples.dtype)

    # --- position in the plan --------------------------------------------------------------------------------
    @property
    def step_index(self):
        """Index in ``timesteps`` of the next evaluation; ``None`` until the first ``step`` of a run."""
        return self._step_index

    @property
    def begin_index(self):
        """Index the run starts at, set by a pipeline with :meth:`set_begin_index`; ``None`` means "from the timestep"."""
        return self._begin_index

    def set_begin_index(self, begin_index=0):
        """Start the next run at ``timesteps[begin_index]`` (diffusers' img2img: ``t_start * order``).

        Args:
            begin_index (`int`): the index of the first evaluation; must start a step (not a Heun correction).
        """
        if not self._plan:
            raise RuntimeError(f"Call {type(self).__name__}.set_timesteps(...) before set_begin_index(...).")
        begin_index = check_integer("begin_index", begin_index, minimum=0)
        if begin_index >= len(self._plan) or isinstance(self._plan[begin_index], HeunCorrection):
            starts = [i for i, entry in enumerate(self._plan) if not isinstance(entry, HeunCorrection)]
            raise ValueError(
                f"begin_index must index an evaluation that starts a step, one of {starts[:4]}...{starts[-1]}"
                f" (multiples of order={self.order}); got {begin_index}."
            )
        self._begin_index = begin_index

    def index_for_timestep(self, timestep, schedule_timesteps=None):
        """Where a run handed ``timestep`` first starts: the first evaluation at that time that starts a step.

        A grid time repeats in ``timesteps`` when it takes several evaluations (corrector steps, Heun's correction at
        the end of the previous step); the run starts at its first evaluation that is not a Heun correction, so an
        img2img loop over ``timesteps[t_start * order:]`` never skips a noise level (as diffusers' Heun schedulers do).
        """
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        timestep = torch.as_tensor(timestep, dtype=schedule.dtype, device=schedule.device).flatten()[:1]
        matches = (schedule == timestep).nonzero().flatten().tolist()
        starts = [i for i in matches if not isinstance(self._plan[i], HeunCorrection)]
        if not starts:
            raise ValueError(
                f"timestep {timestep.item():.6g} is not a step start in scheduler.timesteps (from"
                f" {schedule[0].item():.6g} down to {schedule[-1].item():.6g}); pass an entry of scheduler.timesteps,"
                " e.g. scheduler.timesteps[t_start * scheduler.order]."
            )
        return starts[0]

    @property
    def grid_levels(self):
        """The grid's noise levels, one per grid time from t = 1 down to ``sampling_eps`` (set by ``set_timesteps``);
        for samplers that walk the grid with their own kernel (e.g. the twisted diffusion sampler)."""
        return list(self._grid_levels)

    @property
    def sample_level(self):
        """The noise level of the sample the next ``step`` expects: after a step, where its ``prev_sample`` lies."""
        if not self._plan:
            return None
        if self._step_index is None:
            return self._plan[self._begin_index or 0].level
        return self._plan[self._step_index - 1].target

    # --- one network evaluation ------------------------------------------------------------------------------
    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        """Advance by one network evaluation, as the plan says at this position.

        The first call of a run finds its position from ``timestep`` (or from :meth:`set_begin_index`); later calls
        follow the plan.

        Args:
            model_output (`torch.Tensor`): the network's output at ``timestep``.
            timestep (`float` or `torch.Tensor`): the entry of ``self.timesteps`` being processed.
            sample (`torch.Tensor`): the current sample, at ``self.sample_level``.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the step's fresh noise (stochastic
                steps only); a list gives each sample its own.
            return_dict (`bool`): return a :class:`ScoreSDESchedulerOutput` instead of a tuple
                ``(prev_sample, prev_sample_mean)``.
        """
        if not self._plan:
            raise RuntimeError(f"Call {type(self).__name__}.set_timesteps(...) before step().")
        if self._step_index is None:
            self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index
        if self._step_index >= len(self._plan):
            raise RuntimeError(
                f"step() called after the last of the schedule's {len(self._plan)} evaluations;"
                " call set_timesteps(...) again to start a new run."
            )
        entry = self._plan[self._step_index]
        self._step_index += 1
        score = self.parameterization.score(model_output.to(sample.dtype), sample, entry.level.a, entry.level.s)
        prev_sample, prev_sample_mean = self._update(entry, score, sample, generator)
        self._check_finite(prev_sample, entry)
        if not return_dict:
            return (prev_sample, prev_sample_mean)
        return ScoreSDESchedulerOutput(prev_sample=prev_sample, prev_sample_mean=prev_sample_mean,
                                       prev_level=entry.target)

    def _update(self, entry, score, sample, generator):
        """Apply one plan step given the score at ``entry.level``; returns ``(prev_sample, prev_sample_mean)``."""
        raise NotImplementedError

    @property
    def _is_last_step(self):
        return self._step_index == len(self._plan)

    @staticmethod
    def _noise(sample, generator):
        return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)

    def _check_finite(self, sample, entry):
        # One reduction per step, in the sample's own dtype without overflow (isfinite, not a sum: a finite float16
        # sample can sum to inf). On an accelerator the flags are read once, at the last step, so sampling never waits
        # on the device; on the CPU a failure stops the run at once.
        finite = torch.isfinite(sample).all()
        index = self._step_index - 1
        if sample.device.type == "cpu":
            if not finite.item():
                self._raise_nonfinite(index, entry.level.t)
            return
        self._finite_flags.append((finite, index, entry.level.t))
        if self._is_last_step:
            flags, self._finite_flags = self._finite_flags, []
            finite = torch.stack([flag for flag, _, _ in flags]).cpu()
            if not bool(finite.all()):
                self._raise_nonfinite(*flags[int((~finite).nonzero()[0])][1:])

    def _raise_nonfinite(self, index, t):
        raise FloatingPointError(
            f"{type(self).__name__}: the sample became NaN or inf at step {index} of {len(self._plan)}"
            f" (t={t:.6g}, network time {self.timesteps[index].item():.6g}). The network output or the step"
            " diverged there; check the model's prediction_type, timestep_type and data range."
        )
