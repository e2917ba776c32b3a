"""The DDGAN objective (Xiao et al. 2022, Eq. 9 and its training details): the non-saturating GAN loss on pairs
(x_{k-1}, x_k), the fake x_{k-1} drawn from the posterior at the generator's x_0 prediction, and the R1 penalty
gamma / 2 E ||grad_{x_{k-1}} D(x_{k-1}, x_k, t)||^2 on real pairs (Mescheder et al. 2018)."""

import torch
from torch.nn.functional import softplus


def sample_real_pairs(scheduler, data, generator):
    """Levels k uniform in 1..T and real pairs (x_{k-1}, x_k) ~ q(x_0) q(x_{k-1} | x_0) q(x_k | x_{k-1}) (the paper's
    q_sample_pairs); every draw comes from ``generator``. Returns (levels, x_{k-1}, x_k)."""
    levels = torch.randint(1, scheduler.num_timesteps + 1, (data.shape[0],), generator=generator)
    previous = scheduler.add_noise(data, _normal(data, generator), levels - 1)
    return levels, previous, scheduler.forward_step(previous, _normal(data, generator), levels)


def sample_fake_previous(generator_model, scheduler, sample, levels, latent_dim, generator):
    """x'_{k-1} ~ q(x_{k-1} | x_k, x_0 = G(x_k, z, t)) with z ~ N(0, I) (paper, Eq. 8): the generator's denoising."""
    latent = torch.randn(sample.shape[0], latent_dim, generator=generator).to(sample.device)
    time = scheduler.model_time(levels).to(sample.device)
    prediction = generator_model(sample, time, latent).sample.to(sample.dtype)
    return scheduler.sample_posterior(prediction, sample, _normal(sample, generator), levels)


def discriminator_loss(discriminator, real_previous, fake_previous, sample, time, r1_gamma):
    """softplus(-D(real)) + softplus(D(fake)), averaged, plus gamma / 2 E ||grad_{x_{k-1}} D(real)||^2.

    ``real_previous`` must require gradients when ``r1_gamma`` > 0. Returns (loss, R1 term)."""
    real_logits = discriminator(real_previous, sample, time)
    loss = softplus(-real_logits).mean() + softplus(discriminator(fake_previous, sample, time)).mean()
    penalty = torch.zeros((), device=loss.device)
    if r1_gamma > 0:
        penalty = r1_gamma / 2 * r1_norm(real_logits, real_previous)
    return loss + penalty, penalty


def r1_norm(real_logits, real_previous):
    """E ||grad_{x_{k-1}} D||^2 over the batch, with a graph so the penalty can be differentiated."""
    (gradient,) = torch.autograd.grad(real_logits.sum(), real_previous, create_graph=True)
    return gradient.flatten(1).pow(2).sum(1).mean()


def generator_loss(discriminator, fake_previous, sample, time):
    """The non-saturating generator loss softplus(-D(x'_{k-1}, x_k, t)), averaged."""
    return softplus(-discriminator(fake_previous, sample, time)).mean()


def _normal(like, generator):
    return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)
