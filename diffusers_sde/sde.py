"""The three SDEs of Song et al. (ICLR 2021): VE, VP and sub-VP.

Every sampler, likelihood, loss and guidance routine in this package talks to an SDE only through the
methods of :class:`ScoreSDE`; nothing else re-derives a schedule. Time ``t`` runs over [0, 1] and may be
a Python float or a tensor (broadcast against the sample's batch dimension).

All three SDEs are linear, so the perturbation kernel is Gaussian: ``x_t = a(t) x_0 + s(t) z``
(:meth:`ScoreSDE.marginal`). The discretization, the ancestral step and the denoiser are written once,
from ``a`` and ``s``, and serve every SDE.
"""

import math

import torch

SDE_TYPES = ("ve", "vp", "subvp")


def _as_tensor(t, like=None):
    if isinstance(t, torch.Tensor):
        return t
    if like is not None:
        return torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return torch.as_tensor(t, dtype=torch.float64)


def _batch_view(values, x):
    """Reshape a per-sample (or scalar) coefficient so it broadcasts over an image batch."""
    if isinstance(values, torch.Tensor) and values.dim() == 1 and x.dim() > 1:
        return values.reshape(-1, *([1] * (x.dim() - 1)))
    return values


class ScoreSDE:
    """Base class: a forward SDE ``dx = f(x, t) dt + g(t) dw`` with a Gaussian perturbation kernel.

    Subclasses define :meth:`drift_coefficient` (f is linear in x: ``f = drift_coefficient(t) * x``),
    :meth:`diffusion`, :meth:`log_mean_coefficient` and :meth:`std`.
    """

    sde_type = None
    prior_std = 1.0

    # --- the paper's symbols -------------------------------------------------------------------------------
    def drift_coefficient(self, t):
        raise NotImplementedError

    def diffusion(self, t):
        """g(t)."""
        raise NotImplementedError

    def log_mean_coefficient(self, t):
        """log a(t), where x_t = a(t) x_0 + s(t) z."""
        raise NotImplementedError

    def std(self, t):
        """s(t), the standard deviation of the perturbation kernel."""
        raise NotImplementedError

    def mean_coefficient(self, t):
        """a(t)."""
        return torch.exp(self.log_mean_coefficient(_as_tensor(t)))

    def marginal(self, t):
        """(a(t), s(t)) of the perturbation kernel p_0t(x_t | x_0) = N(a x_0, s^2 I)."""
        return self.mean_coefficient(t), self.std(t)

    def log_snr(self, t):
        """Half log signal-to-noise ratio lambda(t) = log(a(t) / s(t)), strictly decreasing in t (DPM-Solver's lambda)."""
        t = _as_tensor(t)
        return self.log_mean_coefficient(t) - torch.log(self.std(t))

    def time_from_log_snr(self, lam):
        """The time t with lambda(t) = ``lam`` (float64): every time recovered from a noise level goes through here.

        The SDEs below invert lambda in closed form; this fallback bisects on [0, 1] (lambda is monotone), so a new SDE
        needs no formula. Values of ``lam`` outside [lambda(1), lambda(0)] give the nearest end of [0, 1].
        """
        lam = _as_tensor(lam).to(torch.float64)
        low, high = torch.zeros_like(lam), torch.ones_like(lam)
        for _ in range(64):
            middle = 0.5 * (low + high)
            later = self.log_snr(middle) > lam  # still too little noise: the answer lies at a later time
            low, high = torch.where(later, middle, low), torch.where(later, high, middle)
        return 0.5 * (low + high)

    def sde(self, x, t):
        """Drift f(x, t) and diffusion g(t) of the forward SDE (Eq. 5)."""
        t = _as_tensor(t, x)
        return _batch_view(self.drift_coefficient(t), x) * x, _batch_view(self.diffusion(t), x)

    def reverse_drift(self, x, t, score, probability_flow=False):
        """Drift of the reverse SDE, f - g^2 score (Eq. 6), or of the probability-flow ODE, f - g^2 score / 2 (Eq. 13)."""
        drift, diffusion = self.sde(x, t)
        weight = 0.5 if probability_flow else 1.0
        return drift - weight * diffusion**2 * score

    # --- prior --------------------------------------------------------------------------------------------
    def prior_sample(self, shape, generator=None, device=None, dtype=torch.float32):
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.prior_std

    def prior_log_prob(self, z):
        """Log-density of the prior N(0, prior_std^2 I), summed over all but the batch dimension."""
        dim = z[0].numel()
        sq = z.flatten(1).pow(2).sum(1) / self.prior_std**2
        return -0.5 * dim * math.log(2 * math.pi * self.prior_std**2) - 0.5 * sq

    # --- derived quantities, written once from a(t) and s(t) -----------------------------------------------
    def perturb(self, x0, t, noise):
        """Sample x_t from the perturbation kernel given x_0 and standard normal ``noise``."""
        a, s = self.marginal(_as_tensor(t, x0))
        return _batch_view(a, x0) * x0 + _batch_view(s, x0) * noise

    def discretize(self, t, t_prev):
        """Forward discretization between the adjacent times t_prev < t: x_t = x_{t_prev} + f_i + G_i z.

        Returns (f_i / x, G_i). Built from the exact Gaussian transition, it reproduces the paper's SMLD
        discretization for VE (G_i^2 = sigma_i^2 - sigma_{i-1}^2) and DDPM's for VP
        (f_i = (sqrt(1 - beta_i) - 1) x, G_i = sqrt(beta_i)), and gives sub-VP a consistent one.
        """
        ratio, variance = gaussian_transition(*self.marginal(t_prev), *self.marginal(t))
        return ratio - 1, variance.sqrt()


def tweedie_denoise(x, score, a, s):
    """E[x_0 | x_t] = (x + s^2 score) / a (Tweedie's formula) for the kernel x_t = a x_0 + s z: the paper's final
    noise removal, the ancestral step's x_0 and the data prediction of the exponential integrators."""
    return (x + s**2 * score) / a


def gaussian_transition(a_from, s_from, a_to, s_to):
    """Exact forward transition between two noise levels of a linear SDE: x_to = r x_from + sqrt(v) z.

    ``(a, s)`` are the perturbation-kernel coefficients of each level (``(1, 0)`` is the data itself).
    Returns ``(r, v)``; v >= 0 whenever the noise-to-signal ratio s / a grows from ``from`` to ``to``.
    """
    ratio = a_to / a_from
    variance = s_to**2 - ratio**2 * s_from**2
    return ratio, variance.clamp(min=0) if isinstance(variance, torch.Tensor) else max(variance, 0.0)


class VESDE(ScoreSDE):
    """Variance-exploding SDE (SMLD / NCSN): sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    Args:
        sigma_min (`float`): smallest noise level (paper: 0.01).
        sigma_max (`float`): largest noise level, the prior's std (paper: 50 for CIFAR-10, 348 for 256 px).
    """

    sde_type = "ve"

    def __init__(self, sigma_min=0.01, sigma_max=50.0):
        if not (0 < sigma_min < sigma_max):
            raise ValueError(
                f"VE SDE needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}."
            )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def drift_coefficient(self, t):
        return torch.zeros_like(_as_tensor(t))

    def diffusion(self, t):
        return self.std(t) * math.sqrt(2 * self._log_ratio)

    def log_mean_coefficient(self, t):
        return torch.zeros_like(_as_tensor(t))

    def std(self, t):
        return self.sigma_min * torch.exp(_as_tensor(t) * self._log_ratio)

    def time_from_std(self, sigma):
        return torch.log(_as_tensor(sigma) / self.sigma_min) / self._log_ratio

    def time_from_log_snr(self, lam):
        return self.time_from_std(torch.exp(-_as_tensor(lam).to(torch.float64)))  # a = 1: lambda = -log sigma


class VPSDE(ScoreSDE):
    """Variance-preserving SDE (DDPM in continuous time): beta(t) = beta_min + t (beta_max - beta_min).

    Args:
        beta_min (`float`): beta(0) (paper: 0.1; DDPM's beta_start * N).
        beta_max (`float`): beta(1) (paper: 20; DDPM's beta_end * N).
    """

    sde_type = "vp"

    def __init__(self, beta_min=0.1, beta_max=20.0):
        if not (0 <= beta_min < beta_max):
            raise ValueError(f"{type(self).__name__} needs 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}.")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t):
        return self.beta_min + _as_tensor(t) * (self.beta_max - self.beta_min)

    def drift_coefficient(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return self.beta(t).sqrt()

    def log_mean_coefficient(self, t):
        t = _as_tensor(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def std(self, t):
        return (-torch.expm1(2 * self.log_mean_coefficient(t))).sqrt()

    def _time_from_log_mean_coefficient(self, m):
        # Solve -t^2 (b1 - b0) / 4 - t b0 / 2 = m for t >= 0.
        delta = self.beta_max - self.beta_min
        b0 = self.beta_min
        return (-b0 + torch.sqrt(b0**2 - 4 * delta * m)) / delta

    def time_from_std(self, sigma):
        return self._time_from_log_mean_coefficient(0.5 * torch.log1p(-_as_tensor(sigma) ** 2))

    def time_from_log_snr(self, lam):
        # a^2 / s^2 = e^(2m) / (1 - e^(2m)) = e^(2 lambda), so e^(2m) = sigmoid(2 lambda).
        lam = _as_tensor(lam).to(torch.float64)
        return self._time_from_log_mean_coefficient(-0.5 * torch.nn.functional.softplus(-2 * lam))


class SubVPSDE(VPSDE):
    """Sub-variance-preserving SDE: same drift and mean as VP, diffusion
    g(t) = sqrt(beta(t) (1 - exp(-2 beta_min t - (beta_max - beta_min) t^2))), std s(t) = 1 - a(t)^2.
    """

    sde_type = "subvp"

    def diffusion(self, t):
        return (self.beta(t) * -torch.expm1(4 * self.log_mean_coefficient(t))).sqrt()

    def std(self, t):
        return -torch.expm1(2 * self.log_mean_coefficient(t))

    def time_from_std(self, sigma):
        return self._time_from_log_mean_coefficient(0.5 * torch.log1p(-_as_tensor(sigma)))

    def time_from_log_snr(self, lam):
        # With u = a = e^m: e^lambda = u / (1 - u^2), so u = 2 e^lambda / (1 + sqrt(1 + 4 e^(2 lambda))).
        lam = _as_tensor(lam).to(torch.float64)
        log_u = lam + math.log(2) - torch.log1p(torch.sqrt(1 + 4 * torch.exp(2 * lam)))
        return self._time_from_log_mean_coefficient(log_u)


def make_sde(sde_type, sigma_min=0.01, sigma_max=50.0, beta_min=0.1, beta_max=20.0):
    """Build the SDE named by a scheduler config's ``sde_type``."""
    if sde_type == "ve":
        return VESDE(sigma_min, sigma_max)
    if sde_type == "vp":
        return VPSDE(beta_min, beta_max)
    if sde_type == "subvp":
        return SubVPSDE(beta_min, beta_max)
    raise ValueError(f"sde_type must be one of {SDE_TYPES}, got {sde_type!r}.")
