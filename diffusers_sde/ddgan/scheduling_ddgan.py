"""The few-step diffusion chain of Denoising Diffusion GANs (Xiao et al., ICLR 2022), built from a score SDE.

T levels at the uniform times t_k = k / T (k = 1..T) of a VP, sub-VP or VE SDE, with the data as level 0
(a_0 = 1, s_0 = 0); the paper discretizes the VP SDE the same way (it offsets the grid by 1e-3). Everything below comes
from the SDE's kernel coefficients (a_k, s_k) through :func:`~diffusers_sde.sde.gaussian_transition`:

- the marginal q(x_k | x_0) = N(a_k x_0, s_k^2 I),
- the forward step q(x_k | x_{k-1}) = N(r_k x_{k-1}, v_k I), r_k = a_k / a_{k-1}, v_k = s_k^2 - r_k^2 s_{k-1}^2,
- the posterior q(x_{k-1} | x_k, x_0) = N(c0_k x_0 + ck_k x_k, w_k I) with (Bayes on the two Gaussians)
  c0_k = a_{k-1} v_k / s_k^2, ck_k = r_k s_{k-1}^2 / s_k^2, w_k = v_k s_{k-1}^2 / s_k^2;
  for VP these are DDPM's Eq. (7) with beta_k = v_k (Ho et al. 2020), the posterior the paper's generator samples from.
"""

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..sde import _batch_view, gaussian_transition, make_sde
from ..validation import check_integer


@dataclass
class DDGANSchedulerOutput(BaseOutput):
    """Output of :meth:`DDGANScheduler.step`.

    Args:
        prev_sample (`torch.Tensor`): x_{k-1}, drawn from the posterior q(x_{k-1} | x_k, x_0 = the prediction).
        pred_original_sample (`torch.Tensor`): the generator's x_0 prediction it was drawn with.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class DDGANScheduler(SchedulerMixin, ConfigMixin):
    """The T-level chain of a DDGAN: forward transitions and the exact posterior, from a score SDE.

    Level indices k = 1..T are the scheduler's ``timesteps`` (sampling runs k = T, ..., 1); the networks are fed
    :meth:`model_time` (t_k (num_train_timesteps - 1), the time input of a DDPM ``UNet2DModel``).

    Args:
        num_timesteps (`int`): T, the number of denoising steps (the paper uses 2-4; 4 on CIFAR-10), 1..num_train_timesteps.
        sde_type (`str`): ``"vp"`` (the paper's), ``"subvp"`` or ``"ve"``; beta_min, beta_max, sigma_min, sigma_max:
            its parameters (see :func:`~diffusers_sde.sde.make_sde`).
        num_train_timesteps (`int`): N of the networks' time input t (N - 1).
        data_centered (`bool`): data in [-1, 1] (True) or [0, 1].
    """

    order = 1

    @register_to_config
    def __init__(self, num_timesteps: int = 4, sde_type: str = "vp", beta_min: float = 0.1, beta_max: float = 20.0,
                 sigma_min: float = 0.01, sigma_max: float = 50.0, num_train_timesteps: int = 1000,
                 data_centered: bool = True):
        num_train_timesteps = check_integer("num_train_timesteps", num_train_timesteps, minimum=2)
        num_timesteps = check_integer("num_timesteps", num_timesteps, minimum=1)
        if num_timesteps > num_train_timesteps:
            raise ValueError(f"num_timesteps must be an integer in 1..num_train_timesteps ({num_train_timesteps}), got"
                             f" {num_timesteps}.")
        self.sde = make_sde(sde_type, sigma_min, sigma_max, beta_min, beta_max)
        self.num_timesteps = num_timesteps
        self.times = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        a, s = self.sde.marginal(self.times[1:])
        self.alphas = torch.cat([torch.ones(1, dtype=torch.float64), a])  # a_k, level 0 being the data
        self.sigmas = torch.cat([torch.zeros(1, dtype=torch.float64), s])  # s_k
        ratio, variance = gaussian_transition(self.alphas[:-1], self.sigmas[:-1], self.alphas[1:], self.sigmas[1:])
        if not bool((variance > 0).all()):
            raise ValueError(f"num_timesteps={num_timesteps} gives levels whose noise does not grow on this SDE"
                             f" (forward variances {variance.tolist()}); choose fewer steps.")
        self.ratios = torch.cat([torch.ones(1, dtype=torch.float64), ratio])  # r_k (r_0 unused)
        self.variances = torch.cat([torch.zeros(1, dtype=torch.float64), variance])  # v_k
        previous_var, current_var = self.sigmas[:-1] ** 2, self.sigmas[1:] ** 2
        zero = torch.zeros(1, dtype=torch.float64)
        self.posterior_x0_coefficients = torch.cat([zero, self.alphas[:-1] * variance / current_var])
        self.posterior_sample_coefficients = torch.cat([zero, ratio * previous_var / current_var])
        self.posterior_variances = torch.cat([zero, variance * previous_var / current_var])
        self.init_noise_sigma = self.sde.prior_std
        self.timesteps = torch.arange(num_timesteps, 0, -1)

    def set_timesteps(self, num_inference_steps=None, device=None):
        """The levels T, ..., 1. A DDGAN is trained for its T steps: ``num_inference_steps`` may only repeat T."""
        if num_inference_steps is not None and num_inference_steps != self.num_timesteps:
            raise ValueError(f"num_inference_steps must be this DDGAN's num_timesteps ({self.num_timesteps}) or None,"
                             f" got {num_inference_steps!r}: the generator was trained for those levels only.")
        self.timesteps = torch.arange(self.num_timesteps, 0, -1, device=device)

    def _levels(self, timesteps, minimum=1):
        levels = torch.as_tensor(timesteps)
        if levels.dtype.is_floating_point or bool((levels < minimum).any()) or bool((levels > self.num_timesteps).any()):
            raise ValueError(f"timesteps must be integer levels in {minimum}..{self.num_timesteps}, got"
                             f" {levels.tolist()}.")
        return levels.long().cpu()

    def _per_sample(self, table, levels, like):
        return _batch_view(table[levels].to(device=like.device, dtype=like.dtype), like)

    def model_time(self, timesteps):
        """What the networks are fed at levels ``timesteps``: t_k (num_train_timesteps - 1), float32."""
        levels = self._levels(timesteps, minimum=0)
        return (self.times[levels] * (self.config.num_train_timesteps - 1)).to(torch.float32)

    def scale_model_input(self, sample, timestep=None):
        return sample

    def add_noise(self, original_samples, noise, timesteps):
        """x_k = a_k x_0 + s_k noise, q(x_k | x_0) (level 0 returns the data)."""
        levels = self._levels(timesteps, minimum=0)
        return (self._per_sample(self.alphas, levels, original_samples) * original_samples
                + self._per_sample(self.sigmas, levels, original_samples) * noise)

    def forward_step(self, previous_sample, noise, timesteps):
        """x_k = r_k x_{k-1} + sqrt(v_k) noise, q(x_k | x_{k-1}) (the paper's q_sample_pairs)."""
        levels = self._levels(timesteps)
        return (self._per_sample(self.ratios, levels, previous_sample) * previous_sample
                + self._per_sample(self.variances, levels, previous_sample).sqrt() * noise)

    def posterior(self, timesteps):
        """(c0, ck, w) of q(x_{k-1} | x_k, x_0) = N(c0 x_0 + ck x_k, w I) at levels ``timesteps`` (float64)."""
        levels = self._levels(timesteps)
        return (self.posterior_x0_coefficients[levels], self.posterior_sample_coefficients[levels],
                self.posterior_variances[levels])

    def sample_posterior(self, original_sample, sample, noise, timesteps):
        """A draw of q(x_{k-1} | x_k = ``sample``, x_0 = ``original_sample``) with standard normal ``noise``."""
        levels = self._levels(timesteps)
        return (self._per_sample(self.posterior_x0_coefficients, levels, sample) * original_sample
                + self._per_sample(self.posterior_sample_coefficients, levels, sample) * sample
                + self._per_sample(self.posterior_variances, levels, sample).sqrt() * noise)

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        """x_k -> x_{k-1}: the posterior at the generator's x_0 prediction ``model_output`` (paper, Eq. 8 / Alg. 1).

        Args:
            model_output (`torch.Tensor`): the generator's x_0 prediction.
            timestep (`int`): the level k, 1..T (one for the batch).
            sample (`torch.Tensor`): x_k.
            generator (`torch.Generator` or list of them, *optional*): the posterior's noise (none is drawn at k = 1,
                where the posterior is the point x_0).
        """
        level = int(self._levels(timestep).reshape(-1)[0])
        levels = torch.full((sample.shape[0],), level)
        noise = torch.zeros_like(sample)
        if level > 1:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        previous = self.sample_posterior(model_output.to(sample.dtype), sample, noise, levels)
        if not return_dict:
            return (previous, model_output)
        return DDGANSchedulerOutput(prev_sample=previous, pred_original_sample=model_output)

    def __len__(self):
        return self.num_timesteps
