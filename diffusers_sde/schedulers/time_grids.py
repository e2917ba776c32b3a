"""Time grids for the fast samplers, written once from the SDE's a(t) and s(t), so they serve VE, VP and sub-VP alike.

The sampling grids of the fast-sampler literature are defined on a noise scale, not on t: DPM-Solver spaces its steps
uniformly in the half log-SNR lambda = log(a / s), EDM spaces sigma = s / a = exp(-lambda) with the rho = 7 polynomial
(Karras et al. 2022, Eq. 5). Both are mapped back to SDE time by the SDE's own inverse of lambda(t)
(:meth:`~diffusers_sde.sde.ScoreSDE.time_from_log_snr`, closed-form for VE, VP and sub-VP).
"""

import math

import torch

TIMESTEP_SPACINGS = ("uniform_time", "log_snr", "karras")


def time_grid(sde, num_steps, sampling_eps, spacing, rho=7.0, lambda_max_clipped=None):
    """``num_steps`` decreasing times from 1 to ``sampling_eps`` (float64), spaced as ``spacing`` says.

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
    """
    if num_steps == 1:
        return torch.tensor([1.0], dtype=torch.float64)
    if spacing == "uniform_time":
        return torch.linspace(1.0, sampling_eps, num_steps, dtype=torch.float64)
    lam_start, lam_end = sde.log_snr(1.0).item(), sde.log_snr(sampling_eps).item()
    lam = _spaced_log_snr(lam_start, lam_end, num_steps, spacing, rho)
    if lambda_max_clipped is not None and lam[-2] > lambda_max_clipped:
        # log_snr: equal to the unclipped grid when its second-to-last point sits at the clip (continuous in the clip).
        lam[:-1] = _spaced_log_snr(lam_start, lambda_max_clipped, num_steps - 1, spacing, rho)
    times = sde.time_from_log_snr(lam).clamp(sampling_eps, 1.0)
    times[0], times[-1] = 1.0, sampling_eps  # the ends exactly, free of round-off
    return times


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
