"""Multistep exponential integrator for the probability-flow ODE (DPM-Solver++ family, Lu et al. 2022), from a(t), s(t).

In lambda = log(a / s) and the data prediction x0 = (x + s^2 score) / a, the probability-flow ODE (Eq. 13 of Song et
al.) of every linear SDE becomes dx/dlambda = -x + ... whose variation-of-constants solution is exact in its linear part:

    x_t = (s_t / s_u) x_u + s_t * integral_{lambda_u}^{lambda_t} e^lambda x0(lambda) dlambda        (DPM-Solver++ Eq. 9)

Expanding x0 in a Taylor series in lambda around lambda_u and integrating term by term gives

    x_t = (s_t / s_u) x_u + a_t [h phi_1(h) x0 + h^2 phi_2(h) x0' + h^3 phi_3(h) x0'']           (h = lambda_t - lambda_u)

with h phi_1 = 1 - e^-h, h^2 phi_2 = h - 1 + e^-h, h^3 phi_3 = h^2 / 2 - h + 1 - e^-h. The derivatives come from the
data predictions of the previous steps (divided differences on the non-uniform lambda grid), so order k costs one
network evaluation per step. Nothing here is specific to VE, VP or sub-VP: only a(t) and s(t) enter.
"""

import math
import warnings

from diffusers.configuration_utils import register_to_config

from ..sde import tweedie_denoise
from ..validation import check_choice
from .scheduling_score_sde import DATA_LEVEL, Denoise, PlanStep, ScoreSDESchedulerMixin
from .time_grids import TAIL_LOG_SNR, check_spacing, time_grid

SOLVER_ORDERS = (1, 2, 3)
# How a second-order step weights x0's slope: "midpoint", DPM-Solver++(2M) as published (Lu et al. 2022, Alg. 2: the
# slope from the last two predictions, weighted h / 2 times x0's weight, i.e. x0 taken at the step's midpoint), or
# "taylor", the exact integral of the linear Taylor term (h^2 phi_2). Both are second order; on the benchmark mixtures
# the midpoint weight is 2-4x more accurate at 10-30 NFE (benchmarks/bench_samplers_vs_peers.py).
SOLVER_TYPES = ("midpoint", "taylor")
# A third-order step extrapolates x0 along the parabola through the last three predictions; over log-SNR steps longer
# than this it overshoots (3M at 10 NFE: variance +170% on the benchmark's VE mixture, +1000% for the SDE solver), so
# such steps are taken at order 2. Grids of 30 or more steps never reach it on VE and VP.
THIRD_ORDER_MAX_STEP = 0.6
# With lower_order_final, grids shorter than this take their last step (before the noise removal) at order 1, as
# diffusers' multistep solvers do: at 10 NFE it halves the 2M error on the benchmark mixtures.
LOWER_ORDER_FINAL_BELOW = 15


def few_step_order(order, h, last_step, num_times, lower_order_final, max_step=None):
    """The order a multistep solver takes for a step of length ``h`` (in its expansion variable), given the order its
    history allows: 3 falls to 2 over steps longer than ``max_step`` (default :data:`THIRD_ORDER_MAX_STEP`), and with
    ``lower_order_final`` the last step before the noise removal of a grid of fewer than
    :data:`LOWER_ORDER_FINAL_BELOW` times is taken at order 1."""
    if order == 3 and h > (THIRD_ORDER_MAX_STEP if max_step is None else max_step):
        order = 2
    if lower_order_final and last_step and num_times < LOWER_ORDER_FINAL_BELOW:
        order = 1
    return order


def check_lower_order_final(lower_order_final):
    if not isinstance(lower_order_final, bool):
        raise ValueError(f"lower_order_final must be True or False, got {lower_order_final!r}.")


def _phi_weights(h):
    """h phi_1(h), h^2 phi_2(h), h^3 phi_3(h), written with expm1 so small steps lose no precision."""
    em1 = math.expm1(-h)  # e^-h - 1
    return -em1, h + em1, 0.5 * h * h - h - em1


def taylor_derivatives(history):
    """dx0/dlambda (and d2x0/dlambda2) at the newest of ``history`` (a list of ``(lambda, x0)``, newest first), from
    divided differences on the non-uniform lambda grid; as many as the history supports (none, one or two)."""
    if len(history) < 2:
        return []
    (lam0, m0), (lam1, m1) = history[:2]
    slope = (m0 - m1) / (lam0 - lam1)
    if len(history) < 3:
        return [slope]
    lam2, m2 = history[2]
    curvature = (slope - (m1 - m2) / (lam1 - lam2)) / (lam0 - lam2)  # second divided difference = x0'' / 2
    return [slope + (lam0 - lam1) * curvature, 2 * curvature]


def taylor_integral(weights, x0, derivatives):
    """The integral of the Taylor expansion of x0 in lambda against the integrator's kernel: sum_n weights[n] x0^(n)."""
    update = weights[0] * x0
    for weight, derivative in zip(weights[1:], derivatives):
        update = update + weight * derivative
    return update


class MultistepDataPredictionMixin:
    """What the multistep exponential integrators share (this ODE solver, SDE-DPM-Solver++, ER-SDE-Solver): one
    evaluation per grid time ending with the noise removal, and a history of the last ``solver_order`` data predictions
    in the variable x0 is expanded in (:meth:`_expansion_variable`)."""

    @staticmethod
    def _expansion_variable(level):
        """The variable the Taylor expansion of x0 runs in: lambda = log(a / s) for the DPM-Solver++ family."""
        return math.log(level.a / level.s)

    def _grid_times(self, num_inference_steps):
        # lambda_max_clipped: only the exponential integrator has it (configs saved with the earlier clip)
        return time_grid(self.sde, num_inference_steps, self.config.sampling_eps, self.config.timestep_spacing,
                         self.config.rho, self.config.get("lambda_max_clipped"), tail_log_snr=TAIL_LOG_SNR)

    def _build_plan(self, levels):
        self._history = []
        plan = [PlanStep(level, next_level) for level, next_level in zip(levels[:-1], levels[1:])]
        return plan + [Denoise(levels[-1], DATA_LEVEL)]

    def _check_multistep_options(self, solver_order, solver_type, lower_order_final):
        check_choice("solver_order", solver_order, SOLVER_ORDERS)
        check_choice("solver_type", solver_type, SOLVER_TYPES)
        check_lower_order_final(lower_order_final)

    def _taylor_step(self, weights, x0, h, max_order=3):
        """The integral of x0's Taylor expansion over a log-SNR step h, at the order the history, the step length and
        the plan allow (see :data:`THIRD_ORDER_MAX_STEP`, :data:`LOWER_ORDER_FINAL_BELOW`); ``weights`` are the exact
        weights of x0, x0' and x0'' of the scheduler's kernel."""
        order = min(self.config.solver_order, len(self._history), max_order)
        last_step = self._step_index == len(self._plan) - 1  # the step before the noise removal
        order = few_step_order(order, h, last_step, len(self._plan), self.config.lower_order_final)
        if order == 2 and self.config.solver_type == "midpoint":
            weights = (weights[0], weights[0] * h / 2)
        return taylor_integral(weights, x0, taylor_derivatives(self._history[:order]))

    def _record(self, entry, score, sample):
        """Tweedie's x0 at ``entry.level``, pushed on the history; returns ``(x0, lambda, next lambda)`` (in the
        expansion variable), or
        ``(x0, None, None)`` at the final noise removal (which clears the history for the next run)."""
        level, next_level = entry.level, entry.target
        x0 = tweedie_denoise(sample, score, level.a, level.s)
        if isinstance(entry, Denoise):
            self._history = []
            return x0, None, None
        lam = self._expansion_variable(level)
        self._history = [(lam, x0)] + self._history[: self.config.solver_order - 1]
        return x0, lam, self._expansion_variable(next_level)


class ExponentialIntegratorScheduler(MultistepDataPredictionMixin, ScoreSDESchedulerMixin):
    """Multistep exponential-integrator solver of the probability-flow ODE in data-prediction form (DPM-Solver++(kM)).

    One network evaluation per grid time. Steps 1 and 2 use orders 1 and 2 while the history fills; the last evaluation,
    at ``sampling_eps``, returns the data prediction x0 (the noise removal, which is also the exact limit of the step
    to s = 0). Because it is written from a(t) and s(t) only, it samples VE, VP and sub-VP models alike.

    The default grid is uniform in lambda down to noise s / a = 1e-3 and stretches geometrically past it
    (:data:`~diffusers_sde.schedulers.time_grids.TAIL_LOG_SNR`): sub-VP's s(t) ~ beta_min t puts lambda(1e-5) near 13.8
    against 6.9 for VE (sigma_min 0.001) and VP, and a grid uniform up to it spends a third of its steps where almost
    nothing happens. Every step still shrinks with the number of steps, so the error falls monotonically with NFE on
    every SDE (``benchmarks/bench_samplers_vs_peers.py``). The earlier clip (``lambda_max_clipped``, a last
    first-order jump over the low-noise end) is kept for saved configs; it does not converge: on the benchmark's
    mixture (component std 0.02-0.15) its variance error settles at -2.5% (VP) and -3.1% (sub-VP) at any NFE.

    Args:
        sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps, prediction_type,
        timestep_type, data_centered: the SDE and the network's parameterization, exactly as in
            :class:`PredictorCorrectorScheduler`, so the two swap with ``from_config``.
        solver_order (`int`): 1 (DDIM, the exponential Euler step), 2 or 3. Default 3: the most accurate per
            evaluation on unguided score models (measured in ``benchmarks/bench_fast_samplers.py``).
        timestep_spacing (`str`): ``log_snr`` (uniform in lambda, DPM-Solver's choice; default), ``uniform_time``
            or ``karras`` (EDM rho-polynomial in sigma = s / a).
        rho (`float`): exponent of the ``karras`` spacing.
        solver_type (`str`): weighting of the second-order steps, ``midpoint`` (default, DPM-Solver++(2M) as
            published) or ``taylor`` (the exact integral of the linear Taylor term; the only weighting before), see
            :data:`SOLVER_TYPES`. Steps longer than :data:`THIRD_ORDER_MAX_STEP` in lambda are taken at order 2.
        lower_order_final (`bool`): take the last step before the noise removal at order 1 on grids of fewer than
            15 times (default True, as diffusers' multistep solvers).
        lambda_max_clipped (`float` or `None`): ``None`` (default) gives the convergent grid above. A log-SNR
            log(a / s) restores the earlier clip: the grid refines no further past it and the step that ends past it
            is taken at order 1 (see :func:`~diffusers_sde.schedulers.time_grids.time_grid`); the error then stops
            falling with NFE once the rest of the grid is fine, so use it only to reproduce old results.
    """

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
        solver_order: int = 3,
        timestep_spacing: str = "log_snr",
        rho: float = 7.0,
        lambda_max_clipped: float = None,
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
    ):
        self._setup(sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
                    prediction_type, timestep_type, data_centered)
        self._check_multistep_options(solver_order, solver_type, lower_order_final)
        check_spacing(timestep_spacing, rho)
        lambda_start = self.sde.log_snr(1.0).item()
        if lambda_max_clipped is not None and not lambda_max_clipped > lambda_start:
            raise ValueError(f"lambda_max_clipped must be None or exceed the log-SNR at t = 1 ({lambda_start:.3f}), "
                             f"got {lambda_max_clipped!r}.")
        self._history = []

    order = 1  # one evaluation per grid time: the diffusers loop needs no repeated timesteps
    default_num_inference_steps = 20

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """Like the base ``from_config`` (and so ``from_pretrained``); a loaded config that sets ``lambda_max_clipped``
        (saved before the convergent grid became the default, when it was log(100)) keeps the clip, with a
        FutureWarning saying how to drop it. Passing ``lambda_max_clipped`` explicitly silences it."""
        clip = None if config is None or isinstance(config, str) else dict(config).get("lambda_max_clipped")
        if clip is not None and "lambda_max_clipped" not in kwargs:
            is_old_default = math.isclose(clip, math.log(100.0))
            old_default = " (log(100), the default before the convergent grid)" if is_old_default else ""
            warnings.warn(
                f"This {cls.__name__} config sets lambda_max_clipped={clip:.6g}{old_default}:"
                " the log-SNR grid is clipped and its error stops falling with NFE (about 3% variance error at any"
                " budget on the benchmark mixtures). Load it with lambda_max_clipped=None (e.g."
                f" {cls.__name__}.from_pretrained(path, lambda_max_clipped=None), or from_config(config,"
                " lambda_max_clipped=None)) for the convergent default grid, and save it again; pass"
                " lambda_max_clipped explicitly to keep the clip without this warning. Clipped configs will stop"
                " loading silently in a future release.",
                FutureWarning,
                stacklevel=2,
            )
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def _update(self, entry, score, sample, generator):
        x0, lam, next_lam = self._record(entry, score, sample)
        if lam is None:
            return x0, x0
        clip = self.config.lambda_max_clipped
        h = next_lam - lam
        update = self._taylor_step(_phi_weights(h), x0, h, max_order=1 if clip is not None and next_lam > clip else 3)
        prev_sample = (entry.target.s / entry.level.s) * sample + entry.target.a * update
        return prev_sample, prev_sample

