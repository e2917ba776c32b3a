"""Likelihood, encoding and decoding with the probability-flow ODE, as methods of :class:`ScoreSDEPipeline`.

One front end serves the three: the inputs are parsed by ``image_processing``, the ODE is built once by
:meth:`ProbabilityFlowMixin._probability_flow_ode`, and its progress shows on the pipeline's progress bar.
"""

import math
import torch

from ..guidance.guidance import resolve_guidance
from ..solvers.probability_flow_ode import ProbabilityFlowODE
from ..validation import check_integer, check_number
from .image_processing import check_data_range, check_num_levels, data_range, images_to_data, parse_images
from .image_processing import pixels_to_data
from .image_processing import check_output_type, sample_shape
from .outputs import ScoreSDEEncodeOutput, ScoreSDELikelihoodOutput
from .progress import time_progress


def slerp(start, end, weight):
    """Spherical interpolation between two batches of latents, sample by sample (Shoemake 1985).

    Prior samples of high dimension concentrate on a sphere; interpolating along the great circle keeps the norm a
    prior sample has, where a straight line would pass through unlikely, low-norm latents.

    Args:
        start (`torch.Tensor`), end (`torch.Tensor`): latents of the same shape (B, ...).
        weight (`float`): in [0, 1] (a Python, numpy or 0-d tensor number); 0 gives ``start``, 1 gives ``end``.
    """
    if start.shape != end.shape:
        raise ValueError(f"start and end must have the same shape, got {tuple(start.shape)} and {tuple(end.shape)}.")
    weight = check_number("weight", weight, minimum=0, maximum=1, strict_minimum=False)
    a, b = start.flatten(1).double(), end.flatten(1).double()
    cosine = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp(-1, 1)
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    parallel = sine < 1e-6  # (anti-)parallel latents: the great circle is undefined, fall back to the straight line
    safe_sine = torch.where(parallel, torch.ones_like(sine), sine)
    weight_start = torch.where(parallel, torch.full_like(sine, 1 - weight), torch.sin((1 - weight) * angle) / safe_sine)
    weight_end = torch.where(parallel, torch.full_like(sine, weight), torch.sin(weight * angle) / safe_sine)
    return (weight_start[:, None] * a + weight_end[:, None] * b).view_as(start).to(start.dtype)


class ProbabilityFlowMixin:
    """``log_likelihood``, ``encode`` and ``decode`` of a pipeline with ``unet``, a diffusers-sde ``scheduler``, and
    ``image_shape()`` and ``_to_images(sample, output_type)`` (the images its samples become)."""

    def _unconditional_score(self):
        """The model's score; a class-conditional network is fed its unconditional label (the marginal density)."""
        return resolve_guidance(self.unet, None, None, 1.0, 1).score_function(self.scheduler)

    def _probability_flow_ode(self, rtol, atol, method, max_nfe, score=None):
        score = score or self._unconditional_score()
        return ProbabilityFlowODE(self.scheduler.sde, score, rtol=rtol, atol=atol, method=method, max_nfe=max_nfe)

    def _solve_with_progress(self, description, t_start, t_end, rtol, atol, method, max_nfe, solve):
        """Run ``solve(ode)`` on the probability-flow ODE with a progress bar over [t_start, t_end]."""
        with time_progress(self, self._unconditional_score(), t_start, t_end, description) as score:
            return solve(self._probability_flow_ode(rtol, atol, method, max_nfe, score))

    def _parse_data(self, images, num_levels):
        """(pixels or None, data in the model's space or None, resolved num_levels) for likelihood and encode."""
        pixels, data = parse_images(images, sample_shape(self.unet))
        num_levels = check_num_levels(num_levels, pixels)
        if data is not None:
            check_data_range(data, self.scheduler.config.data_centered)
        return pixels, data, num_levels

    def _working(self, x):
        return x.to(device=self._execution_device, dtype=torch.promote_types(x.dtype, torch.float32))

    @torch.no_grad()
    def log_likelihood(
        self,
        images,
        generator=None,
        num_repeats: int = 1,
        eps: float = 1e-5,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        method: str = "dopri5",
        divergence: str = "hutchinson",
        probe: str = "rademacher",
        num_probes: int = 1,
        control_variate=None,
        max_nfe: int = 10_000,
        num_levels: int = None,
        return_dict: bool = True,
    ):
        """Negative log-likelihood and bits/dim of images under the probability-flow ODE (Song et al. 2021, App. D).

        Integer images (PIL, uint8 numpy or tensor) of k = ``num_levels`` levels are uniformly dequantized,
        u = (pixels + U) / k with U ~ U[0, 1)^D, mapped affinely to the model's data range, and scored with the
        change-of-variables correction D (log k - log(high - low)) (docs/likelihood.md): an upper bound on
        -log P(pixels). A floating tensor is data in the model's space, scored as a continuous density with no
        correction (any values: latent or non-image data too).

        Args:
            images: PIL image(s), a uint8 numpy array (B, H, W, C) ((B, H, W) for a 1-channel model), a uint8 tensor
                (B, C, H, W), or a floating tensor (B, C, H, W) in the model's data space.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): draws the dequantization noise and the
                probes; a list (one per image) makes each image's result independent of its batch.
            num_repeats (`int`): independent dequantizations (and probe draws) averaged per image (paper: 5).
            eps (`float`): the data's time; the ODE runs from eps to 1 (paper: 1e-5).
            rtol (`float`), atol (`float`): the adaptive solver's tolerances (paper: 1e-5).
            method (`str`): torchdiffeq adaptive method; ``dopri5`` is RK45.
            divergence (`str`): ``hutchinson`` (unbiased, one vector-Jacobian product per evaluation) or ``exact``
                (one per dimension; for small models and checks).
            probe (`str`): Hutchinson probes: ``rademacher`` (paper), ``hadamard`` (Rademacher rows of a random
                Hadamard matrix, less variance than independent ones; ``num_probes`` a power of two), ``gaussian`` or
                ``orthogonal`` (sphere-uniform, mutually orthogonal); see docs/likelihood.md, "Variance reduction".
            num_probes (`int`): Hutchinson probes averaged per sample, all through one network pass per evaluation
                (NFE does not grow; the backward work does, one vector-Jacobian product per probe).
            control_variate (*optional*): data covariance (a number, a (D,) tensor of variances or a (D, D) matrix in
                the model's space) of a Gaussian whose divergence is added exactly, the probes estimating only the rest.
            max_nfe (`int`): error out past this many network evaluations in one solve.
            num_levels (`int`, *optional*): how many values the integer images take, 0..num_levels-1 (default 256,
                8-bit); e.g. 17 for the sklearn digits (0..16). Only for integer images.
            return_dict (`bool`): return a :class:`ScoreSDELikelihoodOutput` instead of a tuple
                ``(nll, bits_per_dim, nfe)``.
        """
        self._check_scheduler()
        num_repeats = check_integer("num_repeats", num_repeats, minimum=1)
        pixels, data, num_levels = self._parse_data(images, num_levels)
        reference = pixels if data is None else data
        batch, dim = reference.shape[0], reference[0].numel()
        _check_generator(generator, batch)
        prior_nll = torch.zeros(batch, dtype=torch.float64)
        ode_nll = torch.zeros(batch, dtype=torch.float64)
        nfe = 0
        for repeat in range(num_repeats):
            if data is None:
                noise = _uniform(pixels.shape, generator)
                x = pixels_to_data(pixels, num_levels, self.scheduler.config.data_centered, noise).to(torch.float32)
            else:
                x = data
            result = self._solve_with_progress(
                f"likelihood {repeat + 1}/{num_repeats}", eps, 1.0, rtol, atol, method, max_nfe,
                lambda ode: ode.log_likelihood(self._working(x), eps=eps, divergence=divergence, probe=probe,
                                               num_probes=num_probes, control_variate=control_variate,
                                               generator=generator),
            )
            prior_nll -= result.prior_log_prob.double().cpu() / num_repeats
            ode_nll -= result.delta_log_prob.double().cpu() / num_repeats
            nfe += result.nfe
        self.maybe_free_model_hooks()

        # Each integer value owns a cube of side 1 / k in [0, 1]^D, mapped onto a cube of side (high - low) / k.
        low, high = data_range(self.scheduler.config.data_centered)
        correction = dim * (math.log(num_levels) - math.log(high - low)) if data is None else 0.0
        dequantization_nll = torch.full((batch,), correction, dtype=torch.float64)
        nll = prior_nll + ode_nll + dequantization_nll
        bits_per_dim = nll / (dim * math.log(2))
        if not return_dict:
            return (nll, bits_per_dim, nfe)
        return ScoreSDELikelihoodOutput(nll=nll, bits_per_dim=bits_per_dim, prior_nll=prior_nll, ode_nll=ode_nll,
                                        dequantization_nll=dequantization_nll, nfe=nfe)

    @torch.no_grad()
    def encode(self, images, eps: float = None, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
               max_nfe: int = 10_000, num_levels: int = None, return_dict: bool = True):
        """Map images to latents with the probability-flow ODE, from t = eps to t = 1 (deterministic, invertible).

        Args:
            images: as in :meth:`log_likelihood`; integer images of ``num_levels`` levels are mapped to the model's range
                as pixels / (num_levels - 1) (no dequantization), a floating tensor is taken as it is.
            eps (`float`, *optional*): the data's time (default: the scheduler's ``sampling_eps``); use the same in
                :meth:`decode`.
            rtol (`float`), atol (`float`), method (`str`), max_nfe (`int`): the adaptive solver, as in
                :meth:`log_likelihood`.
            num_levels (`int`, *optional*): levels of integer images (default 256; 17 for the sklearn digits).
            return_dict (`bool`): return a :class:`ScoreSDEEncodeOutput` instead of a tuple ``(latents, nfe)``.
        """
        self._check_scheduler()
        data = images_to_data(images, sample_shape(self.unet), self.scheduler.config.data_centered, num_levels)
        eps = self.scheduler.config.sampling_eps if eps is None else eps
        result = self._solve_with_progress("encode", eps, 1.0, rtol, atol, method, max_nfe,
                                           lambda ode: ode.encode(self._working(data), eps=eps))
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result.sample, result.nfe)
        return ScoreSDEEncodeOutput(latents=result.sample, nfe=result.nfe)

    @torch.no_grad()
    def decode(self, latents, eps: float = None, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
               max_nfe: int = 10_000, output_type: str = "pil", return_dict: bool = True):
        """Map latents (e.g. from :meth:`encode`, :func:`slerp` or the prior) to images with the probability-flow ODE,
        from t = 1 to t = eps, with the adaptive solver (no final denoising step, so ``decode(encode(x)) ~ x``).

        Args:
            latents (`torch.Tensor`): (B, C, H, W) at t = 1 (a prior sample is already scaled by the prior's std).
            eps (`float`, *optional*): the end time (default: the scheduler's ``sampling_eps``).
            rtol (`float`), atol (`float`), method (`str`), max_nfe (`int`): the adaptive solver, as in
                :meth:`log_likelihood`.
            output_type (`str`): as in ``__call__``; ``"latent"`` returns the raw sample in the model's range.
            return_dict (`bool`): return a :class:`ScoreSDEPipelineOutput` instead of a tuple ``(images, nfe)``.
        """
        self._check_scheduler()
        shape = sample_shape(self.unet)
        check_output_type(output_type, self.image_shape()[0])
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape[1:]) != shape:
            raise ValueError(f"latents must be a tensor (B, *{shape}) (unet in_channels, sample_size), got"
                             f" {tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}.")
        eps = self.scheduler.config.sampling_eps if eps is None else eps
        result = self._solve_with_progress("decode", 1.0, eps, rtol, atol, method, max_nfe,
                                           lambda ode: ode.decode(self._working(latents), eps=eps))
        return self._output(result.sample, result.nfe, output_type, return_dict)


def _check_generator(generator, batch_size):
    if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
        raise ValueError(
            f"generator is a list of {len(generator)} generators but the batch has {batch_size} samples; pass one per"
            " sample, or a single generator."
        )


def _uniform(shape, generator):
    """U[0, 1) noise of ``shape`` (float64, CPU); a list of generators draws each sample's from its own."""
    if isinstance(generator, (list, tuple)):
        return torch.cat([_uniform((1, *shape[1:]), g) for g in generator])
    device = generator.device if generator is not None else None
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device).cpu()
