"""Deterministic sampling of the probability-flow ODE (Song et al. 2021, Eq. 13) with fixed steps."""

from diffusers.configuration_utils import register_to_config

from ..sde import tweedie_denoise
from .scheduling_score_sde import ScoreSDESchedulerMixin

SOLVERS = ("euler", "heun")


class ProbabilityFlowScheduler(ScoreSDESchedulerMixin):
    """Fixed-step solver of the probability-flow ODE dx = [f - g^2 score / 2] dt, in the diffusers scheduler contract.

    The ODE is integrated over the grid from t = 1 to ``sampling_eps``; the last evaluation, at ``sampling_eps``,
    removes the remaining noise with Tweedie's formula x_0 = (x + s^2 score) / a (the paper's noise removal).
    ``euler`` takes N evaluations for N grid times; ``heun`` (2nd order, as in EDM Alg. 1) re-evaluates at the end of
    each step and takes 2N - 1; its ``timesteps`` repeat each inner time, like diffusers' ``HeunDiscreteScheduler``.

    Args:
        sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps, prediction_type,
        timestep_type, data_centered: the SDE and the network's parameterization, exactly as in
            :class:`PredictorCorrectorScheduler`, so the two swap with ``from_config``.
        solver (`str`): ``euler`` or ``heun``.
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
        solver: str = "heun",
    ):
        self._setup(sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps, sampling_eps,
                    prediction_type, timestep_type, data_centered)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
        self._pending = None

    @property
    def order(self):
        return 2 if self.config.solver == "heun" else 1

    def _build_plan(self, levels):
        plan = []
        for level, next_level in zip(levels[:-1], levels[1:]):
            plan.append(("euler", level, next_level))
            if self.config.solver == "heun":
                plan.append(("heun_correction", next_level, level))
        plan.append(("denoise", levels[-1], None))
        self._pending = None
        return plan

    def _drift(self, score, x, level):
        return level.f * x - 0.5 * level.g**2 * score  # Eq. 13

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        """Advance by one network evaluation (an Euler step, Heun's correction, or the final noise removal).

        Args:
            model_output (`torch.Tensor`): the network's output at ``timestep``.
            timestep (`float` or `torch.Tensor`): the entry of ``self.timesteps`` being processed.
            sample (`torch.Tensor`): the current sample.
            generator: unused (the ODE is deterministic); accepted for the diffusers contract.
            return_dict (`bool`): return a :class:`ScoreSDESchedulerOutput` instead of a tuple.
        """
        kind, level, other = self._next_entry(sample)
        score = self._score(model_output, sample, level)
        if kind == "denoise":
            prev_sample = tweedie_denoise(sample, score, level.a, level.s)
        elif kind == "euler":
            drift = self._drift(score, sample, level)
            prev_sample = sample + drift * (other.t - level.t)
            if self.config.solver == "heun":
                self._pending = (sample, drift)
        else:  # Heun's correction at the step's end (EDM Alg. 1 line 8): average the two slopes.
            start, drift = self._pending
            self._pending = None
            prev_sample = start + 0.5 * (drift + self._drift(score, sample, level)) * (level.t - other.t)
        return self._output(prev_sample, prev_sample, level, return_dict)
