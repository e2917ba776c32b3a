"""Predictor-corrector sampling of the reverse SDE (Song et al. 2021, Alg. 1-5)."""

import math

import torch
from diffusers.configuration_utils import register_to_config

from ..sde import gaussian_transition, tweedie_denoise
from .scheduling_score_sde import ScoreSDESchedulerMixin, _Level

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "ancestral", "none")
CORRECTORS = ("langevin", "ald", "none")

# The data end of the reverse process: a = 1, s = 0. The final predictor step lands here, noise-free.
_DATA = _Level(t=0.0, a=1.0, s=0.0, g=0.0, f=0.0)


def _mean_norm(x):
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()


class PredictorCorrectorScheduler(ScoreSDESchedulerMixin):
    """Predictor-corrector sampler for the VE, VP and sub-VP SDEs, in the diffusers scheduler contract.

    Each grid time runs ``corrector_steps`` corrector updates, then one predictor update (the paper's order), each
    taking one network evaluation; ``timesteps`` repeats each time accordingly, so the standard diffusers loop drives it.
    The last update returns the noise-free mean, as in the paper. Every predictor and corrector is written from the
    SDE's a(t), s(t), f and g, so all of them work for all three SDEs.

    Args:
        sde_type (`str`): ``"ve"``, ``"vp"`` or ``"subvp"``.
        sigma_min (`float`), sigma_max (`float`): VE noise range.
        beta_min (`float`), beta_max (`float`): VP / sub-VP beta(t) range.
        num_train_timesteps (`int`): N of the training discretization (the ``discrete`` network time is t (N - 1)).
        sampling_eps (`float`, *optional*): last time of the grid; paper: 1e-5 (VE), 1e-3 (VP, sub-VP).
        prediction_type (`str`, *optional*): what the network returns: ``score``, ``epsilon``, ``sample``, ``v_prediction``;
            default ``score`` for VE, ``epsilon`` otherwise.
        timestep_type (`str`, *optional*): what the network is fed: ``sigma``, ``discrete`` or ``continuous``;
            default ``sigma`` for VE, ``discrete`` otherwise.
        data_centered (`bool`, *optional*): data in [-1, 1] (True) or [0, 1] (False); default False for VE, True otherwise.
        predictor (`str`, *optional*): ``reverse_diffusion``, ``euler_maruyama``, ``ancestral`` or ``none``;
            paper default ``reverse_diffusion`` for VE, ``euler_maruyama`` otherwise.
        corrector (`str`, *optional*): ``langevin`` (step from snr and the score's norm), ``ald`` (annealed Langevin
            dynamics, step from snr and s(t); corrector-only ALD is NCSN sampling) or ``none``; paper default
            ``langevin`` for VE, ``none`` otherwise.
        snr (`float`, *optional*): corrector signal-to-noise ratio; paper: 0.16 (VE CIFAR-10), 0.01 (VP).
        corrector_steps (`int`): corrector updates per grid time.
    """

    order = 1

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
        predictor: str = None,
        corrector: str = None,
        snr: float = None,
        corrector_steps: int = 1,
    ):
        resolved = self._setup(
            sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps, prediction_type,
            timestep_type, data_centered, extra_defaults=(("predictor", predictor), ("corrector", corrector), ("snr", snr)),
        )
        predictor = predictor or resolved["predictor"]
        corrector = corrector or resolved["corrector"]
        snr = resolved.get("snr", snr)
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}.")
        if corrector not in CORRECTORS:
            raise ValueError(f"corrector must be one of {CORRECTORS}, got {corrector!r}.")
        if not (isinstance(corrector_steps, int) and corrector_steps >= 0):
            raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps!r}.")
        if predictor == "none" and (corrector == "none" or corrector_steps == 0):
            raise ValueError(
                f"predictor='none' with corrector={corrector!r} and corrector_steps={corrector_steps} does nothing."
                f" Allowed: any predictor of {PREDICTORS[:3]} with any corrector, or predictor='none' with a corrector"
                " of ('langevin', 'ald') and corrector_steps >= 1."
            )
        if not snr > 0:
            raise ValueError(f"snr must be > 0, got {snr}.")
        self.predictor = predictor
        self.corrector = corrector
        self.snr = float(snr)

    def _build_plan(self, levels):
        correctors = self.config.corrector_steps if self.corrector != "none" else 0
        plan = []
        for level, next_level in zip(levels, levels[1:] + [_DATA]):
            plan += [("corrector", level, next_level)] * correctors
            if self.predictor != "none":
                plan.append(("predictor", level, next_level))
        return plan

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        """Advance by one network evaluation: a corrector update or a predictor update, as the plan says.

        Args:
            model_output (`torch.Tensor`): the network's output at ``timestep``.
            timestep (`float` or `torch.Tensor`): the entry of ``self.timesteps`` being processed (kept for the diffusers
                contract; the scheduler tracks its position itself).
            sample (`torch.Tensor`): the current sample.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): a list gives each sample its own noise.
            return_dict (`bool`): return a :class:`ScoreSDESchedulerOutput` instead of a tuple.
        """
        kind, level, next_level = self._next_entry(sample)
        score = self._score(model_output, sample, level)
        noise = self._noise(sample, generator)
        if kind == "corrector":
            mean, step_size = self._corrector_mean(score, sample, noise, level)
            prev_sample = mean + (2 * step_size) ** 0.5 * noise
        else:
            mean, noise_scale = self._predictor_mean(score, sample, level, next_level)
            prev_sample = mean + noise_scale * noise
        if self._is_last_step:
            prev_sample = mean
        return self._output(prev_sample, mean, level, return_dict)

    def _corrector_mean(self, score, x, noise, level):
        alpha = level.a**2  # the cumulative alpha-bar of the paper's Alg. 4/5 (1 for VE)
        if self.corrector == "langevin":
            # Alg. 4/5: eps = 2 alpha (r ||z|| / ||score||)^2 with norms averaged over the batch, as in the paper's code.
            # Per-sample norms would make the step depend on x (and on its own noise), which biases the chain's
            # stationary law: +22% within-component variance on a 16-D mixture, measured.
            step_size = 2 * alpha * (self.snr * _mean_norm(noise) / _mean_norm(score)) ** 2
        else:
            step_size = 2 * alpha * (self.snr * level.s) ** 2  # NCSN annealed Langevin dynamics
        return x + step_size * score, step_size

    def _predictor_mean(self, score, x, level, next_level):
        if self.predictor == "euler_maruyama":
            dt = next_level.t - level.t  # negative: reverse time
            drift = level.f * x - level.g**2 * score  # Eq. 6
            return x + drift * dt, level.g * math.sqrt(-dt)
        ratio, variance = gaussian_transition(next_level.a, next_level.s, level.a, level.s)
        if self.predictor == "reverse_diffusion":
            # Eq. 46: x_{i-1} = x_i - f_i(x_i) + G_i^2 score + G_i z, with f_i, G_i from the SDE's discretization.
            return x - (ratio - 1) * x + variance * score, math.sqrt(variance)
        # Ancestral: the exact Gaussian posterior q(x_{i-1} | x_i, x_0) at Tweedie's x_0 (Eq. 47 for VE, DDPM for VP).
        x0 = tweedie_denoise(x, score, level.a, level.s)
        mean = (ratio * next_level.s**2 * x + next_level.a * variance * x0) / level.s**2
        return mean, math.sqrt(variance * next_level.s**2) / level.s
