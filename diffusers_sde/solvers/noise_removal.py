"""The final noise removal every sampler ends with (the paper's ``denoise``): Tweedie's formula at the last time."""

import torch

from ..sde import tweedie_denoise


def remove_noise(sde, x, score, t):
    """E[x_0 | x_t] = (x + s(t)^2 score) / a(t), for a scalar time ``t``."""
    a, s = sde.marginal(torch.as_tensor(t, dtype=torch.float64))
    return tweedie_denoise(x, score, a.item(), s.item())
