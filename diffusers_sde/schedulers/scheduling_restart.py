"""Restart sampling (Xu et al., NeurIPS 2023) for the score SDEs, written from a(t) and s(t).

A main backward process solves the probability-flow ODE with EDM's Heun steps. Inside each restart interval
[t_min, t_max] (noise levels sigma = s / a), once the main process reaches t_min, it repeats K times: jump forward to
t_max by the SDE's exact transition x_max = r x_min + sqrt(v) z (:func:`~diffusers_sde.sde.gaussian_transition`),
then solve the ODE back to t_min with N_restart Heun steps on EDM's rho = 7 grid (Restart Alg. 1). The forward jumps
inject large noise that contracts the errors accumulated so far, while the backward solves stay deterministic and
accurate; the whole schedule is fixed in advance, so it is a plan in the diffusers contract.
"""

import math
import numbers
from dataclasses import dataclass

from diffusers.configuration_utils import register_to_config
from diffusers.utils import logging

from ..sde import gaussian_transition
from .scheduling_edm_heun import EDMHeunScheduler
from .scheduling_score_sde import DATA_LEVEL, Denoise, HeunCorrection, PlanStep
from .time_grids import check_spacing, time_grid

logger = logging.get_logger(__name__)

# Restart's CIFAR-10 VP setting (paper Table 3; its repository's example): one interval, N_restart = 3 Heun steps,
# K = 2 repetitions, [t_min, t_max] = [0.06, 0.30] in sigma, on an 18-step main process.
DEFAULT_RESTART_INTERVALS = ((3, 2, 0.06, 0.30),)


@dataclass(frozen=True)
class RestartJump(HeunCorrection):
    """The Heun correction that ends at ``level`` (t_min), followed by the exact forward jump to ``target`` (t_max)."""


class RestartScheduler(EDMHeunScheduler):
    """Restart sampling: EDM's Heun ODE sampler with restart intervals of forward jumps and backward ODE solves.

    ``num_inference_steps`` counts every grid time of the run, main and restart: the main grid gets what the intervals
    leave (num_inference_steps - sum of K N_restart), so each grid time is one Heun step of two evaluations
    (``timesteps`` lists both, ``order = 2``) and a run costs 2 num_inference_steps - 1 evaluations, the contract's
    arithmetic. The default, 24, is Restart's CIFAR-10 setting: 18 main times and 2 x 3 restart steps, 47 evaluations.
    The forward jumps draw fresh noise (``generator`` lists give each sample its own).

    A run can start mid-schedule like any scheduler here: :meth:`set_begin_index` (what diffusers' img2img pipelines
    call) works at every step start. A ``timestep`` that starts several steps (the levels a restart interval visits K
    times) does not say where to start, so :meth:`index_for_timestep` refuses it rather than guess.

    Args:
        sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps, prediction_type,
        timestep_type, data_centered: the SDE and the network's parameterization, exactly as in
            :class:`PredictorCorrectorScheduler`, so the two swap with ``from_config``.
        timestep_spacing (`str`): spacing of the main grid: ``karras`` (EDM Eq. 5; default), ``log_snr`` or
            ``uniform_time``. The backward solves inside an interval always use EDM's rho-polynomial.
        rho (`float`): exponent of the rho-polynomial spacings.
        restart_intervals (`list` of `[int, int, float, float]`): one ``[N_restart, K, t_min, t_max]`` per interval,
            in the repository's format: N_restart Heun steps per backward solve, K repetitions, and the interval's
            ends as noise levels sigma = s / a (data units; the paper's values are for data in [-1, 1]). Each t_min is
            moved to the nearest main-grid level (as Restart's code does), so the main process resumes exactly there.
            Default: ``[[3, 2, 0.06, 0.30]]``, the paper's CIFAR-10 setting. An empty list gives EDM's Heun sampler.
        s_noise (`float`): scale of the forward jumps' noise (Restart uses 1 to 1.003); 1 is the exact transition.
    """

    order = 2
    default_num_inference_steps = 24  # Restart's CIFAR-10 setting: 18 main grid times + K N_restart = 2 x 3

    @register_to_config
    def __init__(
        self,
        sde_type: str = "ve",
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        num_train_timesteps: int = 1000,
        sampling_eps: float = None,
        prediction_type: str = None,
        timestep_type: str = None,
        data_centered: bool = None,
        timestep_spacing: str = "karras",
        rho: float = 7.0,
        restart_intervals: list = DEFAULT_RESTART_INTERVALS,
        s_noise: float = 1.0,
    ):
        self._setup(sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
                    prediction_type, timestep_type, data_centered)
        check_spacing(timestep_spacing, rho)
        if not s_noise >= 0:
            raise ValueError(f"s_noise must be >= 0, got {s_noise}.")
        for interval in restart_intervals:
            _check_interval(interval)
        self.register_to_config(restart_intervals=[list(interval) for interval in restart_intervals])
        self._intervals = self.config.restart_intervals  # those of the current run (set_timesteps)
        self._pending = None

    @property
    def _restart_steps(self):
        return _restart_steps(self._intervals)

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None):
        """Like :meth:`ScoreSDESchedulerMixin.set_timesteps`; ``num_inference_steps`` counts main and restart grid
        times, and custom ``timesteps`` give the main grid (the restart steps are added to it).

        Args:
            num_inference_steps (`int`, *optional*): grid times in all (default 24). Fewer than the restart steps
                sum(K N_restart) plus 2 leave no main grid: the run then has no restart interval (EDM's Heun sampler on
                ``num_inference_steps`` times) and a warning says so.
            device (`str` or `torch.device`, *optional*): where ``self.timesteps`` lives.
            timesteps (`list[float]`, *optional*): custom main-grid network times, strictly decreasing.
        """
        self._intervals = [list(interval) for interval in self.config.restart_intervals]
        requested = self.default_num_inference_steps if num_inference_steps is None else num_inference_steps
        # numbers.Integral: numpy integers too (anything else is refused by the base class's check below)
        if timesteps is None and isinstance(requested, numbers.Integral) and requested < self._restart_steps + 2:
            logger.warning(
                f"RestartScheduler: num_inference_steps={requested} cannot hold the restart intervals (they take"
                f" {self._restart_steps} grid times and the main grid needs 2); sampling without restarts."
            )
            self._intervals = []
        super().set_timesteps(num_inference_steps, device, timesteps)
        self.num_inference_steps += self._restart_steps

    def index_for_timestep(self, timestep, schedule_timesteps=None):
        """Like :meth:`ScoreSDESchedulerMixin.index_for_timestep`; a time that starts several steps is an error."""
        index = super().index_for_timestep(timestep, schedule_timesteps)
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        matches = (schedule == schedule[index]).nonzero().flatten().tolist()
        starts = [i for i in matches if not isinstance(self._plan[i], HeunCorrection)]
        if len(starts) > 1:
            raise ValueError(
                f"timestep {schedule[index].item():.6g} starts {len(starts)} steps of this Restart schedule (indices"
                f" {starts}: a restart interval visits it K times); start the run with set_begin_index(index) instead."
            )
        return index

    def _grid_times(self, num_inference_steps):
        return time_grid(self.sde, max(num_inference_steps - self._restart_steps, 2), self.config.sampling_eps,
                         self.config.timestep_spacing, self.config.rho)

    def _heun_steps(self, levels, last_target):
        """EDM's Heun steps through ``levels``; the last correction's ``target`` is ``last_target``."""
        plan = []
        for index in range(len(levels) - 1):
            plan.append(PlanStep(levels[index], levels[index + 1]))
            target = levels[index + 1] if index < len(levels) - 2 else last_target
            kind = HeunCorrection if target is levels[index + 1] else RestartJump
            plan.append(kind(levels[index + 1], target, start=levels[index]))
        return plan

    def _build_plan(self, levels):
        self._pending = None
        sigmas = [level.s / level.a for level in levels]
        restarts = {}  # main-grid index of t_min -> list of (N_restart, t_max level), in interval order
        for num_steps, repetitions, t_min, t_max in self._intervals:
            below = [i for i in range(1, len(levels)) if sigmas[i] < t_max]
            if not below:
                raise ValueError(f"restart interval [t_min, t_max] = [{t_min}, {t_max}] lies below the schedule, which"
                                 f" ends at noise level {sigmas[-1]:.4g}; lower sampling_eps or raise t_max.")
            # Restart's code moves t_min to the nearest main-grid level (below t_max, so the jump goes up).
            index = min(below, key=lambda i: abs(math.log(sigmas[i] / t_min)))
            restarts.setdefault(index, []).extend([(num_steps, self._level_at_sigma(t_max))] * repetitions)
        plan = []
        for index in range(len(levels) - 1):
            end = levels[index + 1]
            jumps = restarts.get(index + 1, [])
            plan += self._heun_steps(levels[index:index + 2], jumps[0][1] if jumps else end)
            for position, (num_steps, top) in enumerate(jumps):
                # Restart Alg. 1: the backward solve from t_max to t_min on EDM's rho-polynomial in sigma.
                backward = time_grid(self.sde, num_steps + 1, end.t, "karras", self.config.rho, None,
                                     t_start=top.t)
                solve = [top] + [self._level(t) for t in backward[1:-1].tolist()] + [end]
                following = jumps[position + 1][1] if position + 1 < len(jumps) else end
                plan += self._heun_steps(solve, following)
        return plan + [Denoise(levels[-1], DATA_LEVEL)]

    def _update(self, entry, score, sample, generator):
        if not isinstance(entry, RestartJump):
            return super()._update(entry, score, sample, generator)
        level, top = entry.level, entry.target
        _, mean = super()._update(HeunCorrection(level, level, start=entry.start), score, sample, generator)
        ratio, variance = gaussian_transition(level.a, level.s, top.a, top.s)  # the forward jump t_min -> t_max
        return ratio * mean + self.config.s_noise * math.sqrt(variance) * self._noise(sample, generator), mean


def _restart_steps(intervals):
    """Grid times the restart intervals add: sum of K N_restart."""
    return sum(num_steps * repetitions for num_steps, repetitions, _, _ in intervals)


def _check_interval(interval):
    """One restart interval ``[N_restart, K, t_min, t_max]``, checked where it enters (the constructor)."""
    message = (f"restart_intervals entries must be [N_restart, K, t_min, t_max] with integers N_restart >= 1, K >= 1"
               f" and noise levels 0 < t_min < t_max; got {interval!r}.")
    try:
        num_steps, repetitions, t_min, t_max = interval
    except (TypeError, ValueError):
        raise ValueError(message) from None
    integers = all(isinstance(value, int) and not isinstance(value, bool) and value >= 1
                   for value in (num_steps, repetitions))
    if not integers or not 0 < t_min < t_max:
        raise ValueError(message)
