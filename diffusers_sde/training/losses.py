"""Training objectives: continuous-time denoising score matching (Song et al. 2021, Eq. 7), its discrete SMLD and DDPM
counterparts, and sliced score matching.

Denoising score matching is written once, from the SDE's perturbation kernel x_t = a(t) x_0 + s(t) z, and reaches the
network only through :class:`~diffusers_sde.parameterization.Parameterization` (its time input and the conversion of
its output into a score), so it trains score, epsilon, x_0 and v networks of every SDE alike.

Per sample, with t ~ U(eps, 1) and z ~ N(0, I), the loss is

    lambda(t) || score_theta(x_t, t) + z / s(t) ||^2                                   (Eq. 7)

since grad log p_0t(x_t | x_0) = -z / s(t). ``weighting="std"`` takes lambda = s(t)^2 (the paper's default; the loss
becomes || s score_theta + z ||^2); ``weighting="likelihood"`` takes lambda = g(t)^2, which makes the objective a bound
on the negative log-likelihood (Song et al. 2021b, "Maximum likelihood training of score-based diffusion models").

Likelihood weighting with uniform t has a heavy-tailed estimator (g^2 / s^2 ~ 1 / t near t = 0 for VP). With
``importance_sampling=True``, t is drawn with density q(t) proportional to g(t)^2 / s(t)^2 and the estimate is
reweighted by lambda / (q (1 - eps)), which leaves its expectation unchanged. For every linear SDE
g^2 = d(s^2)/dt - 2 f s^2 and d(a)/dt = f a, so g(t)^2 / s(t)^2 = d/dt log(s(t)^2 / a(t)^2): q is uniform in the log
noise-to-signal ratio rho(t) = log(s^2 / a^2), and the reweighted loss is (rho(1) - rho(eps)) / (1 - eps) times
|| s score_theta + z ||^2.

The discrete objectives (the paper's baselines, ``training.continuous=False`` in its code) draw an integer noise level
i ~ U{0, ..., N-1} instead of t, at the grid t_i = i / (N - 1) whose network time input is the integer i:

- SMLD / NCSN (VE): sigma_i = s(t_i), a geometric sequence from sigma_min to sigma_max; weight sigma_i^2, so the loss is
  || sigma_i score_theta + z ||^2 (Song & Ermon 2019, Eq. 5 with lambda = sigma^2).
- DDPM (VP): beta_i = beta(t_i) / N, alpha_bar_i = prod_{j <= i} (1 - beta_j) and x_i = sqrt(alpha_bar_i) x_0 +
  sqrt(1 - alpha_bar_i) z (Ho et al. 2020, Eq. 4); with s_i = sqrt(1 - alpha_bar_i), || s_i score_theta + z ||^2 is
  DDPM's simple loss || epsilon_theta - z ||^2 (Eq. 14) for an epsilon network.

Both are therefore the s^2-weighted loss at the discrete kernel (a_i, s_i), evaluated by the same code.
"""

import math

import torch

from ..validation import check_choice

WEIGHTINGS = ("std", "likelihood")
LOSSES = ("continuous", "discrete")
REDUCTIONS = ("mean", "sum")
PROJECTIONS = ("gaussian", "rademacher")


def _random(sampler, shape, generator, device, dtype):
    """Draw on the generator's device (so a CPU generator seeds a GPU run reproducibly), then move to ``device``."""
    source = generator.device if generator is not None else device
    return sampler(shape, generator=generator, dtype=dtype, device=source).to(device)


def _batch_view(values, x):
    return values.reshape(-1, *([1] * (x.dim() - 1)))


def _reduce(per_element, reduction):
    """Reduce over all but the batch dimension."""
    flat = per_element.flatten(1)
    return flat.mean(1) if reduction == "mean" else flat.sum(1)


def model_output(model, sample, timestep):
    """Call a diffusers model (returning an output dataclass with ``.sample``) or a plain callable returning a tensor."""
    output = model(sample, timestep)
    return output.sample if hasattr(output, "sample") else output


def log_noise_to_signal(sde, t):
    """rho(t) = log(s(t)^2 / a(t)^2) = -2 lambda(t); increasing in t for every SDE here, with d rho / dt = g(t)^2 / s(t)^2."""
    return -2 * sde.log_snr(t)


def sample_training_times(sde, batch_size, eps=1e-5, importance_sampling=False, generator=None, device=None):
    """Training times t in [eps, 1] (float64) and the factor that makes the likelihood-weighted estimate unbiased.

    Args:
        sde (`ScoreSDE`): the SDE.
        batch_size (`int`): number of times.
        eps (`float`): smallest time (paper: 1e-5 for training).
        importance_sampling (`bool`): draw t with density proportional to g^2 / s^2 instead of uniformly.
        generator (`torch.Generator`, *optional*): source of randomness.

    Returns:
        ``(t, factor)``: with importance sampling ``factor = (rho(1) - rho(eps)) / (1 - eps)`` (a float, see the module
        docstring), else ``None``.
    """
    uniform = _random(torch.rand, (batch_size,), generator, device, torch.float64)
    if not importance_sampling:
        return eps + (1 - eps) * uniform, None
    bounds = torch.tensor([eps, 1.0], dtype=torch.float64)
    rho_low, rho_high = log_noise_to_signal(sde, bounds).tolist()
    rho = rho_low + uniform * (rho_high - rho_low)
    t = sde.time_from_log_snr(-rho / 2).clamp(eps, 1.0)
    return t, (rho_high - rho_low) / (1 - eps)


def _scaled_error(model, x0, parameterization, t, a, s, noise, reduction):
    """Per sample || s score_theta(x_t) + z ||^2 at x_t = a x_0 + s z, with the network fed ``model_time(t)``.

    ``t``, ``a``, ``s`` are (B,) float64. Returns the (B,) errors in float32 or better, whatever the network's (mixed)
    precision. This form is (s^2 / lambda) times Eq. (7)'s term and stays finite as s -> 0.
    """
    a_x, s_x = _batch_view(a, x0).to(x0.dtype), _batch_view(s, x0).to(x0.dtype)
    x_t = a_x * x0 + s_x * noise
    output = model_output(model, x_t, parameterization.model_time(t).to(x0.dtype))
    compute_dtype = torch.promote_types(x0.dtype, torch.float32)
    a_c, s_c = a_x.to(compute_dtype), s_x.to(compute_dtype)
    score = parameterization.score(output.to(compute_dtype), x_t.to(compute_dtype), a_c, s_c)
    return _reduce((s_c * score + noise.to(compute_dtype)) ** 2, reduction)


def denoising_score_matching_loss(
    model,
    x0,
    sde,
    parameterization,
    weighting="std",
    eps=1e-5,
    reduction="mean",
    importance_sampling=False,
    generator=None,
    return_per_sample=False,
):
    """Continuous-time denoising score matching, Eq. (7) of Song et al. 2021.

    Args:
        model (`Callable`): ``model(x_t, parameterization.model_time(t))`` returns the network output (a tensor or an
            object with ``.sample``, as ``UNet2DModel`` does) in ``parameterization.prediction_type``.
        x0 (`torch.Tensor`): a batch of data, shape (B, ...), in the model's data range.
        sde (`ScoreSDE`): the forward SDE.
        parameterization (`Parameterization`): converts the output into a score and t into the network's time input.
        weighting (`str`): ``"std"`` (lambda = s(t)^2, the paper's default) or ``"likelihood"`` (lambda = g(t)^2).
        eps (`float`): training times are drawn from [eps, 1] (paper: 1e-5).
        reduction (`str`): ``"mean"`` or ``"sum"`` of the squared error over each sample's elements.
        importance_sampling (`bool`): with ``weighting="likelihood"``, draw t proportional to g^2 / s^2 (lower variance,
            same expectation).
        generator (`torch.Generator`, *optional*): source of t and z, for reproducible steps.
        return_per_sample (`bool`): also return the (B,) per-sample losses and times.

    Returns:
        The mean loss over the batch (a scalar tensor), or ``(loss, per_sample, t)`` with ``return_per_sample``.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("reduction", reduction, REDUCTIONS)
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}.")
    if importance_sampling and weighting != "likelihood":
        raise ValueError(
            f"importance_sampling=True needs weighting='likelihood' (got weighting={weighting!r}); with lambda = s^2 "
            "the uniform estimator is already well behaved."
        )
    batch = x0.shape[0]
    t, factor = sample_training_times(sde, batch, eps, importance_sampling, generator, device=x0.device)
    noise = _random(torch.randn, x0.shape, generator, x0.device, x0.dtype)
    a, s = sde.marginal(t)
    scaled_error = _scaled_error(model, x0, parameterization, t, a, s, noise, reduction)
    if weighting == "std":
        per_sample = scaled_error
    elif importance_sampling:
        per_sample = factor * scaled_error
    else:
        weight = sde.diffusion(t) ** 2 / s**2  # lambda(t) / s(t)^2 with lambda = g^2
        per_sample = weight.to(scaled_error.dtype) * scaled_error
    loss = per_sample.mean()
    return (loss, per_sample, t) if return_per_sample else loss


def discrete_noise_levels(sde, num_train_timesteps):
    """The paper's discrete noise levels: ``(t, a, s)``, (N,) float64 each, for the indices i = 0 .. N-1.

    VE: SMLD's sigma_i = s(t_i) with t_i = i / (N - 1), a_i = 1. VP: DDPM's beta_i = beta(t_i) / N,
    a_i = sqrt(alpha_bar_i), s_i = sqrt(1 - alpha_bar_i) (with beta 0.1 .. 20 and N = 1000, DDPM's linear
    1e-4 .. 0.02 schedule). sub-VP has no discrete counterpart in the paper.

    Args:
        sde (`ScoreSDE`): a VE or VP SDE.
        num_train_timesteps (`int`): N.
    """
    if not (isinstance(num_train_timesteps, int) and num_train_timesteps >= 2):
        raise ValueError(f"num_train_timesteps must be an integer >= 2, got {num_train_timesteps!r}.")
    t = torch.arange(num_train_timesteps, dtype=torch.float64) / (num_train_timesteps - 1)
    if sde.sde_type == "ve":
        return t, torch.ones_like(t), sde.std(t)
    if sde.sde_type == "vp":
        alphas_cumprod = torch.cumprod(1 - sde.beta(t) / num_train_timesteps, 0)
        return t, alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    raise ValueError(
        f"the discrete losses are SMLD (sde_type 've') and DDPM (sde_type 'vp'); got sde_type {sde.sde_type!r}."
        " Use the continuous loss for sub-VP."
    )


def discrete_score_matching_loss(model, x0, sde, parameterization, reduction="mean", generator=None,
                                 return_per_sample=False):
    """The discrete SMLD (VE) or DDPM (VP) objective: i ~ U{0, ..., N-1}, loss || s_i score_theta(x_i, i) + z ||^2.

    N is ``parameterization.num_train_timesteps``; the network is fed ``parameterization.model_time(t_i)`` (the integer
    i for ``timestep_type="discrete"``). See the module docstring and :func:`discrete_noise_levels`.

    Args:
        model, x0, sde, parameterization, reduction, generator: as in :func:`denoising_score_matching_loss`.
        return_per_sample (`bool`): also return the (B,) per-sample losses and the (B,) integer indices i.

    Returns:
        The mean loss over the batch, or ``(loss, per_sample, i)`` with ``return_per_sample``.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    levels = discrete_noise_levels(sde, parameterization.num_train_timesteps)
    uniform = _random(torch.rand, (x0.shape[0],), generator, x0.device, torch.float64)
    index = (uniform * len(levels[0])).long().clamp(max=len(levels[0]) - 1)
    t, a, s = (values.to(x0.device)[index] for values in levels)
    noise = _random(torch.randn, x0.shape, generator, x0.device, x0.dtype)
    per_sample = _scaled_error(model, x0, parameterization, t, a, s, noise, reduction)
    loss = per_sample.mean()
    return (loss, per_sample, index) if return_per_sample else loss


def sliced_score_matching_loss(score_fn, x, num_projections=1, projection="gaussian", generator=None, reduction="mean",
                               return_per_sample=False):
    """Sliced score matching (Song et al. 2019) for a plain score network s_theta(x) ~ grad log p(x).

    Per sample, E_v[ v^T (d s_theta / d x) v + (v^T s_theta(x))^2 / 2 ] with random projections v; in expectation over
    v this is tr(grad s_theta) + ||s_theta||^2 / 2, the score-matching objective of Hyvarinen (2005), without the
    Jacobian trace's D backward passes. The second term is taken as ||s_theta||^2 / 2, its exact expectation for any
    projection with E[v v^T] = I (the lower-variance form).

    Args:
        score_fn (`Callable`): maps x (B, ...) to the score, same shape.
        x (`torch.Tensor`): data samples.
        num_projections (`int`): projections per sample.
        projection (`str`): ``"gaussian"`` or ``"rademacher"``.
        generator (`torch.Generator`, *optional*): source of the projections.
        reduction (`str`): ``"sum"`` (the objective above) or ``"mean"`` (divided by the number of elements per sample).
        return_per_sample (`bool`): also return the (B,) per-sample values.
    """
    check_choice("projection", projection, PROJECTIONS)
    check_choice("reduction", reduction, REDUCTIONS)
    if not (isinstance(num_projections, int) and num_projections >= 1):
        raise ValueError(f"num_projections must be an integer >= 1, got {num_projections!r}.")
    x = x.detach().requires_grad_(True)
    score = score_fn(x)
    per_sample = torch.zeros(x.shape[0], dtype=score.dtype, device=x.device)
    for _ in range(num_projections):
        v = _random(torch.randn, x.shape, generator, x.device, x.dtype)
        if projection == "rademacher":
            v = v.sign()
        projected = (v * score).flatten(1).sum(1)
        (gradient,) = torch.autograd.grad(projected.sum(), x, create_graph=True)
        per_sample = per_sample + (v * gradient).flatten(1).sum(1)
    norm_term = 0.5 * score.flatten(1).pow(2).sum(1)  # E_v[(v^T s)^2] = ||s||^2 for E[v v^T] = I
    per_sample = per_sample / num_projections + norm_term
    if reduction == "mean":
        per_sample = per_sample / math.prod(x.shape[1:])
    loss = per_sample.mean()
    return (loss, per_sample) if return_per_sample else loss


def cold_diffusion_loss(model, x0, degradation, reduction="mean", generator=None):
    """Cold Diffusion's restoration loss (Bansal et al. 2022, Eq. 1 with the L1 norm of their experiments): per sample
    || R(D(x0, t), t) - x0 ||_1 with t ~ U{1, ..., T}, the network R fed the integer level t and predicting x0.

    Args:
        model (`UNet2DModel` or callable): R(x_t, t) -> x0_hat (a diffusers model output or a tensor).
        x0 (`torch.Tensor`): clean images (B, C, H, W).
        degradation (`Degradation`): D(x0, t), t = 0..T.
        reduction (`str`): ``"mean"`` or ``"sum"`` of each sample's absolute errors; the loss is their batch mean.
        generator (`torch.Generator`, *optional*): source of the levels t (and of the centres of a ``random_center``
            mask).
    """
    check_choice("reduction", reduction, REDUCTIONS)
    levels = _random(lambda shape, **kwargs: torch.randint(1, degradation.num_steps + 1, shape, **kwargs),
                     (x0.shape[0],), generator, x0.device, torch.long)
    x_t = degradation.training_input(x0, levels, generator=generator)  # draws random mask centres after the levels
    x0_hat = model_output(model, x_t, levels)
    compute_dtype = torch.promote_types(x0.dtype, torch.float32)
    return _reduce((x0_hat.to(compute_dtype) - x0.to(compute_dtype)).abs(), reduction).mean()
