"""UniPC (Zhao et al. 2023): the unified predictor-corrector UniP-p / UniC for the probability-flow ODE, written from
a(t) and s(t) in data-prediction form, so VE, VP and sub-VP share it.

With lambda = log(a / s), h = lambda_t - lambda_u and the data predictions x0 of the previous points lambda_m, at
r_m = (lambda_m - lambda_u) / h (negative for past points, 1 for the end of the step), one unified step is

    x_t = (s_t / s_u) x_u + a_t [(1 - e^-h) m_0 + B(h) sum_m c_m (x0_m - m_0) / r_m]            (UniPC Eq. 8 / 10)

Expanding x0 in lambda shows which c_m make it order p: sum_m c_m r_m^(k-1) = k! w_k / (h^k B(h)) for k = 1..p-1,
with w_k = integral_0^h e^-(h - tau) tau^k / k! dtau the exact weights (the exponential integrator's h^(k+1) phi_(k+1)).
The predictor UniP-p uses the p - 1 previous points; the corrector UniC adds the network's prediction at the end
of the step (r = 1), which the next step evaluates anyway, and raises the order by one at no extra evaluation.
B(h) = h (``bh1``) or 1 - e^-h (``bh2``), the paper's two variants. As in UniPC's reference code and diffusers, a
step with one difference takes c_1 = 1/2 instead of solving (a solve would cancel B(h)), so the variants differ there.
On a log-SNR grid whose steps stay under UNIPC_THIRD_ORDER_MAX_STEP our steps equal diffusers'
``UniPCMultistepScheduler``'s, up to its last steps, which its ``lower_order_final`` lowers on every grid
(tests/schedulers/test_unipc.py).
"""

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config

from ..sde import tweedie_denoise
from ..validation import check_choice
from .scheduling_exponential_integrator import SOLVER_ORDERS, check_lower_order_final, few_step_order
from .scheduling_score_sde import DATA_LEVEL, Denoise, PlanStep, ScoreSDESchedulerMixin
from .time_grids import TAIL_LOG_SNR, check_spacing, time_grid

UNIPC_VARIANTS = ("bh1", "bh2")
# UniP-3 extrapolates x0 along the parabola through three predictions; over log-SNR steps longer than this it
# overshoots (UniPC-3 at 10 NFE: variance +129% on the benchmark's VE mixture, +338% VP, +1000% sub-VP), so such steps
# are predicted at order 2 (then 7.1%, 3.9%, 18%). The corrector tolerates longer steps than the exponential
# integrator's 3M (its cap, 0.6, made UniPC-3 at 20 NFE 5x worse on VP); grids of 15 or more times stay under it on VE
# and VP. Steps inside the low-noise tail (past TAIL_LOG_SNR, where x0 hardly changes) are long by design and exempt.
UNIPC_THIRD_ORDER_MAX_STEP = 0.9


@dataclass(frozen=True)
class UniPCStep(PlanStep):
    """A UniP step from ``level`` to ``target``, with its coefficients precomputed from the grid.

    Args:
        predictor (`tuple`): B(h) c_m / r_m of the previous points, newest first (UniP).
        corrector (`tuple`): the same for the previous step's points and, last, this step's new prediction (UniC),
            used to correct the incoming sample; empty when there is nothing to correct (the first step).
    """

    predictor: tuple = ()
    corrector: tuple = ()


def _exact_weight(h, k):
    """w_k = integral_0^h e^-(h - tau) tau^k / k! dtau = (-1)^(k+1) (e^-h - sum_{j<=k} (-h)^j / j!)."""
    partial = sum((-h) ** j / math.factorial(j) for j in range(k + 1))
    return (-1) ** (k + 1) * (math.exp(-h) - partial)


def _unified_coefficients(ratios, h, variant):
    """B(h) c_m / r_m, the weights of the differences x0_m - m_0, with c_m solving UniPC's order conditions
    sum_m c_m r_m^(k-1) = k! w_k / (h^k B(h)) for k = 1..len(ratios)."""
    if not ratios:
        return ()
    b_h = h if variant == "bh1" else -math.expm1(-h)
    if len(ratios) == 1:
        # One difference (UniP-2, and UniC after a first-order step): UniPC's reference code and diffusers take
        # c = 1/2, which meets the condition to leading order only; a solve would cancel B(h) from every weight, so
        # this is where bh1 and bh2 differ (on the benchmark mixtures, bh2 at order 2 is the more accurate).
        return (b_h * 0.5 / ratios[0],)
    matrix = torch.tensor([[r ** (k - 1) for r in ratios] for k in range(1, len(ratios) + 1)], dtype=torch.float64)
    rhs = torch.tensor([math.factorial(k) * _exact_weight(h, k) / (h**k * b_h) for k in range(1, len(ratios) + 1)],
                       dtype=torch.float64)
    solution = torch.linalg.solve(matrix, rhs).tolist()
    return tuple(b_h * c / r for c, r in zip(solution, ratios))


class UniPCScheduler(ScoreSDESchedulerMixin):
    """UniPC: multistep UniP-p predictor with the UniC corrector, one network evaluation per grid time.

    Step i predicts x_{i+1} from x_i and the data predictions at the last p grid times (UniP-p; the first steps use the
    orders their history allows). Step i + 1 first corrects x_{i+1} with the network's prediction there (UniC), then
    predicts from the corrected sample; the prediction itself is reused, as in UniPC. The last evaluation, at
    ``sampling_eps``, returns the data prediction x0 (the noise removal).

    Args:
        sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps, prediction_type,
        timestep_type, data_centered: the SDE and the network's parameterization, exactly as in
            :class:`PredictorCorrectorScheduler`, so the two swap with ``from_config``.
        solver_order (`int`): p of the predictor, 1, 2 or 3 (default 3); the corrector raises it by one. Log-SNR
            steps longer than :data:`UNIPC_THIRD_ORDER_MAX_STEP` outside the low-noise tail are predicted at order 2.
        solver_type (`str`): B(h): ``bh2`` (1 - e^-h; default, as in diffusers) or ``bh1`` (h). It changes only the
            steps with one difference (see :func:`_unified_coefficients`), so mostly order 2.
        use_corrector (`bool`): apply UniC (default ``True``); ``False`` leaves the UniP predictor alone.
        timestep_spacing (`str`): ``log_snr`` (default; the exponential integrator's grid, stretched past noise 1e-3),
            ``uniform_time`` or ``karras``.
        rho (`float`): exponent of the ``karras`` spacing.
        lower_order_final (`bool`): on grids of fewer than 15 times, predict the last step (before the noise
            removal) at order 1 (default ``True``), as the exponential integrator does (diffusers' UniPC lowers its
            last ``solver_order - 1`` steps on every grid).
    """

    order = 1
    default_num_inference_steps = 20

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
        solver_type: str = "bh2",
        use_corrector: bool = True,
        timestep_spacing: str = "log_snr",
        rho: float = 7.0,
        lower_order_final: bool = True,
    ):
        self._setup(sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
                    prediction_type, timestep_type, data_centered)
        check_choice("solver_order", solver_order, SOLVER_ORDERS)
        check_choice("solver_type", solver_type, UNIPC_VARIANTS)
        check_choice("use_corrector", use_corrector, (True, False))
        check_lower_order_final(lower_order_final)
        check_spacing(timestep_spacing, rho)
        self._history = []
        self._pending = None

    def _grid_times(self, num_inference_steps):
        return time_grid(self.sde, num_inference_steps, self.config.sampling_eps, self.config.timestep_spacing,
                         self.config.rho, tail_log_snr=TAIL_LOG_SNR)

    def _build_plan(self, levels):
        self._history, self._pending = [], None
        lams = [math.log(level.a / level.s) for level in levels]
        variant, plan = self.config.solver_type, []
        previous_ratios = None  # r_m of the previous step's predictor points
        for i in range(len(levels) - 1):
            h = lams[i + 1] - lams[i]
            max_step = UNIPC_THIRD_ORDER_MAX_STEP if lams[i] < TAIL_LOG_SNR else math.inf
            order = few_step_order(min(self.config.solver_order, i + 1), h, i == len(levels) - 2, len(levels),
                                   self.config.lower_order_final, max_step)
            ratios = [(lams[i - m] - lams[i]) / h for m in range(1, order)]
            corrector = ()
            if self.config.use_corrector and previous_ratios is not None:
                corrector = _unified_coefficients(previous_ratios + [1.0], lams[i] - lams[i - 1], variant)
            plan.append(UniPCStep(levels[i], levels[i + 1], predictor=_unified_coefficients(ratios, h, variant),
                                  corrector=corrector))
            previous_ratios = ratios
        return plan + [Denoise(levels[-1], DATA_LEVEL)]

    def _update(self, entry, score, sample, generator):
        level = entry.level
        x0 = tweedie_denoise(sample, score, level.a, level.s)
        if isinstance(entry, Denoise):
            self._history, self._pending = [], None
            return x0, x0
        lam = math.log(level.a / level.s)
        # The plan's coefficients assume a run from the first grid time; a run begun later (set_begin_index: img2img,
        # SDEdit) holds less history at first, and its first steps take the coefficients of the history they hold.
        if entry.corrector and self._pending is not None:  # UniC: correct the incoming sample with the new x0
            start, x_start, m0, differences, ratios = self._pending
            coefficients = entry.corrector
            if len(differences) + 1 != len(coefficients):
                coefficients = _unified_coefficients(ratios + [1.0], lam - math.log(start.a / start.s),
                                                     self.config.solver_type)
            sample = self._unified_step(start, level, x_start, m0, differences + [x0 - m0], coefficients)
        self._history = [(lam, x0)] + self._history[: self.config.solver_order - 1]
        order = min(len(entry.predictor) + 1, len(self._history))
        differences = [older - x0 for _, older in self._history[1:order]]
        h = math.log(entry.target.a / entry.target.s) - lam
        ratios = [(older_lam - lam) / h for older_lam, _ in self._history[1:order]]
        coefficients = entry.predictor
        if len(differences) != len(coefficients):
            coefficients = _unified_coefficients(ratios, h, self.config.solver_type)
        prev_sample = self._unified_step(level, entry.target, sample, x0, differences, coefficients)
        self._pending = (level, sample, x0, differences, ratios)
        return prev_sample, prev_sample

    @staticmethod
    def _unified_step(start, end, x_start, m0, differences, coefficients):
        """Eq. (8)/(10): (s_t / s_u) x_u + a_t [(1 - e^-h) m0 + sum_m weight_m D_m], weight_m = B(h) c_m / r_m."""
        h = math.log(end.a / end.s) - math.log(start.a / start.s)
        update = -math.expm1(-h) * m0
        for coefficient, difference in zip(coefficients, differences):
            update = update + coefficient * difference
        return (end.s / start.s) * x_start + end.a * update
