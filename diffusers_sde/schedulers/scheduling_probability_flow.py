"""Deterministic sampling of the probability-flow ODE (Song et al. 2021, Eq. 13) with fixed steps."""

from diffusers.configuration_utils import register_to_config
from diffusers.utils import deprecate

from ..sde import tweedie_denoise
from ..validation import check_choice
from .scheduling_score_sde import DATA_LEVEL, Denoise, HeunCorrection, PlanStep, ScoreSDESchedulerMixin

INTEGRATORS = ("euler", "heun")


class ProbabilityFlowScheduler(ScoreSDESchedulerMixin):
    """Fixed-step solver of the probability-flow ODE dx = [f - g^2 score / 2] dt, in the diffusers scheduler contract.

    The ODE is integrated over the grid from t = 1 to ``sampling_eps``; the last evaluation, at ``sampling_eps``,
    removes the remaining noise with Tweedie's formula x_0 = (x + s^2 score) / a (the paper's noise removal).
    ``euler`` takes N evaluations for N grid times; ``heun`` (2nd order, as in EDM Alg. 1) re-evaluates at the end of
    each step and takes 2N - 1; its ``timesteps`` repeat each inner time, like diffusers' ``HeunDiscreteScheduler``.
    Default grid: 100 times for ``euler``, 50 for ``heun`` (99 evaluations).

    Args:
        sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps, prediction_type,
        timestep_type, data_centered: the SDE and the network's parameterization, exactly as in
            :class:`PredictorCorrectorScheduler`, so the two swap with ``from_config``.
        integrator (`str`): ``euler`` or ``heun``. (Was ``solver``; that keyword still works, with a warning.)
    """

    _deprecated_kwargs = ["solver"]
    ignore_for_config = ["kwargs"]  # the deprecated keyword is no config entry
    _renamed_config_keys = {"solver": "integrator"}

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
        integrator: str = "heun",
        **kwargs,
    ):
        if "solver" in kwargs:
            deprecate("solver", "1.0.0", "ProbabilityFlowScheduler(solver=...) is now integrator=...", standard_warn=False)
            integrator = kwargs.pop("solver")
            self.register_to_config(integrator=integrator)
        if kwargs:
            raise TypeError(f"ProbabilityFlowScheduler got unexpected keyword arguments {sorted(kwargs)}.")
        self._setup(sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
                    prediction_type, timestep_type, data_centered)
        check_choice("integrator", integrator, INTEGRATORS)
        self._pending = None

    @property
    def order(self):
        return 2 if self.config.integrator == "heun" else 1

    @property
    def default_num_inference_steps(self):
        return 50 if self.config.integrator == "heun" else 100

    def _build_plan(self, levels):
        plan = []
        for level, next_level in zip(levels[:-1], levels[1:]):
            plan.append(PlanStep(level, next_level))
            if self.config.integrator == "heun":
                plan.append(HeunCorrection(next_level, next_level, start=level))
        self._pending = None
        return plan + [Denoise(levels[-1], DATA_LEVEL)]

    def _drift(self, score, x, level):
        return level.f * x - 0.5 * level.g**2 * score  # Eq. 13

    def _update(self, entry, score, sample, generator):
        if isinstance(entry, Denoise):
            prev_sample = tweedie_denoise(sample, score, entry.level.a, entry.level.s)
        elif isinstance(entry, HeunCorrection):  # EDM Alg. 1 line 8: average the two slopes
            start, drift = self._pending
            self._pending = None
            prev_sample = start + 0.5 * (drift + self._drift(score, sample, entry.level)) * (entry.level.t - entry.start.t)
        else:
            drift = self._drift(score, sample, entry.level)
            prev_sample = sample + drift * (entry.target.t - entry.level.t)
            if self.config.integrator == "heun":
                self._pending = (sample, drift)
        return prev_sample, prev_sample
