"""Sequential Monte Carlo for linear-Gaussian inverse problems: the twisted diffusion sampler (Wu et al., NeurIPS 2023).

Why this one: it needs nothing but the score network and the operator's forward map (no SVD, so it also covers
operators whose decomposition is expensive), and its error against the posterior of the model's reverse chain vanishes
as particles grow, for any twisting function. MCGdiff (Cardoso et al. 2023) is exact too but works in the operator's
spectral basis and is specific to noiseless or specially-noised measurements.

For each measurement, K particles run the reverse chain on the scheduler's grid t_N = 1 > ... > t_1 = sampling_eps with
the Gaussian kernel p(x_{i-1} | x_i) = N((x_i + G_i^2 score) / r_i, G_i^2) (the exact transition's ratio r_i and
variance G_i^2 between the two levels; the ancestral step with the transition's noise). The twisting function is
p~_i(y | x_i) = N(y; A x0_hat(x_i), (noise_std^2 + (s_i / a_i)^2) I), with Tweedie's x0_hat; the proposal adds
G_i^2 grad log p~_i to the kernel's mean, and each particle's weight is multiplied by

    p(x_{i-1} | x_i) p~_{i-1}(y | x_{i-1}) / (q(x_{i-1} | x_i) p~_i(y | x_i))              (TDS, Alg. 1)

with multinomial resampling whenever the effective sample size falls below K / 2. The last step is the noise-free
x_0 = x0_hat(x_1), reweighted by the true likelihood N(y; A x_0, noise_std^2 I) / p~_1; one particle per measurement is
then drawn by weight. noise_std must be > 0 (a noiseless measurement has no density to weight by).
"""

import math

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..sde import gaussian_transition, tweedie_denoise
from .operators import LinearOperator


def _gaussian_log_density(residual, variance):
    """log N(residual; 0, variance I) per row of a (N, ...) residual; variance a float or (N,) tensor."""
    flat = residual.flatten(1)
    variance = torch.as_tensor(variance, dtype=flat.dtype, device=flat.device)
    return -0.5 * (flat.pow(2).sum(1) / variance + flat.shape[1] * torch.log(2 * math.pi * variance))


def _twisted(unet, scheduler, x, t, level, operator, measurement, noise_std):
    """Score, x0_hat and log p~(y | x) with its gradient in x, at one noise level, for all particles."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        output = unet(x.to(unet.dtype), t).sample.to(x.dtype)
        score = scheduler.parameterization.score(output, x, level.a, level.s)
        x0 = tweedie_denoise(x, score, level.a, level.s)
        variance = noise_std**2 + (level.s / level.a) ** 2
        log_twist = _gaussian_log_density(measurement - operator(x0), variance)
        (gradient,) = torch.autograd.grad(log_twist.sum(), x)
    return score.detach(), x0.detach(), log_twist.detach(), gradient


def _draw_device(generator):
    """Where torch.multinomial must draw: the generator's device (a CUDA generator refuses CPU weights), else the CPU."""
    return generator.device if generator is not None else "cpu"


def _resample(log_weights, batch, particles, generator):
    """Multinomial resampling within each measurement's K particles where the effective sample size is below K / 2.

    Returns the particle indices to keep (flat, over the whole batch) and the log-weights after resampling."""
    log_weights = log_weights.view(batch, particles)
    weights = torch.softmax(log_weights, dim=1)
    low = 1.0 / weights.pow(2).sum(1) < particles / 2
    indices = torch.arange(particles, device=log_weights.device).expand(batch, particles)
    if bool(low.any()):
        draws = torch.multinomial(weights.to(_draw_device(generator)), particles, replacement=True,
                                  generator=generator).to(indices.device)
        indices = torch.where(low[:, None], draws, indices)
        log_weights = torch.where(low[:, None], torch.zeros_like(log_weights), log_weights)
    offsets = torch.arange(batch, device=indices.device)[:, None] * particles
    return (indices + offsets).flatten(), log_weights.flatten()


def twisted_diffusion_sampler(unet, scheduler, measurement, operator, noise_std, num_particles, num_inference_steps=None,
                              generator=None):
    """One posterior sample per measurement row by the twisted diffusion sampler; returns (samples, NFE).

    Args:
        unet (`ModelMixin`): the score network, fed ``(sample, timestep)`` like a ``UNet2DModel``.
        scheduler: a diffusers-sde scheduler: its SDE, parameterization, grid and ``sampling_eps`` are used.
        measurement (`torch.Tensor`): (B, ...) measurements.
        operator (`LinearOperator`): A.
        noise_std (`float`): the measurement noise's std, > 0.
        num_particles (`int`): K, particles per measurement.
        num_inference_steps (`int`, *optional*): grid size (default: the scheduler's own).
        generator (`torch.Generator`, *optional*): the source of every draw (a list is not supported: the particles of
            one measurement are resampled together).
    """
    if not isinstance(operator, LinearOperator):
        raise ValueError(f"the twisted diffusion sampler needs a LinearOperator, got {type(operator).__name__}.")
    if not noise_std > 0:
        raise ValueError(f"method='smc' weights particles by the measurement's density, which needs noise_std > 0; got"
                         f" {noise_std}. For a noiseless measurement use method='imputation', or a small noise_std.")
    if isinstance(generator, (list, tuple)):
        raise ValueError("method='smc' takes a single generator (or None), not a list: particles of one measurement are"
                         " resampled together.")
    batch, particles = measurement.shape[0], num_particles
    shape = operator.sample_shape
    device = measurement.device
    repeated = measurement.repeat_interleave(particles, dim=0)
    scheduler.set_timesteps(num_inference_steps, device=device)
    levels = scheduler.grid_levels
    model_time = scheduler.parameterization.model_time

    x = randn_tensor((batch * particles, *shape), generator=generator, device=device) * scheduler.init_noise_sigma
    log_weights = torch.zeros(batch * particles, dtype=x.dtype, device=device)
    t = model_time(torch.tensor(levels[0].t, dtype=torch.float64)).float()
    score, x0, log_twist, gradient = _twisted(unet, scheduler, x, t, levels[0], operator, repeated, noise_std)
    nfe = 1
    for level, next_level in zip(levels[:-1], levels[1:]):
        ratio, variance = gaussian_transition(next_level.a, next_level.s, level.a, level.s)
        mean = (x + variance * score) / ratio  # the kernel p(x_{i-1} | x_i)
        proposal_mean = mean + variance * gradient / ratio  # shifted toward the twisted target
        noise = randn_tensor(x.shape, generator=generator, device=device, dtype=x.dtype)
        new_x = proposal_mean + math.sqrt(variance) * noise
        log_kernel = _gaussian_log_density(new_x - mean, variance)
        log_proposal = _gaussian_log_density(new_x - proposal_mean, variance)
        t = model_time(torch.tensor(next_level.t, dtype=torch.float64)).float()
        score, x0, new_log_twist, gradient = _twisted(unet, scheduler, new_x, t, next_level, operator, repeated,
                                                      noise_std)
        nfe += 1
        log_weights = log_weights + log_kernel + new_log_twist - log_proposal - log_twist
        keep, log_weights = _resample(log_weights, batch, particles, generator)
        x, score, x0, gradient, log_twist = (value[keep] for value in (new_x, score, x0, gradient, new_log_twist))
    # The last step: the noise-free x_0 = x0_hat, weighted by the true likelihood over the last twisting function.
    log_weights = log_weights + _gaussian_log_density(repeated - operator(x0), noise_std**2) - log_twist
    weights = torch.softmax(log_weights.view(batch, particles), dim=1)
    choice = torch.multinomial(weights.to(_draw_device(generator)), 1, generator=generator).flatten()
    return x0.view(batch, particles, *shape)[torch.arange(batch), choice.to(device)], nfe
