"""Time grids for the fast samplers, written once from the SDE's a(t) and s(t), so they serve VE, VP and sub-VP alike.

The sampling grids of the fast-sampler literature are defined on a noise scale, not on t: DPM-Solver spaces its steps
uniformly in the half log-SNR lambda = log(a / s), EDM spaces sigma = s / a = exp(-lambda) with the rho = 7 polynomial
(Karras et al. 2022, Eq. 5). Both are mapped back to SDE time by the SDE's own inverse of lambda(t)
(:meth:`~diffusers_sde.sde.ScoreSDE.time_from_log_snr`, closed-form for VE, VP and sub-VP).
"""

import math

import torch

TIMESTEP_SPACINGS = ("uniform_time", "log_snr", "karras")

# Where the log-SNR grid starts to stretch: noise s / a = 1e-3 of unit data scale, where the VE (sigma_min 0.001) and
# VP (t = 1e-5) schedules end anyway, so only sub-VP's long tail (lambda ~ 9.2 at 1e-3, 13.8 at 1e-5) is affected.
TAIL_LOG_SNR = math.log(1000.0)
# Past the tail start, x0's lambda-derivatives decay like e^(-2 lambda) (Tweedie's shrinkage v / (v + e^(-2 lambda)));
# steps that grow like e^(lambda / 2) keep the local error h^(k+1) x0^(k+1) of an order-k step (k <= 3) from growing.
TAIL_RATE = 0.5


def time_grid(sde, num_steps, sampling_eps, spacing, rho=7.0, lambda_max_clipped=None, t_start=1.0,
              tail_log_snr=None):
    """``num_steps`` decreasing times from ``t_start`` to ``sampling_eps`` (float64), spaced as ``spacing`` says.

    Args:
        sde (`ScoreSDE`): the SDE whose a(t), s(t) define the noise scale.
        num_steps (`int`): number of grid times (>= 1).
        sampling_eps (`float`): last time.
        spacing (`str`): ``uniform_time`` (the paper's grid), ``log_snr`` (uniform in lambda, DPM-Solver's choice) or
            ``karras`` (sigma = s / a on EDM's rho-polynomial, Karras et al. 2022 Eq. 5).
        rho (`float`): exponent of the ``karras`` spacing (EDM: 7).
        lambda_max_clipped (`float`, optional): for the ``log_snr`` and ``karras`` spacings, the log-SNR past which
            the grid refines no further: when the spaced grid would put more than its last time beyond it, the
            first ``num_steps - 1`` times are spaced up to it instead and the last one stays at ``sampling_eps``.
        t_start (`float`): first time (default 1; Restart's backward solves start inside the schedule).
        tail_log_snr (`float`, optional): for the ``log_snr`` spacing without a clip, the log-SNR past which the grid
            is uniform in w = c + (1 - e^(-r (lambda - c))) / r instead of lambda (c = ``tail_log_snr``,
            r = ``TAIL_RATE``): its steps grow geometrically through a long low-noise tail, and every step still
            shrinks as 1 / num_steps, so a solver keeps its order (unlike a clip, whose last step never shrinks).
    """
    if num_steps == 1:
        return torch.tensor([t_start], dtype=torch.float64)
    if spacing == "uniform_time":
        return torch.linspace(t_start, sampling_eps, num_steps, dtype=torch.float64)
    lam_start, lam_end = sde.log_snr(t_start).item(), sde.log_snr(sampling_eps).item()
    if spacing == "log_snr" and lambda_max_clipped is None and tail_log_snr is not None and lam_end > tail_log_snr:
        warped = torch.linspace(lam_start, _compress_tail(lam_end, tail_log_snr), num_steps, dtype=torch.float64)
        lam = _expand_tail(warped, tail_log_snr)
    else:
        lam = _spaced_log_snr(lam_start, lam_end, num_steps, spacing, rho)
    if lambda_max_clipped is not None and lam[-2] > lambda_max_clipped:
        # log_snr: equal to the unclipped grid when its second-to-last point sits at the clip (continuous in the clip).
        lam[:-1] = _spaced_log_snr(lam_start, lambda_max_clipped, num_steps - 1, spacing, rho)
    times = sde.time_from_log_snr(lam).clamp(sampling_eps, t_start)
    times[0], times[-1] = t_start, sampling_eps  # the ends exactly, free of round-off
    return times


def _compress_tail(lam, start):
    """w(lambda): the identity up to ``start``, then start + (1 - e^(-r (lambda - start))) / r."""
    return lam if lam <= start else start - math.expm1(-TAIL_RATE * (lam - start)) / TAIL_RATE


def _expand_tail(w, start):
    """lambda(w), the inverse of :func:`_compress_tail`, elementwise on a tensor."""
    past = (w - start).clamp(min=0)
    return torch.where(w <= start, w, start - torch.log1p(-TAIL_RATE * past) / TAIL_RATE)


def _spaced_log_snr(lam_start, lam_end, num_points, spacing, rho):
    """``num_points`` (>= 1) log-SNR values from ``lam_start`` to ``lam_end``, spaced as ``spacing`` says."""
    if spacing == "log_snr":
        return torch.linspace(lam_start, lam_end, num_points, dtype=torch.float64)
    if spacing == "karras":
        # Eq. 5 of EDM on sigma = exp(-lambda): sigma_i^(1/rho) linear in i from sigma_max to sigma_min.
        ramp = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)
        inv_max, inv_min = math.exp(-lam_start / rho), math.exp(-lam_end / rho)
        return -rho * torch.log(inv_max + ramp * (inv_min - inv_max))
    raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}.")


def check_spacing(timestep_spacing, rho):
    """Validate a scheduler's ``timestep_spacing`` and ``rho`` where they enter (its constructor)."""
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}.")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}.")
