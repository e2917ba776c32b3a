"""The one place where a network's output becomes a score, and where continuous time becomes the network's input.

| prediction_type | the network returns           | score                        |
|-----------------|-------------------------------|------------------------------|
| ``score``       | grad_x log p_t(x)             | output                       |
| ``epsilon``     | the noise z                   | -z / s                       |
| ``sample``      | the clean data x_0            | (a x_0 - x) / s^2            |
| ``v_prediction``| v = a z - s x_0               | -(s x + a v) / (s (a^2+s^2)) |

with ``x = a(t) x_0 + s(t) z`` the SDE's perturbation kernel. ``timestep_type`` says what the network is fed:
``sigma`` (s(t), as NCSN++ `UNet2DModel(time_embedding_type="fourier")` wants), ``discrete`` (t (N - 1), as a
DDPM `UNet2DModel` wants) or ``continuous`` (t itself). ``ddpm`` feeds t (N - 1) like ``discrete``, to a network
trained on DDPM's discrete schedule (every stock ``google/ddpm-*`` repo): its conversions use that schedule's kernel,
see :meth:`Parameterization.marginal`.
"""

import torch

from .sde import tweedie_denoise

PREDICTION_TYPES = ("score", "epsilon", "sample", "v_prediction")
TIMESTEP_TYPES = ("sigma", "discrete", "continuous", "ddpm")
_INDEX_TYPES = ("discrete", "ddpm")

# The paper's networks per SDE (configs of score_sde): NCSN++ returns the score, is fed sigma and sees [0, 1] data;
# DDPM++ predicts epsilon, is fed t (N - 1) and sees [-1, 1] data. None in a scheduler or training config means "these".
PARAMETERIZATION_DEFAULTS = {
    "ve": dict(prediction_type="score", timestep_type="sigma", data_centered=False),
    "vp": dict(prediction_type="epsilon", timestep_type="discrete", data_centered=True),
    "subvp": dict(prediction_type="epsilon", timestep_type="discrete", data_centered=True),
}


class Parameterization:
    """Converts between network outputs and scores, and between continuous time and network time.

    Args:
        sde (`ScoreSDE`): the SDE whose kernel coefficients a(t), s(t) define the conversions.
        prediction_type (`str`): one of ``PREDICTION_TYPES``.
        timestep_type (`str`): one of ``TIMESTEP_TYPES``.
        num_train_timesteps (`int`): N, used by the ``discrete`` time input.
    """

    def __init__(self, sde, prediction_type, timestep_type, num_train_timesteps):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        if timestep_type not in TIMESTEP_TYPES:
            raise ValueError(f"timestep_type must be one of {TIMESTEP_TYPES}, got {timestep_type!r}.")
        self.sde = sde
        self.prediction_type = prediction_type
        self.timestep_type = timestep_type
        self.num_train_timesteps = num_train_timesteps
        if timestep_type == "ddpm":
            if getattr(sde, "sde_type", None) != "vp":
                raise ValueError(
                    f"timestep_type='ddpm' (DDPM's discrete schedule) needs a VP SDE, got {type(sde).__name__}.")
            self._log_alphas_cumprod = ddpm_log_alphas_cumprod(sde.beta_min, sde.beta_max, num_train_timesteps)

    def marginal(self, t):
        """Kernel coefficients (a, s) the network's output refers to at time t (float64 tensor).

        The SDE's a(t), s(t); for ``timestep_type="ddpm"`` DDPM's discrete kernel a_i = sqrt(alphas_cumprod_i),
        s_i = sqrt(1 - alphas_cumprod_i) at i = t (N - 1), which score_sde also uses for its discrete VP models
        (``sqrt_1m_alphas_cumprod[labels]``). Between indices (the samplers' grids need not hit them) log alphas_cumprod
        is interpolated linearly in t, the interpolation DPM-Solver uses for discrete-time models.
        """
        if self.timestep_type != "ddpm":
            return self.sde.marginal(t)
        log_alphas_cumprod = self._log_alphas_cumprod.to(t.device)
        position = (t * (self.num_train_timesteps - 1)).clamp(0, self.num_train_timesteps - 1)
        lower = position.floor().long().clamp(max=self.num_train_timesteps - 2)
        weight = position - lower
        log_alpha_cumprod = (1 - weight) * log_alphas_cumprod[lower] + weight * log_alphas_cumprod[lower + 1]
        return torch.exp(0.5 * log_alpha_cumprod), torch.sqrt(-torch.expm1(log_alpha_cumprod))

    def model_time(self, t):
        """What the network is fed at continuous time t."""
        if self.timestep_type == "sigma":
            return self.sde.std(t)
        if self.timestep_type in _INDEX_TYPES:
            return t * (self.num_train_timesteps - 1)
        return t

    def time_from_model_time(self, timestep):
        """Inverse of :meth:`model_time`."""
        if self.timestep_type == "sigma":
            return self.sde.time_from_std(timestep)
        if self.timestep_type in _INDEX_TYPES:
            return timestep / (self.num_train_timesteps - 1)
        return timestep

    def score(self, output, x, a, s):
        """Score from the network output at a noise level with kernel coefficients (a, s).

        ``a`` and ``s`` are floats or tensors broadcastable against ``x``.
        """
        kind = self.prediction_type
        if kind == "score":
            return output
        if kind == "epsilon":
            return -output / s
        if kind == "sample":
            return (a * output - x) / s**2
        return -(s * x + a * output) / (s * (a**2 + s**2))

    def output_from_score(self, score, x, a, s):
        """The network output that corresponds to ``score`` (inverse of :meth:`score`); the training target."""
        kind = self.prediction_type
        if kind == "score":
            return score
        epsilon = -s * score
        if kind == "epsilon":
            return epsilon
        x0 = tweedie_denoise(x, score, a, s)
        if kind == "sample":
            return x0
        return a * epsilon - s * x0


def score_function(model, parameterization):
    """Build ``score(x, t)`` from a network and its parameterization, for every solver in ``solvers/``.

    ``t`` is one time for the batch (a number or 0-dim tensor) or one per sample (shape (B,), as the adaptive SDE solver
    needs). The network is fed ``parameterization.model_time(t)`` and the sample cast to its dtype; its output becomes a
    score through :meth:`Parameterization.score` with the kernel of :meth:`Parameterization.marginal`.

    Args:
        model (`ModelMixin`): called as ``model(sample, timestep).sample``, like a ``UNet2DModel``.
        parameterization (`Parameterization`): the network's parameterization; a diffusers-sde scheduler (which carries
            one as ``.parameterization``) is accepted too.
    """
    parameterization = getattr(parameterization, "parameterization", parameterization)

    def score(x, t):
        time = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if time.numel() == 1:
            time = time.reshape(())  # one time for the batch, fed as a 0-dim tensor like the pipeline's loop does
        a, s = (value.to(x.dtype).view(-1, *([1] * (x.dim() - 1))) if time.dim() else value.to(x.dtype)
                for value in parameterization.marginal(time))
        timestep = parameterization.model_time(time).to(torch.promote_types(model.dtype, torch.float32))
        output = model(x.to(model.dtype), timestep).sample.to(x.dtype)
        return parameterization.score(output, x, a, s)

    return score


def ddpm_log_alphas_cumprod(beta_min, beta_max, num_train_timesteps):
    """log alphas_cumprod of DDPM's linear schedule: betas from beta_min / N to beta_max / N (Ho et al. 2020; DDPM's
    beta_start = 1e-4, beta_end = 0.02 at N = 1000 are beta_min = 0.1, beta_max = 20)."""
    n = num_train_timesteps
    betas = torch.linspace(beta_min / n, beta_max / n, n, dtype=torch.float64)
    return torch.cumsum(torch.log1p(-betas), dim=0)
