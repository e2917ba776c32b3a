"""EDM's Heun sampler (Karras et al. 2022, Alg. 1 and 2) for the score SDEs, written from a(t) and s(t).

EDM integrates the probability-flow ODE in the scaled variable x_hat = x / a against sigma = s / a, where it reads
dx_hat / dsigma = (x_hat - D(x_hat; sigma)) / sigma with D the denoiser (EDM Eq. 3 with s(t) = 1 after scaling).
Every linear SDE maps onto it through a(t) and s(t), so one implementation serves VE (a = 1), VP and sub-VP.
"""

import math

from diffusers.configuration_utils import register_to_config

from ..sde import tweedie_denoise
from .scheduling_score_sde import DATA_LEVEL, Denoise, HeunCorrection, PlanStep, ScoreSDESchedulerMixin
from .time_grids import check_spacing, time_grid


class EDMHeunScheduler(ScoreSDESchedulerMixin):
    """Heun's second-order sampler of EDM with its rho = 7 schedule and optional stochastic churn.

    Each grid step takes an Euler step in sigma = s / a and corrects it with the slope at its end (EDM Alg. 1 lines
    5-8): two network evaluations per step; ``timesteps`` lists both, like diffusers' ``HeunDiscreteScheduler``. The
    last evaluation, at ``sampling_eps``, returns the denoiser's output (EDM's final Euler step to sigma = 0), so N grid
    times cost 2N - 1 evaluations. With ``s_churn > 0`` (EDM Alg. 2) each step first raises the noise from sigma_i to
    sigma_hat = sigma_i (1 + gamma_i) with fresh noise, and the network is evaluated at sigma_hat (its time is part of
    the precomputed plan); the first grid time, already a draw from the prior, is not churned.

    Args:
        sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps, prediction_type,
        timestep_type, data_centered: the SDE and the network's parameterization, exactly as in
            :class:`PredictorCorrectorScheduler`, so the two swap with ``from_config``.
        timestep_spacing (`str`): ``karras`` (EDM Eq. 5; default), ``log_snr`` or ``uniform_time``.
        rho (`float`): exponent of the ``karras`` spacing (EDM: 7).
        s_churn (`float`): total stochasticity S_churn of EDM Alg. 2; 0 (default) gives the deterministic Alg. 1.
        s_tmin (`float`), s_tmax (`float`): churn only where s_tmin <= sigma_i <= s_tmax (sigma = s / a).
        s_noise (`float`): scale of the churn noise S_noise (EDM: 1.0 to 1.007).
    """

    order = 2
    default_num_inference_steps = 18  # EDM's CIFAR-10 setting: 35 evaluations

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
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
    ):
        self._setup(sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
                    prediction_type, timestep_type, data_centered)
        check_spacing(timestep_spacing, rho)
        for name, value in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_noise", s_noise)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if not s_tmax >= s_tmin:
            raise ValueError(f"s_tmax must be >= s_tmin, got s_tmax={s_tmax}, s_tmin={s_tmin}.")
        self._pending = None

    def _grid_times(self, num_inference_steps):
        return time_grid(self.sde, num_inference_steps, self.config.sampling_eps, self.config.timestep_spacing,
                         self.config.rho)

    def _churned(self, level, num_steps):
        """The level sigma_hat = sigma (1 + gamma) the network is evaluated at (EDM Alg. 2 lines 4-5)."""
        sigma = level.s / level.a
        gamma = min(self.config.s_churn / num_steps, math.sqrt(2) - 1)
        if gamma == 0 or not self.config.s_tmin <= sigma <= self.config.s_tmax:
            return level
        return self._level_at_sigma(sigma * (1 + gamma))

    def _level_at_sigma(self, sigma):
        """The noise level whose sigma = s / a is ``sigma`` (its time clamped to 1)."""
        return self._level(self.sde.time_from_log_snr(-math.log(sigma)).clamp(max=1.0).item())

    def _build_plan(self, levels):
        self._pending = None
        hats = [levels[0]] + [self._churned(level, len(levels)) for level in levels[1:]]
        plan = []
        for index in range(len(levels) - 1):
            plan.append(PlanStep(hats[index], levels[index + 1]))
            plan.append(HeunCorrection(levels[index + 1], hats[index + 1], start=hats[index]))
        return plan + [Denoise(hats[-1], DATA_LEVEL)]

    def _update(self, entry, score, sample, generator):
        level = entry.level
        denoised = tweedie_denoise(sample, score, level.a, level.s)  # EDM's D
        if isinstance(entry, Denoise):
            return denoised, denoised
        sigma = level.s / level.a
        slope = (sample / level.a - denoised) / sigma  # EDM Eq. 3 in x_hat = x / a
        if not isinstance(entry, HeunCorrection):  # Alg. 1 line 5, from sigma_hat_i to sigma_{i+1}
            x_hat = sample / level.a + (entry.target.s / entry.target.a - sigma) * slope
            self._pending = (sample / level.a, slope)
            prev_sample = entry.target.a * x_hat
            return prev_sample, prev_sample
        start, first_slope = self._pending  # Alg. 1 lines 7-8: average the two slopes
        self._pending = None
        x_hat = start + (sigma - entry.start.s / entry.start.a) * 0.5 * (first_slope + slope)
        mean = level.a * x_hat
        if entry.target is level:
            return mean, mean
        # Alg. 2 lines 4-6 for the next step: raise sigma to sigma_hat with fresh noise of variance sigma_hat^2 - sigma^2.
        hat = entry.target
        noise_scale = self.config.s_noise * math.sqrt(max((hat.s / hat.a) ** 2 - sigma**2, 0.0))
        return hat.a * (x_hat + noise_scale * self._noise(sample, generator)), mean
