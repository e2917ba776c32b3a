"""What every diffusers-sde scheduler shares: the SDE config, the time grid, the diffusers contract.

A scheduler here is a thin plan over the SDE object: ``set_timesteps`` precomputes, as Python floats, every
coefficient the steps need (so ``step`` does no host-device synchronization and allocates only its noise), and
``step`` walks that plan one network evaluation at a time, so the standard diffusers loop drives it unchanged.
"""

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..parameterization import Parameterization
from ..sde import SDE_TYPES, make_sde

# Paper defaults (Song et al. 2021, configs of score_sde) that depend on the SDE; None in a config means "these".
PAPER_DEFAULTS = {
    "ve": dict(sampling_eps=1e-5, prediction_type="score", timestep_type="sigma", data_centered=False,
               predictor="reverse_diffusion", corrector="langevin", snr=0.16),
    "vp": dict(sampling_eps=1e-3, prediction_type="epsilon", timestep_type="discrete", data_centered=True,
               predictor="euler_maruyama", corrector="none", snr=0.01),
    "subvp": dict(sampling_eps=1e-3, prediction_type="epsilon", timestep_type="discrete", data_centered=True,
                  predictor="euler_maruyama", corrector="none", snr=0.01),
}

SCHEDULER_CLASS_NAMES = ("PredictorCorrectorScheduler", "ProbabilityFlowScheduler", "ExponentialIntegratorScheduler", "EDMHeunScheduler")


@dataclass
class ScoreSDESchedulerOutput(BaseOutput):
    """Output of a diffusers-sde scheduler's ``step``.

    Args:
        prev_sample (`torch.Tensor`): the sample to feed the next step.
        prev_sample_mean (`torch.Tensor`): the same update without its fresh noise (the paper's ``x_mean``); at the
            final step it is the noise-free (denoised) result and equals ``prev_sample``.
    """

    prev_sample: torch.Tensor
    prev_sample_mean: torch.Tensor


@dataclass(frozen=True)
class _Level:
    """Everything a step needs about one time of the grid, as plain floats."""

    t: float
    a: float  # mean coefficient a(t)
    s: float  # kernel std s(t)
    g: float  # diffusion g(t)
    f: float  # drift coefficient: f(x, t) = f * x


def _is_foreign(config):
    """A config not written by a diffusers-sde scheduler (``scheduler.config`` carries no ``_class_name``)."""
    name = config.get("_class_name")
    if name is not None:
        return name not in SCHEDULER_CLASS_NAMES
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
        f" {SCHEDULER_CLASS_NAMES}, diffusers' ScoreSdeVeScheduler, or a DDPM-family config (beta_start, beta_end,"
        " beta_schedule='linear')."
    )


class ScoreSDESchedulerMixin(SchedulerMixin, ConfigMixin):
    """Shared base of the diffusers-sde schedulers. Subclasses build ``self._plan`` in :meth:`_build_plan`."""

    config_name = "scheduler_config.json"
    _compatibles = list(SCHEDULER_CLASS_NAMES)

    def _setup(self, sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
               prediction_type, timestep_type, data_centered, extra_defaults=()):
        """Validate the shared config, resolve its paper defaults and build the SDE; returns the resolved defaults."""
        if sde_type not in SDE_TYPES:
            raise ValueError(f"sde_type must be one of {SDE_TYPES}, got {sde_type!r}.")
        given = dict(sampling_eps=sampling_eps, prediction_type=prediction_type, timestep_type=timestep_type,
                     data_centered=data_centered)
        resolved = {key: PAPER_DEFAULTS[sde_type][key] if value is None else value for key, value in given.items()}
        resolved.update({key: PAPER_DEFAULTS[sde_type][key] for key, value in extra_defaults if value is None})
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
        self._step_index = 0
        self._finite_flags = []
        return resolved

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
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def _get_compatibles(cls):
        # diffusers resolves `_compatibles` inside its own package only; ours live here.
        import diffusers_sde

        return [getattr(diffusers_sde, name) for name in cls._compatibles if hasattr(diffusers_sde, name)]

    def scale_model_input(self, sample, timestep=None):
        """The network takes the sample as it is (the time input already carries the noise level)."""
        return sample

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None):
        """Set the reverse-time grid: ``num_inference_steps`` times from 1 down to ``sampling_eps`` (the paper's grid),
        or custom ``timesteps`` in the network's time convention (decreasing). Precomputes every step coefficient.

        Args:
            num_inference_steps (`int`, *optional*): number of times on the grid (paper: N = 1000, 2000 for VE at 256 px).
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
                num_inference_steps = self.config.num_train_timesteps
            if not (isinstance(num_inference_steps, int) and num_inference_steps >= 1):
                raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}.")
            times = self._grid_times(num_inference_steps)
        self.num_inference_steps = len(times)
        levels = [self._level(t) for t in times.tolist()]
        self._plan = self._build_plan(levels)
        plan_times = torch.tensor([entry[1].t for entry in self._plan], dtype=torch.float64)
        self.timesteps = self.parameterization.model_time(plan_times).to(device=device, dtype=torch.float32)
        self._step_index = 0
        self._finite_flags = []

    def _grid_times(self, num_inference_steps):
        """The default grid: ``num_inference_steps`` times uniform in t from 1 to ``sampling_eps`` (float64)."""
        return torch.linspace(1.0, self.config.sampling_eps, num_inference_steps, dtype=torch.float64)

    def _level(self, t):
        t64 = torch.tensor(t, dtype=torch.float64)
        a, s = self.parameterization.marginal(t64)
        return _Level(t=t, a=a.item(), s=s.item(), g=self.sde.diffusion(t64).item(), f=self.sde.drift_coefficient(t64).item())

    def add_noise(self, original_samples, noise, timesteps):
        """Forward marginal x_t = a(t) x_0 + s(t) noise (the kernel the network was trained with, see
        ``Parameterization.marginal``), with ``timesteps`` in the network's time convention."""
        t = self.parameterization.time_from_model_time(torch.as_tensor(timesteps, device=original_samples.device))
        a, s = self.parameterization.marginal(t.to(torch.float64).reshape(-1))
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        return (a.reshape(shape) * original_samples + s.reshape(shape) * noise).to(original_samples.dtype)

    # --- helpers for subclasses ----------------------------------------------------------------------------
    def _next_entry(self, sample):
        if not self._plan:
            raise RuntimeError(f"Call {type(self).__name__}.set_timesteps(...) before step().")
        if self._step_index >= len(self._plan):
            raise RuntimeError(
                f"step() called {self._step_index + 1} times but the schedule has {len(self._plan)} evaluations;"
                " call set_timesteps(...) again to start a new run."
            )
        entry = self._plan[self._step_index]
        self._step_index += 1
        return entry

    @property
    def _is_last_step(self):
        return self._step_index == len(self._plan)

    def _score(self, model_output, sample, level):
        return self.parameterization.score(model_output.to(sample.dtype), sample, level.a, level.s)

    @staticmethod
    def _noise(sample, generator):
        return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)

    def _check_finite(self, sample, level):
        # One reduction per step: a sum is NaN/inf exactly when an entry is (finite samples never overflow float32).
        # On an accelerator the sums are read once, at the last step, so sampling never waits on the device; on the
        # CPU a failure stops the run at once.
        total = sample.sum()
        if sample.device.type == "cpu":
            if not math.isfinite(total.item()):
                self._raise_nonfinite(self._step_index - 1, level.t)
            return
        self._finite_flags.append((total, self._step_index - 1, level.t))
        if self._is_last_step:
            flags, self._finite_flags = self._finite_flags, []
            finite = torch.isfinite(torch.stack([total for total, _, _ in flags])).cpu()
            if not bool(finite.all()):
                self._raise_nonfinite(*flags[int((~finite).nonzero()[0])][1:])

    def _raise_nonfinite(self, index, t):
        raise FloatingPointError(
            f"{type(self).__name__}: the sample became NaN or inf at step {index} of {len(self._plan)}"
            f" (t={t:.6g}, network time {self.timesteps[index].item():.6g}). The network output or the step"
            " diverged there; check the model's prediction_type, timestep_type and data range."
        )

    def _output(self, prev_sample, prev_sample_mean, level, return_dict):
        self._check_finite(prev_sample, level)
        if not return_dict:
            return (prev_sample, prev_sample_mean)
        return ScoreSDESchedulerOutput(prev_sample=prev_sample, prev_sample_mean=prev_sample_mean)
