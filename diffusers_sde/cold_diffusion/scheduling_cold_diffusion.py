"""ColdDiffusionScheduler: the sampling algorithms of Cold Diffusion (Bansal et al. 2022) in the diffusers contract.

The network is a restoration operator R(x_t, t) ~ x0: ``model_output`` is its x0 prediction x0_hat. From level t the
step goes to the next level s of ``timesteps`` (s = t - 1 on the full grid, 0 after the last entry):

- ``algorithm="naive"``, Algorithm 1: x_s = D(x0_hat, s).
- ``algorithm="improved"``, Algorithm 2: x_s = x_t - D(x0_hat, t) + D(x0_hat, s). It leaves x_t's error in the
  components the degradation does not change from t to s untouched, instead of replacing x_t by a re-degraded guess;
  for an exact R both reproduce x_s = D(x0, s).

The scheduler holds its degradation, built from the ``degradation`` config entry, so ``scheduler_config.json`` is all
a saved pipeline needs. Its position on the schedule follows diffusers' conventions (``index_for_timestep``,
``set_begin_index``, ``step_index``), so a restoration can start mid-schedule from ``timesteps[k:]``.
"""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..validation import check_choice, check_integer
from .degradations import BlurDegradation, Degradation

ALGORITHMS = ("improved", "naive")  # Algorithm 2, Algorithm 1 of the paper


@dataclass
class ColdDiffusionSchedulerOutput(BaseOutput):
    """Output of :meth:`ColdDiffusionScheduler.step`.

    Args:
        prev_sample (`torch.Tensor`): x_s, the sample at the next level of the schedule.
        pred_original_sample (`torch.Tensor`): x0_hat, the restoration the step used.
        prev_timestep (`int`): s, the level of ``prev_sample`` (0 after the last step).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor = None
    prev_timestep: int = None


class ColdDiffusionScheduler(SchedulerMixin, ConfigMixin):
    """Cold Diffusion sampling, Algorithm 1 (``"naive"``) or 2 (``"improved"``) of Bansal et al. 2022.

    Args:
        degradation (`dict` or `Degradation`, *optional*): the degradation D(x0, t) or its config
            (``Degradation.to_config()``); default: the paper's generation blur, ``BlurDegradation()`` (27x27, T = 300).
        algorithm (`str`): ``"improved"`` (Algorithm 2, default) or ``"naive"`` (Algorithm 1).
        data_centered (`bool`): the model's data lies in [-1, 1] (True) or [0, 1] (False); for the pipeline's images.
        initial_weights, initial_means, initial_stds (`list`, *optional*): the channel-mean mixture the pipeline
            generates from when its call gives none: (K,), (K, C), (K, C) (``fit_channel_mean_mixture``).
    """

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(self, degradation=None, algorithm="improved", data_centered=True, initial_weights=None,
                 initial_means=None, initial_stds=None):
        self.degradation = Degradation.from_config(BlurDegradation().to_config() if degradation is None else degradation)
        self.register_to_config(degradation=self.degradation.to_config())  # stored as JSON, never as an object
        check_choice("algorithm", algorithm, ALGORITHMS)
        if not isinstance(data_centered, bool):
            raise ValueError(f"data_centered must be True ([-1, 1] data) or False ([0, 1]), got {data_centered!r}.")
        self.num_inference_steps = None
        self.timesteps = None
        self._levels = []
        self._step_index = None
        self._begin_index = None

    @property
    def num_train_timesteps(self):
        """T, the degradation's most degraded level."""
        return self.degradation.num_steps

    def __len__(self):
        return self.num_train_timesteps

    def scale_model_input(self, sample, timestep=None):
        """The restoration network takes the sample as it is."""
        return sample

    def set_timesteps(self, num_inference_steps=None, device=None):
        """Set the levels to visit, descending integers from T to 1 (then the run ends at level 0).

        Args:
            num_inference_steps (`int`, *optional*): number of steps, 1..T; default T (every level, the paper's
                setting). Fewer steps take evenly spaced levels, and each step jumps from one to the next.
            device (`str` or `torch.device`, *optional*): where ``self.timesteps`` lives.
        """
        steps = self.num_train_timesteps if num_inference_steps is None else num_inference_steps
        steps = check_integer("num_inference_steps", steps, minimum=1)
        if steps > self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in 1..{self.num_train_timesteps} (the degradation's"
                             f" num_steps), got {steps}.")
        levels = torch.linspace(self.num_train_timesteps, 1, steps, dtype=torch.float64).round().long()
        self.num_inference_steps = steps
        self.timesteps = levels.to(device)
        self._levels = levels.tolist() + [0]  # as Python ints, with the final level 0: step() never syncs the device
        self._step_index = None
        self._begin_index = None

    # --- position on the schedule (diffusers' conventions) -----------------------------------------------------
    @property
    def step_index(self):
        """Index in ``timesteps`` of the next step; ``None`` until the first ``step`` of a run."""
        return self._step_index

    @property
    def begin_index(self):
        """Index the next run starts at, set with :meth:`set_begin_index`; ``None`` means "from the timestep"."""
        return self._begin_index

    def set_begin_index(self, begin_index=0):
        """Start the next run at ``timesteps[begin_index]`` (restoring an image degraded to that level).

        Args:
            begin_index (`int`): index into ``timesteps``.
        """
        self._check_timesteps_set("set_begin_index")
        begin_index = check_integer("begin_index", begin_index, minimum=0)
        if begin_index >= len(self.timesteps):
            raise ValueError(f"begin_index must be in 0..{len(self.timesteps) - 1} (len(timesteps) - 1), got {begin_index}.")
        self._begin_index = begin_index

    def index_for_timestep(self, timestep, schedule_timesteps=None):
        """The index of ``timestep`` in the schedule.

        Args:
            timestep (`int` or `torch.Tensor`): an entry of ``timesteps``.
            schedule_timesteps (`torch.Tensor`, *optional*): the schedule to look in; default ``self.timesteps``.
        """
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        value = torch.as_tensor(timestep).flatten()[:1].to(schedule.device)
        matches = (schedule == value).nonzero().flatten()
        if len(matches) == 0:
            raise ValueError(f"timestep {value.item()} is not in scheduler.timesteps ({schedule[0].item()} down to"
                             f" {schedule[-1].item()}); pass an entry of scheduler.timesteps.")
        return int(matches[0])

    def step(self, model_output, timestep, sample, return_dict=True):
        """One step of Algorithm 1 or 2 from level ``timestep`` to the next level of the schedule.

        Args:
            model_output (`torch.Tensor`): x0_hat = R(sample, timestep), the restoration network's x0 prediction.
            timestep (`int` or `torch.Tensor`): the current level t, an entry of ``timesteps``.
            sample (`torch.Tensor`): x_t (B, C, H, W).
            return_dict (`bool`): return a :class:`ColdDiffusionSchedulerOutput` instead of a tuple ``(prev_sample,)``.
        """
        self._check_timesteps_set("step")
        if self._step_index is None:
            self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index
        if self._step_index >= len(self.timesteps):
            raise RuntimeError(f"step() called after the last of the schedule's {len(self.timesteps)} steps; call"
                               " set_timesteps(...) again to start a new run.")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output (the x0 prediction) must have the sample's shape {tuple(sample.shape)}, got"
                             f" {tuple(model_output.shape)}.")
        t, s = self._levels[self._step_index], self._levels[self._step_index + 1]
        self._step_index += 1
        x0_hat = model_output.to(sample.dtype)
        if self.config.algorithm == "naive":
            prev_sample = self.degradation(x0_hat, s)  # Alg. 1 line 4: x_{t-1} = D(x0_hat, t - 1)
        else:
            # Alg. 2 line 4: x_{t-1} = x_t - D(x0_hat, t) + D(x0_hat, t - 1)
            prev_sample = sample - self.degradation(x0_hat, t) + self.degradation(x0_hat, s)
        if not return_dict:
            return (prev_sample,)
        return ColdDiffusionSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0_hat, prev_timestep=s)

    def degrade(self, original_samples, timesteps):
        """D(x0, t): the training input at level ``timesteps`` (the analogue of ``add_noise``).

        Args:
            original_samples (`torch.Tensor`): clean images x0 (B, C, H, W).
            timesteps (`int` or `torch.Tensor`): one level for the batch or one per sample (B,), in 0..T.
        """
        return self.degradation(original_samples, timesteps)

    def _check_timesteps_set(self, method):
        if self.timesteps is None:
            raise RuntimeError(f"Call {type(self).__name__}.set_timesteps(...) before {method}(...).")
