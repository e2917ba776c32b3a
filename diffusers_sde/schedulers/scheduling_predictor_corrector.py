"""Predictor-corrector sampling of the reverse SDE (Song et al. 2021, Alg. 1-5)."""

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config

from ..sde import gaussian_transition
from ..validation import check_choice, check_integer, check_positive
from .scheduling_score_sde import DATA_LEVEL, PlanStep, ScoreSDESchedulerMixin

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "ancestral", "none")
CORRECTORS = ("langevin", "ald", "none")
LANGEVIN_NORMS = ("batch", "per_sample")
ANCESTRAL_VARIANCES = ("posterior", "transition")

# The paper's sampler per SDE (score_sde configs): VE reverse diffusion + Langevin at snr 0.16 (CIFAR-10); VP and sub-VP
# Euler-Maruyama without corrector (snr 0.01 where a corrector is added). Its ancestral step (Eq. 47) adds the
# posterior's noise for VE (SMLD) and the transition's beta_i for VP (DDPM with sigma^2 = beta).
SAMPLER_DEFAULTS = {
    "ve": dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16, ancestral_variance="posterior"),
    "vp": dict(predictor="euler_maruyama", corrector="none", snr=0.01, ancestral_variance="transition"),
    "subvp": dict(predictor="euler_maruyama", corrector="none", snr=0.01, ancestral_variance="transition"),
}


@dataclass(frozen=True)
class CorrectorStep(PlanStep):
    """A Langevin update at ``level`` (``target`` is the same level); ``alpha`` is the SDE's per-step 1 - beta_i
    between this grid time and the next (1 for VE), the alpha of the reference code's corrector."""

    alpha: float


def _mean_norm(x):
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()


def _per_sample_norm(x):
    return torch.linalg.vector_norm(x.flatten(1), dim=1).view(-1, *([1] * (x.dim() - 1)))


class PredictorCorrectorScheduler(ScoreSDESchedulerMixin):
    """Predictor-corrector sampler for the VE, VP and sub-VP SDEs, in the diffusers scheduler contract.

    Each grid time runs ``corrector_steps`` corrector updates, then one predictor update (the paper's order), each
    taking one network evaluation; ``timesteps`` repeats each time accordingly and ``order`` is the evaluations per
    grid time, so the standard diffusers loop (and its img2img arithmetic) drives it. The last update returns the
    noise-free mean, as in the paper. Every predictor and corrector is written from the SDE's a(t), s(t), f and g, so
    all of them work for all three SDEs.

    Batch invariance: with a list of generators every setting gives each sample the same result in any batch, except
    the ``langevin`` corrector with ``langevin_norm="batch"`` (the default, as in the paper's code), whose step size
    averages norms over the batch and so couples the samples; ``langevin_norm="per_sample"`` removes the coupling at
    the cost of a bias measured in docs/core.md.

    Args:
        sde_type (`str`): ``"ve"``, ``"vp"`` or ``"subvp"``.
        sigma_min (`float`), sigma_max (`float`): VE noise range.
        beta_min (`float`), beta_max (`float`): VP / sub-VP beta(t) range.
        num_train_timesteps (`int`): N of the training discretization (the ``discrete`` network time is t (N - 1)) and
            the default grid size (the paper samples with N steps).
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
        langevin_norm (`str`): ``batch`` (the paper's code: the ``langevin`` step uses norms averaged over the batch)
            or ``per_sample`` (each sample's own norms: batch-invariant, slightly biased; see docs/core.md).
        ancestral_variance (`str`, *optional*): the noise of the ``ancestral`` predictor, whose mean is the posterior
            mean (x + G_i^2 score) / r_i: ``posterior`` (the variance of q(x_{i-1} | x_i, x_0); DDPM's beta-tilde,
            diffusers' ``fixed_small``) or ``transition`` (G_i^2; DDPM's beta, ``fixed_large``). Paper (Eq. 47 and its
            code): ``posterior`` for VE, ``transition`` for VP and sub-VP, which is also the more accurate on narrow
            data at N = 1000 (docs/core.md).
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
        predictor: str = None,
        corrector: str = None,
        snr: float = None,
        corrector_steps: int = 1,
        langevin_norm: str = "batch",
        ancestral_variance: str = None,
    ):
        self._setup(sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
                    prediction_type, timestep_type, data_centered)
        given = dict(predictor=predictor, corrector=corrector, snr=snr, ancestral_variance=ancestral_variance)
        resolved = {key: SAMPLER_DEFAULTS[sde_type][key] if value is None else value
                    for key, value in given.items()}
        self.register_to_config(**{key: value for key, value in resolved.items() if given[key] is None})
        self.predictor = check_choice("predictor", resolved["predictor"], PREDICTORS)
        self.corrector = check_choice("corrector", resolved["corrector"], CORRECTORS)
        check_integer("corrector_steps", corrector_steps, minimum=0)
        check_choice("langevin_norm", langevin_norm, LANGEVIN_NORMS)
        check_choice("ancestral_variance", resolved["ancestral_variance"], ANCESTRAL_VARIANCES)
        if self.predictor == "none" and (self.corrector == "none" or corrector_steps == 0):
            raise ValueError(
                f"predictor='none' with corrector={self.corrector!r} and corrector_steps={corrector_steps} does nothing."
                f" Allowed: any predictor of {PREDICTORS[:3]} with any corrector, or predictor='none' with a corrector"
                " of ('langevin', 'ald') and corrector_steps >= 1."
            )
        self.snr = check_positive("snr", resolved["snr"])

    @property
    def order(self):
        """Network evaluations per grid time: the corrector steps plus the predictor."""
        correctors = self.config.corrector_steps if self.corrector != "none" else 0
        return correctors + (self.predictor != "none")

    def _build_plan(self, levels):
        correctors = self.config.corrector_steps if self.corrector != "none" else 0
        plan = []
        for level, next_level in zip(levels, levels[1:] + [DATA_LEVEL]):
            alpha = (level.a / next_level.a) ** 2  # 1 - beta_i of the SDE's discretization between the two times
            plan += [CorrectorStep(level, level, alpha)] * correctors
            if self.predictor != "none":
                plan.append(PlanStep(level, next_level))
        return plan

    def _update(self, entry, score, sample, generator):
        noise = self._noise(sample, generator)
        if isinstance(entry, CorrectorStep):
            mean, step_size = self._corrector_mean(entry, score, sample, noise)
            prev_sample = mean + (2 * step_size) ** 0.5 * noise
        else:
            mean, noise_scale = self._predictor_mean(score, sample, entry.level, entry.target)
            prev_sample = mean + noise_scale * noise
        return (mean if self._is_last_step else prev_sample), mean

    def _corrector_mean(self, entry, score, x, noise):
        if self.corrector == "ald":
            step_size = 2 * entry.alpha * (self.snr * entry.level.s) ** 2  # NCSN annealed Langevin dynamics
        elif self.config.langevin_norm == "batch":
            # Alg. 4/5: eps = 2 alpha (r ||z|| / ||score||)^2, norms averaged over the batch as in the paper's code.
            step_size = 2 * entry.alpha * (self.snr * _mean_norm(noise) / _mean_norm(score)) ** 2
        else:
            step_size = 2 * entry.alpha * (self.snr * _per_sample_norm(noise) / _per_sample_norm(score)) ** 2
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
        # Ancestral (Eq. 47): the mean of the posterior q(x_{i-1} | x_i, x_0) at Tweedie's x_0, which is
        # (x + G_i^2 score) / r_i, with the posterior's or the transition's noise.
        mean = (x + variance * score) / ratio
        if self.config.ancestral_variance == "posterior":
            return mean, math.sqrt(variance) * next_level.s / level.s
        return mean, math.sqrt(variance)
