"""Adaptive solver of the probability-flow ODE (Song et al. 2021, Eq. 13), with exact log-densities.

The ODE ``dx/dt = v(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` maps data (t = eps) to the prior (t = 1) and back,
deterministically: :meth:`ProbabilityFlowODE.encode` integrates forward, :meth:`ProbabilityFlowODE.decode` backward.
Along a trajectory the instantaneous change of variables (Chen et al. 2018; Song et al. 2021, Eq. 39) gives
``d log p_t(x_t) / dt = -div v(x_t, t)``, hence

    log p_eps(x) = log p_1(x_1) + int_eps^1 div v(x_t, t) dt,

which :meth:`ProbabilityFlowODE.log_likelihood` integrates jointly with x. The divergence is estimated by
Hutchinson-Skilling (``E[e^T (dv/dx) e] = div v`` for probes with E[e e^T] = I; one network pass per evaluation
whatever the number of probes, and one vector-Jacobian product per probe through its graph) or computed exactly (one
vector-Jacobian product per dimension). A Gaussian control variate takes the exactly known divergence of a linear drift
out of the estimate, so that the probes only estimate the remainder (docs/likelihood.md, "Variance reduction").

The integrator is torchdiffeq's ``odeint``; its default ``dopri5`` is the RK45 (Dormand-Prince) pair of the paper.
"""

import math
from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput
from torchdiffeq import odeint

from ..validation import check_choice, check_integer, check_number, check_positive
from .errors import MaxNFEExceededError

METHODS = ("dopri5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8")  # torchdiffeq's adaptive-step methods
DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "hadamard", "gaussian", "orthogonal")


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
    else:  # gaussian, and the raw draw of orthogonal probes
        probes = torch.randn(shape, generator=generator, dtype=torch.float64, device=device)
    return probes.to(device=like.device, dtype=like.dtype)


def _hadamard_probes(num_probes, batch, sample_shape, generator, like):
    """(K, B, ...) Rademacher probes, per sample the first K rows of a Sylvester-Hadamard matrix of order N = 2^n >= D,
    on D columns picked at random, times random signs (K a power of two <= N).

    Each probe alone is Rademacher (E[e e^T] = I, exact on the diagonal). The K rows form a subgroup of the Walsh
    functions, so (1/K) sum_k e_ki e_kj is +-1 when the chosen columns c_i, c_j have c_i XOR c_j in the subgroup's
    annihilator (N / K - 1 of the N - 1 other columns) and 0 otherwise: a pair of dimensions is aliased with
    probability (N / K - 1) / (N - 1) < 1 / K, the off-diagonal second moment of K independent Rademacher probes.
    The variance is that probability times 2 sum_{i != j} A_ij^2 (A symmetrized), and 0 at K = N = D.
    """
    if isinstance(generator, (list, tuple)):
        per_sample = [_hadamard_probes(num_probes, 1, sample_shape, g, like) for g in generator]
        return torch.cat(per_sample, dim=1)
    device = generator.device if generator is not None else None
    dim = math.prod(sample_shape)
    order = 1 << max(dim - 1, 0).bit_length()
    columns = torch.stack([torch.randperm(order, generator=generator, device=device)[:dim] for _ in range(batch)])
    signs = torch.randint(0, 2, (batch, dim), generator=generator, device=device) * 2 - 1
    probes = torch.empty((num_probes, batch, dim), dtype=torch.int8, device=columns.device)
    for row in range(num_probes):  # one row at a time: no (K, B, D) int64 intermediate
        overlap = row & columns  # H[k, c] = (-1)^popcount(k & c)
        parity = torch.zeros_like(overlap)
        for bit in range(order.bit_length()):
            parity ^= (overlap >> bit) & 1
        probes[row] = (1 - 2 * parity) * signs
    return probes.view(num_probes, batch, *sample_shape).to(device=like.device, dtype=like.dtype)


def _orthogonalize(probes):
    """(K, B, ...) Gaussian draws -> per sample, K mutually orthogonal probes of norm sqrt(D), jointly Haar-distributed.

    Each probe alone is uniform on the sphere of radius sqrt(D), so E[e e^T] = I still holds, and K = D probes give the
    trace exactly. Q of the QR of a Gaussian (D, K) matrix, with R's diagonal made positive, is Haar (Mezzadri 2007).
    """
    gaussian = probes.flatten(2).permute(1, 2, 0).double()  # (B, D, K)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    return (math.sqrt(gaussian.shape[1]) * q).permute(2, 0, 1).reshape(probes.shape).to(probes.dtype)


class _GaussianControlVariate:
    """The exactly known part of div v: the probability-flow drift of a Gaussian N(m, C) approximation of the data.

    The Gaussian's score at time t is -(a^2 C + s^2 I)^-1 (x - a m), linear in x, so its drift (Eq. 13) has the
    constant Jacobian L(t) = f(t) I + g(t)^2 (a^2 C + s^2 I)^-1 / 2 (f: the SDE's drift coefficient) whose trace is
    known exactly. Then div v = tr L + E[e^T (dv/dx - L) e]: the probes estimate only the remainder, unbiased for any
    C, with less variance the closer L is to dv/dx. The mean m drops out.

    Rademacher and orthogonal probes have |e|^2 = D, so the isotropic part of L (f I, and all of L for a number C)
    cancels exactly in their estimate: only the anisotropic part of a (D,) or (D, D) covariance changes it.

    Args:
        sde (`ScoreSDE`): the forward SDE.
        covariance: C in the model's space, over flattened samples: a number (isotropic variance), a (D,) tensor
            (per-dimension variances) or a (D, D) symmetric positive semi-definite matrix.
        dim (`int`): D.
    """

    def __init__(self, sde, covariance, dim):
        self.sde = sde
        allowed = f"a number, a ({dim},) tensor of variances or a ({dim}, {dim}) covariance matrix"
        given = covariance
        try:
            covariance = torch.as_tensor(covariance, dtype=torch.float64).cpu()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"control_variate must be {allowed}, got {given!r}.") from None
        if not torch.isfinite(covariance).all():
            raise ValueError(f"control_variate must be {allowed} with finite entries; it holds nan or inf.")
        if covariance.shape == (dim, dim):
            if not torch.allclose(covariance, covariance.T, rtol=1e-6, atol=1e-12):
                raise ValueError(f"control_variate must be {allowed}; the ({dim}, {dim}) matrix given is not"
                                 " symmetric.")
            self.eigenvalues, self.eigenvectors = torch.linalg.eigh(covariance)
        elif covariance.dim() <= 1 and covariance.numel() in (1, dim):
            self.eigenvalues, self.eigenvectors = covariance.reshape(-1).expand(dim).clone(), None  # standard basis
        else:
            raise ValueError(f"control_variate must be {allowed}, got shape {tuple(covariance.shape)}.")
        scale = self.eigenvalues.abs().max() if len(self.eigenvalues) else 0.0
        if (self.eigenvalues < -1e-9 * scale).any():
            raise ValueError(f"control_variate must be {allowed} with finite variances >= 0 (positive semi-definite);"
                             f" its smallest eigenvalue is {self.eigenvalues.min().item():.3g}.")
        self.eigenvalues = self.eigenvalues.clamp(min=0)

    def _coefficients(self, t):
        """f(t) and the eigenvalues of L(t) - f(t) I, g^2 / (2 (a^2 lambda_i + s^2)), in C's eigenbasis."""
        t = torch.as_tensor(t, dtype=torch.float64).cpu()
        a, s = self.sde.marginal(t)
        return self.sde.drift_coefficient(t), 0.5 * self.sde.diffusion(t) ** 2 / (a**2 * self.eigenvalues + s**2)

    def correction(self, probes):
        """``t -> tr L(t) - e^T L(t) e`` for fixed flattened probes (..., D), in float64 on their device: what turns a
        probe's estimate of div v into one of the remainder plus the exact tr L. The probes are rotated into C's
        eigenbasis once, here, not at every evaluation."""
        probes = probes.double()
        squared_norm = probes.pow(2).sum(-1)
        rotated = probes if self.eigenvectors is None else probes @ self.eigenvectors.to(probes.device)
        squared = rotated.pow(2)

        def at(t):
            drift_coefficient, precision = self._coefficients(t)  # once per evaluation
            precision = precision.to(probes.device)
            trace = drift_coefficient.item() * len(self.eigenvalues) + precision.sum()
            return trace - (drift_coefficient.item() * squared_norm + squared @ precision)

        return at


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

    def log_likelihood(self, x, eps=1e-5, divergence="hutchinson", probe="rademacher", num_probes=1,
                       control_variate=None, generator=None):
        """log p_eps(x) by the instantaneous change of variables, integrating x from eps to 1 jointly with the log-det.

        Args:
            x (`torch.Tensor`): (B, ...) data in the model's range; the solve runs in its dtype.
            eps (`float`): the data's time, in (0, 1) (paper: 1e-5).
            divergence (`str`): ``hutchinson`` (unbiased estimate, one network pass and one vector-Jacobian product
                per probe per evaluation) or ``exact`` (one vector-Jacobian product per dimension).
            probe (`str`): Hutchinson probe distribution: ``rademacher`` (independent entries +-1, the paper's),
                ``hadamard`` (+-1 entries too, per sample the rows of a randomly signed and subsampled Hadamard matrix,
                which alias fewer pairs of dimensions than independent probes; ``num_probes`` a power of two, exact
                at ``num_probes = D`` for D a power of two), ``gaussian``, or ``orthogonal`` (per sample,
                ``num_probes <= D`` mutually orthogonal probes uniform on the sphere of radius sqrt(D); exact at
                ``num_probes = D``).
            num_probes (`int`): Hutchinson probes averaged per sample, fixed for the whole solve. The network runs once
                per evaluation on the batch of B; the K probes' vector-Jacobian products all go through that one
                graph, so NFE does not grow with K (the backward work does, K-fold).
            control_variate (*optional*): the data covariance of a Gaussian approximation whose divergence is added
                exactly, so that the probes estimate only the rest (docs/likelihood.md): a number, a (D,) tensor of
                variances or a (D, D) matrix, over flattened samples in the model's space. Unbiased for any value;
                ignored by ``exact``.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): draws the probes; a list (one per
                sample) gives each sample its own probes, independent of the batch.
        """
        eps = _check_eps(eps)
        check_choice("divergence", divergence, DIVERGENCES)
        check_choice("probe", probe, PROBES)
        num_probes = check_integer("num_probes", num_probes, minimum=1)
        batch, dim = x.shape[0], x[0].numel()
        order = 1 << max(dim - 1, 0).bit_length()
        if probe == "orthogonal" and num_probes > dim:
            raise ValueError(f"num_probes={num_probes} orthogonal probes need num_probes <= {dim}, the samples'"
                             f" dimension (at {dim} they give the exact divergence).")
        if probe == "hadamard" and (num_probes > order or num_probes & (num_probes - 1)):
            raise ValueError(f"num_probes={num_probes} hadamard probes need a power of two <= {order} (the Hadamard"
                             f" order for dimension {dim}).")
        if divergence == "exact":
            divergence_fn = self._exact_divergence
        else:
            if probe == "hadamard":
                probes = _hadamard_probes(num_probes, batch, x.shape[1:], generator, x)
            else:
                probes = _draw_probes(probe, (num_probes * batch, *x.shape[1:]), generator, x)
                probes = probes.view(num_probes, batch, *x.shape[1:])  # probe k of sample i at [k, i]
            if probe == "orthogonal":
                probes = _orthogonalize(probes)
            control = None if control_variate is None else _GaussianControlVariate(self.sde, control_variate, dim)
            divergence_fn = self._hutchinson_divergence(probes, control)

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

    def _hutchinson_divergence(self, probes, control):
        """div v ~ mean_k e_k^T (dv/dx) e_k [- e_k^T L e_k + tr L]; probes (K, B, ...), one network pass for all K."""
        num_probes = probes.shape[0]
        flat_probes = probes.flatten(2)  # (K, B, D)
        correction = None if control is None else control.correction(flat_probes)

        def divergence(x, t):
            drift = self.drift(x, t)
            # K backward passes through the one forward graph. A vmapped batch (is_grads_batched=True) was 1.7x slower
            # on CPU for K = 16-32 and fails inside diffusers' UNet2DModel (torch 2.13: memory-format query in vmap).
            vjps = [torch.autograd.grad(drift, x, probes[k], retain_graph=k < num_probes - 1)[0]
                    for k in range(num_probes)]
            estimates = (torch.stack(vjps).flatten(2) * flat_probes).sum(2)  # (K, B)
            if correction is not None:
                estimates = (estimates.double() + correction(t)).to(estimates.dtype)
            return drift, estimates.mean(0)

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
