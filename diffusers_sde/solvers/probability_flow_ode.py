"""Adaptive solver of the probability-flow ODE (Song et al. 2021, Eq. 13), with exact log-densities.

The ODE ``dx/dt = v(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` maps data (t = eps) to the prior (t = 1) and back,
deterministically: :meth:`ProbabilityFlowODE.encode` integrates forward, :meth:`ProbabilityFlowODE.decode` backward.
Along a trajectory the instantaneous change of variables (Chen et al. 2018; Song et al. 2021, Eq. 39) gives
``d log p_t(x_t) / dt = -div v(x_t, t)``, hence

    log p_eps(x) = log p_1(x_1) + int_eps^1 div v(x_t, t) dt,

which :meth:`ProbabilityFlowODE.log_likelihood` integrates jointly with x. The divergence is estimated by
Hutchinson-Skilling (``E[e^T (dv/dx) e] = div v`` for probes with E[e e^T] = I; one vector-Jacobian product per
evaluation whatever the number of probes) or computed exactly (one vector-Jacobian product per dimension).

The integrator is torchdiffeq's ``odeint``; its default ``dopri5`` is the RK45 (Dormand-Prince) pair of the paper.
"""

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput
from torchdiffeq import odeint

from ..validation import check_choice, check_integer, check_number, check_positive
from .errors import MaxNFEExceededError

METHODS = ("dopri5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8")  # torchdiffeq's adaptive-step methods
DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")


@dataclass
class ProbabilityFlowODEOutput(BaseOutput):
    """Result of :meth:`ProbabilityFlowODE.encode` or :meth:`ProbabilityFlowODE.decode`.

    Args:
        sample (`torch.Tensor`): the end point of the trajectory (latents for ``encode``, data for ``decode``).
        nfe (`int`): network evaluations the solve took.
    """

    sample: torch.Tensor
    nfe: int


@dataclass
class ProbabilityFlowLikelihoodOutput(BaseOutput):
    """Result of :meth:`ProbabilityFlowODE.log_likelihood`; log-densities are per sample, in nats.

    Args:
        log_prob (`torch.Tensor`): (B,) log p_eps(x) = ``prior_log_prob + delta_log_prob``.
        prior_log_prob (`torch.Tensor`): (B,) log p_1(x_1), the prior's log-density at the encoded latents.
        delta_log_prob (`torch.Tensor`): (B,) int_eps^1 div v(x_t, t) dt, the change of variables along the ODE.
        latents (`torch.Tensor`): x_1.
        nfe (`int`): network evaluations the solve took (each with one or ``dim`` vector-Jacobian products).
    """

    log_prob: torch.Tensor
    prior_log_prob: torch.Tensor
    delta_log_prob: torch.Tensor
    latents: torch.Tensor
    nfe: int


def _check_eps(eps):
    return check_number("eps (the time the data sits at)", eps, minimum=0, maximum=1 - 1e-12)


def _draw_probes(kind, shape, generator, like):
    """Probes of ``shape`` (num_probes * B, ...); a list of B generators draws each sample's probes from its own."""
    if isinstance(generator, (list, tuple)):
        per_sample = [_draw_probes(kind, (shape[0] // len(generator), *shape[1:]), g, like) for g in generator]
        return torch.stack(per_sample, dim=1).flatten(0, 1)  # probe p of sample i sits at p * B + i
    device = generator.device if generator is not None else None  # draw where the generator lives
    if kind == "rademacher":
        probes = torch.randint(0, 2, shape, generator=generator, dtype=torch.int8, device=device) * 2 - 1
    else:
        probes = torch.randn(shape, generator=generator, dtype=torch.float64, device=device)
    return probes.to(device=like.device, dtype=like.dtype)


class ProbabilityFlowODE:
    """The probability-flow ODE of an SDE and a score, solved with an adaptive Runge-Kutta method.

    Args:
        sde (`ScoreSDE`): the forward SDE (``scheduler.sde``).
        score_fn (`Callable`): ``score(x, t) -> grad_x log p_t(x)`` for a batch x and a scalar tensor t; see
            :func:`~diffusers_sde.parameterization.score_function`. It must be differentiable in x for log-likelihoods.
        rtol (`float`), atol (`float`): the solver's relative and absolute tolerances, > 0 (paper: 1e-5 both).
        method (`str`): a torchdiffeq adaptive method, one of ``METHODS``; ``dopri5`` is RK45.
        max_nfe (`int`): stop with :class:`MaxNFEExceededError` past this many network evaluations in one solve.
    """

    def __init__(self, sde, score_fn, rtol=1e-5, atol=1e-5, method="dopri5", max_nfe=10_000):
        self.sde = sde
        self.score_fn = score_fn
        self.rtol = check_positive("rtol", rtol)
        self.atol = check_positive("atol", atol)
        self.method = check_choice("method", method, METHODS)
        self.max_nfe = check_integer("max_nfe", max_nfe, minimum=1)

    def drift(self, x, t):
        """v(x, t) = f(x, t) - g(t)^2 score(x, t) / 2 (Eq. 13)."""
        return self.sde.reverse_drift(x, t, self.score_fn(x, t), probability_flow=True)

    def _solve(self, func, state, t_start, t_end):
        """Integrate ``d state / dt = func(t, state)`` from t_start to t_end; returns (final state, NFE)."""
        nfe = 0

        def counted(t, y):
            nonlocal nfe
            nfe += 1
            if nfe > self.max_nfe:
                raise MaxNFEExceededError(
                    f"the probability-flow ODE needed more than max_nfe={self.max_nfe} network evaluations"
                    f" (rtol={self.rtol}, atol={self.atol}); loosen the tolerances or raise max_nfe."
                )
            return func(t, y)

        like = state[0] if isinstance(state, tuple) else state
        times = torch.tensor([t_start, t_end], dtype=like.dtype, device=like.device)
        with torch.no_grad():
            # step_t clips the last step at t_end: by default the solver steps past it and interpolates back, which
            # would evaluate the score outside [eps, 1] (VP's s(t) is NaN for t < 0).
            path = odeint(counted, state, times, rtol=self.rtol, atol=self.atol, method=self.method,
                          options={"step_t": times[1:]})
        final = tuple(p[-1] for p in path) if isinstance(state, tuple) else path[-1]
        return final, nfe

    def _ode_func(self):
        def func(t, x):
            return self.drift(x, t)

        return func

    def decode(self, latents, eps=1e-3):
        """Integrate from the prior (t = 1) to the data (t = eps); no final denoising step.

        Args:
            latents (`torch.Tensor`): x_1, e.g. a prior sample (already scaled by ``sde.prior_std``).
            eps (`float`): the end time, in (0, 1) (paper: 1e-3 for VP/sub-VP sampling, 1e-5 for VE).
        """
        sample, nfe = self._solve(self._ode_func(), latents, 1.0, _check_eps(eps))
        return ProbabilityFlowODEOutput(sample=sample, nfe=nfe)

    def encode(self, x, eps=1e-3):
        """Integrate from the data (t = eps) to the prior (t = 1): the inverse of :meth:`decode`.

        Args:
            x (`torch.Tensor`): data in the model's range.
            eps (`float`): the start time, in (0, 1); use the same value as for :meth:`decode`.
        """
        sample, nfe = self._solve(self._ode_func(), x, _check_eps(eps), 1.0)
        return ProbabilityFlowODEOutput(sample=sample, nfe=nfe)

    def log_likelihood(self, x, eps=1e-5, divergence="hutchinson", probe="rademacher", num_probes=1, generator=None):
        """log p_eps(x) by the instantaneous change of variables, integrating x from eps to 1 jointly with the log-det.

        Args:
            x (`torch.Tensor`): (B, ...) data in the model's range; the solve runs in its dtype.
            eps (`float`): the data's time, in (0, 1) (paper: 1e-5).
            divergence (`str`): ``hutchinson`` (unbiased estimate, one vector-Jacobian product per evaluation) or
                ``exact`` (one vector-Jacobian product per dimension).
            probe (`str`): Hutchinson probe distribution, ``rademacher`` (paper) or ``gaussian``.
            num_probes (`int`): Hutchinson probes averaged per sample, fixed for the whole solve; they ride in the
                batch dimension, so the cost is still one network pass and one vector-Jacobian product per evaluation.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): draws the probes; a list (one per
                sample) gives each sample its own probes, independent of the batch.
        """
        eps = _check_eps(eps)
        check_choice("divergence", divergence, DIVERGENCES)
        check_choice("probe", probe, PROBES)
        num_probes = check_integer("num_probes", num_probes, minimum=1)
        batch = x.shape[0]
        if divergence == "exact":
            divergence_fn = self._exact_divergence
        else:
            probes = _draw_probes(probe, (num_probes * batch, *x.shape[1:]), generator, x)
            divergence_fn = self._hutchinson_divergence(probes, num_probes)

        def func(t, state):
            with torch.enable_grad():
                x_t = state[0].detach().requires_grad_(True)
                drift, div = divergence_fn(x_t, t)
            return drift.detach(), div.detach()

        start = (x, torch.zeros(batch, dtype=x.dtype, device=x.device))
        (latents, delta), nfe = self._solve(func, start, eps, 1.0)
        prior = self.sde.prior_log_prob(latents)
        return ProbabilityFlowLikelihoodOutput(
            log_prob=prior + delta, prior_log_prob=prior, delta_log_prob=delta, latents=latents, nfe=nfe
        )

    def _hutchinson_divergence(self, probes, num_probes):
        def divergence(x, t):
            # Each probe gets its own copy of the batch: one network pass and one VJP cover all of them.
            copies = x.repeat(num_probes, *([1] * (x.dim() - 1))) if num_probes > 1 else x
            drift = self.drift(copies, t)
            (vjp,) = torch.autograd.grad(drift, copies, probes)
            estimates = (vjp * probes).flatten(1).sum(1).view(num_probes, x.shape[0])
            return drift[: x.shape[0]], estimates.mean(0)

        return divergence

    def _exact_divergence(self, x, t):
        drift = self.drift(x, t)
        flat_drift = drift.flatten(1)
        dim = flat_drift.shape[1]
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(dim):  # tr(dv/dx) = sum_i e_i^T (dv/dx) e_i
            (row,) = torch.autograd.grad(flat_drift[:, i].sum(), x, retain_graph=i < dim - 1)
            div = div + row.flatten(1)[:, i]
        return drift, div
