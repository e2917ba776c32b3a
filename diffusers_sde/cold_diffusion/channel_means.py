"""The channel-mean model of Cold Diffusion's generation (Bansal et al. 2022, Sec. 5): a Gaussian mixture fitted to the
per-image channel means of the training data, from which the constant image u of the start D(u, T) is drawn."""

import dataclasses
import math

import torch

from ..validation import check_integer, check_number


@dataclasses.dataclass
class ChannelMeanMixture:
    """A diagonal Gaussian mixture over the C channel means of an image.

    Args:
        weights (`torch.Tensor`): (K,) component weights, summing to 1.
        means (`torch.Tensor`): (K, C) component means.
        stds (`torch.Tensor`): (K, C) component standard deviations.
        log_likelihood (`float`): mean log-likelihood of the fitted channel means.
    """

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    log_likelihood: float = None


def fit_channel_mean_mixture(images, num_components=1, seed=0, max_iterations=500, tolerance=1e-8, min_std=1e-3):
    """Fit a K-component diagonal Gaussian mixture to the per-image channel means by EM (Dempster et al. 1977).

    The result feeds :class:`ColdDiffusionPipeline`'s ``initial_weights`` / ``initial_means`` / ``initial_stds``.

    Args:
        images (`torch.Tensor`): (N, C, H, W) training images in the model's data range.
        num_components (`int`): K, 1..N.
        seed (`int`): picks the K data points the component means start from.
        max_iterations (`int`): EM iterations at most.
        tolerance (`float`): stop when the mean log-likelihood rises by less than this.
        min_std (`float`): floor on every standard deviation (a component collapsing onto one point stays finite).
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a floating tensor (N, C, H, W), got {type(images).__name__}"
                         f"{' of shape ' + str(tuple(images.shape)) if isinstance(images, torch.Tensor) else ''}.")
    num_components = check_integer("num_components", num_components, minimum=1)
    if num_components > len(images):
        raise ValueError(f"num_components must be at most the number of images, {len(images)}, got {num_components}.")
    max_iterations = check_integer("max_iterations", max_iterations, minimum=1)
    tolerance = check_number("tolerance", tolerance, minimum=0, strict_minimum=False)
    min_std = check_number("min_std", min_std, minimum=0)
    points = images.detach().to(torch.float64).mean(dim=(2, 3)).cpu()  # (N, C) channel means
    count = len(points)
    start = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:num_components]
    means = points[start].clone()
    variances = points.var(dim=0, unbiased=False).clamp(min=min_std**2).expand(num_components, -1).clone()
    weights = torch.full((num_components,), 1 / num_components, dtype=torch.float64)
    previous = -math.inf
    for _ in range(max_iterations):
        # E step: log w_k + log N(m_i; mu_k, diag(v_k)), normalized over k.
        joint = weights.log() - 0.5 * (((points[:, None] - means) ** 2 / variances
                                        + variances.log() + math.log(2 * math.pi)).sum(-1))
        log_likelihood = torch.logsumexp(joint, dim=1)
        responsibilities = (joint - log_likelihood[:, None]).exp()
        # M step: the weighted counts, means and variances.
        totals = responsibilities.sum(0)
        weights = totals / count
        means = responsibilities.T @ points / totals[:, None]
        variances = (responsibilities.T @ points**2 / totals[:, None] - means**2).clamp(min=min_std**2)
        current = log_likelihood.mean().item()
        if current - previous < tolerance:
            break
        previous = current
    return ChannelMeanMixture(weights=weights.float(), means=means.float(), stds=variances.sqrt().float(),
                              log_likelihood=current)
