"""ER-SDE-Solver (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDEs for diffusion
models"), orders 1-3, written from a(t) and s(t) only, so VE, VP and sub-VP share it.

The extended reverse-time SDEs dx = [f x - (1 + eta^2) / 2 g^2 score] dt + eta g dw share the marginals of the forward
SDE for every eta(t) >= 0 (eta = 0: the probability-flow ODE; eta = 1: the reverse SDE). In the scaled variable
y = x / a and the noise scale sigma = s / a (a VE process for every SDE), with the data prediction x0 = (x + s^2 score)
/ a, the family is parameterized by a noise scale function phi(sigma) with 1 + eta^2 = sigma phi'(sigma) / phi(sigma),
so any phi with d log phi / d log sigma >= 1 is one member. Its variation-of-constants solution from u to t is

    y_t = (phi_t / phi_u) y_u + phi_t integral_{sigma_t}^{sigma_u} phi'(sigma) / phi(sigma)^2 x0(sigma) dsigma
          + sqrt(sigma_t^2 - sigma_u^2 (phi_t / phi_u)^2) z

with an exact noise term. Expanding x0 in a Taylor series in sigma around sigma_u (derivatives by divided differences
of earlier data predictions, as the multistep solvers do in lambda) and integrating by parts gives the weight of the
n-th derivative x0^(n)(sigma_u):

    w_0 = 1 - phi_t / phi_u,
    w_n = (sigma_t - sigma_u)^n / n! + phi_t integral (sigma - sigma_u)^(n-1) / (n-1)! / phi(sigma) dsigma.

The integrals of 1 / phi have no closed form for the paper's recommended phi, so they are taken by Gauss-Legendre
quadrature in log sigma (exact to round-off for the smooth integrands here).

phi(sigma) = sigma is the ODE (the step is DDIM / DPM-Solver++ 1 at order 1) and phi(sigma) = sigma^2 is the reverse
SDE (the step is SDE-DPM-Solver++ 1S, the SDE's own Gaussian posterior, at order 1).
"""

import math
from dataclasses import dataclass

import numpy as np
from diffusers.configuration_utils import register_to_config

from ..validation import check_choice
from .scheduling_exponential_integrator import SOLVER_ORDERS, MultistepDataPredictionMixin, taylor_derivatives
from .scheduling_exponential_integrator import taylor_integral
from .scheduling_score_sde import PlanStep, ScoreSDESchedulerMixin
from .time_grids import check_spacing

# The noise scale functions phi(sigma) of the paper and its repository: the two classical limits and ER SDE 1-5
# (SDE 1 with the repository's eta = 0). ER SDE 5 is the paper's recommendation. Each satisfies
# d log phi / d log sigma >= 1 (ER SDE 4 only for sigma up to about 1000; a grid past that is refused).
NOISE_SCALE_FUNCTIONS = {
    "ode": lambda sigma: sigma,
    "reverse_sde": lambda sigma: sigma**2,
    "er_sde_1": lambda sigma: sigma * (np.exp(-1 / sigma) + 10),
    "er_sde_2": lambda sigma: sigma**1.5,
    "er_sde_3": lambda sigma: sigma**2.5,
    "er_sde_4": lambda sigma: sigma**0.9 * np.log10(1 + 100 * sigma**1.5),
    "er_sde_5": lambda sigma: sigma * (np.exp(sigma**0.3) + 10),
}
_QUADRATURE_NODES, _QUADRATURE_WEIGHTS = np.polynomial.legendre.leggauss(32)


def er_sde_weights(phi, sigma_u, sigma_t):
    """Weights of x0, dx0/dsigma and d2x0/dsigma2 in a step from sigma_u to sigma_t < sigma_u, and the ratio
    phi_t / phi_u; the integrals of (sigma - sigma_u)^k / phi by Gauss-Legendre in log sigma."""
    log_u, log_t = math.log(sigma_u), math.log(sigma_t)
    sigma = np.exp(0.5 * (log_u + log_t) + 0.5 * (log_u - log_t) * _QUADRATURE_NODES)
    measure = 0.5 * (log_u - log_t) * _QUADRATURE_WEIGHTS * sigma / phi(sigma)  # dsigma / phi = sigma dlog sigma / phi
    phi_t, ratio = phi(sigma_t), phi(sigma_t) / phi(sigma_u)
    delta = sigma_t - sigma_u
    weights = (1 - ratio,
               delta + phi_t * float(measure.sum()),
               0.5 * delta**2 + phi_t * float((measure * (sigma - sigma_u)).sum()))
    return weights, float(ratio)


@dataclass(frozen=True)
class ERSDEStep(PlanStep):
    """An ER-SDE step from ``level`` to ``target`` with its numbers, computed once from the grid.

    Args:
        weights (`tuple`): the exact weights of x0 and its derivatives in sigma over the step.
        ratio (`float`): phi(sigma_t) / phi(sigma_u).
        noise_std (`float`): the std of the step's fresh noise, in y = x / a.
    """

    weights: tuple = ()
    ratio: float = 1.0
    noise_std: float = 0.0


class ERSDEScheduler(MultistepDataPredictionMixin, ScoreSDESchedulerMixin):
    """ER-SDE-Solver-k: a multistep solver of the extended reverse-time SDE family, k = 1, 2, 3.

    One network evaluation per grid time, fresh Gaussian noise at every step (``generator`` lists give each sample its
    own), except with ``noise_scale_function="ode"``. Orders 2 and 3 extrapolate x0 in sigma = s / a from the previous
    steps' data predictions (the first steps use the orders their history allows). The last evaluation, at
    ``sampling_eps``, returns the data prediction x0 (the noise removal).

    Args:
        sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps, prediction_type,
        timestep_type, data_centered: the SDE and the network's parameterization, exactly as in
            :class:`PredictorCorrectorScheduler`, so the two swap with ``from_config``.
        solver_order (`int`): 1, 2 or 3 (default 3, the paper's ER-SDE-Solver-3).
        noise_scale_function (`str`): the member of the family, one of :data:`NOISE_SCALE_FUNCTIONS`: ``er_sde_5``
            (default, the paper's phi(sigma) = sigma (e^(sigma^0.3) + 10)), ``er_sde_1`` to ``er_sde_4`` (the paper's
            alternatives), ``ode`` (phi = sigma: the probability-flow ODE, no noise) or ``reverse_sde`` (phi = sigma^2:
            the reverse SDE of Song et al.).
        timestep_spacing (`str`): ``log_snr`` (uniform in lambda, stretched past noise 1e-3 as in
            :class:`ExponentialIntegratorScheduler`; default), ``uniform_time`` or ``karras``.
        rho (`float`): exponent of the ``karras`` spacing.
    """

    order = 1
    default_num_inference_steps = 30

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
        noise_scale_function: str = "er_sde_5",
        timestep_spacing: str = "log_snr",
        rho: float = 7.0,
    ):
        self._setup(sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
                    prediction_type, timestep_type, data_centered)
        check_choice("solver_order", solver_order, SOLVER_ORDERS)
        check_choice("noise_scale_function", noise_scale_function, tuple(NOISE_SCALE_FUNCTIONS))
        check_spacing(timestep_spacing, rho)
        self._history = []

    @staticmethod
    def _expansion_variable(level):
        return level.s / level.a  # sigma: the paper expands x0 in the noise scale, not in lambda

    def _build_plan(self, levels):
        """The shared plan, each step with its weights, phi ratio and noise std (Python floats, computed once)."""
        plan = super()._build_plan(levels)
        phi, name = NOISE_SCALE_FUNCTIONS[self.config.noise_scale_function], self.config.noise_scale_function
        steps = []
        for entry in plan[:-1]:
            sigma_u, sigma_t = entry.level.s / entry.level.a, entry.target.s / entry.target.a
            weights, ratio = er_sde_weights(phi, sigma_u, sigma_t)
            shrink = sigma_u * ratio / sigma_t  # <= 1 exactly when the step's noise variance is >= 0
            if not (math.isfinite(shrink) and shrink <= 1 + 1e-12):
                raise ValueError(
                    f"noise_scale_function={name!r} is not a member of the ER-SDE family on this schedule: between"
                    f" noise levels sigma = {sigma_u:.4g} and {sigma_t:.4g} phi falls more slowly than sigma"
                    " (d log phi / d log sigma < 1: the step's noise variance is negative). Use another"
                    " noise_scale_function or a smaller sigma_max."
                )
            noise_std = 0.0 if shrink > 1 - 1e-12 else sigma_t * math.sqrt(1 - shrink**2)  # phi = sigma: exactly none
            steps.append(ERSDEStep(entry.level, entry.target, weights, ratio, noise_std))
        return steps + plan[-1:]

    def _update(self, entry, score, sample, generator):
        x0, sigma, _ = self._record(entry, score, sample)
        if sigma is None:
            return x0, x0
        update = taylor_integral(entry.weights, x0, taylor_derivatives(self._history))
        # The solution of the module docstring, in x = a y.
        mean = (entry.target.a / entry.level.a) * entry.ratio * sample + entry.target.a * update
        if entry.noise_std == 0:
            return mean, mean
        return mean + entry.target.a * entry.noise_std * self._noise(sample, generator), mean
