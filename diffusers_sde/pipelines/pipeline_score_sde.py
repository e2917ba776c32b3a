"""ScoreSDEPipeline: unconditional sampling of a score-SDE model with any diffusers-sde scheduler."""

import math
import numbers
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..schedulers.scheduling_predictor_corrector import PredictorCorrectorScheduler
from ..schedulers.scheduling_score_sde import ScoreSDESchedulerMixin
from ..solvers.probability_flow_ode import ProbabilityFlowODE, score_function
from ..solvers.gotta_go_fast import (
    GOTTA_GO_FAST_DEFAULTS,
    check_gotta_go_fast_arguments,
    sample_gotta_go_fast,
)
from ..solvers.noise_removal import remove_noise
from ..solvers.reverse_sde_torchsde import check_torchsde_arguments, sample_reverse_sde

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
SAMPLING_SOLVERS = ("torchsde", "gotta_go_fast", "ode")  # __call__(solver=...); None runs the scheduler


@dataclass
class ScoreSDEPipelineOutput(BaseOutput):
    """Output of :class:`ScoreSDEPipeline`.

    Args:
        images: PIL images, a (B, H, W, C) numpy array or a (B, C, H, W) tensor in [0, 1], or the raw final sample
            (``output_type="latent"``, in the model's data range, not clamped).
        nfe (`int`): how many network evaluations the run took.
    """

    images: object
    nfe: int



@dataclass
class ScoreSDELikelihoodOutput(BaseOutput):
    """Output of :meth:`ScoreSDEPipeline.log_likelihood`; every field but ``nfe`` is per sample, shape (B,).

    ``nll = prior_nll + ode_nll + dequantization_nll`` (nats), ``bits_per_dim = nll / (D ln 2)``. For integer images
    it is an upper bound (the variational dequantization bound) on -log P(pixels); for a tensor in the model's range it is
    the continuous -log p_eps(x). See docs/likelihood.md.

    Args:
        nll (`torch.Tensor`): negative log-likelihood in nats.
        bits_per_dim (`torch.Tensor`): ``nll`` in bits per dimension.
        prior_nll (`torch.Tensor`): -log p_1(x_1), the prior term at the encoded latents.
        ode_nll (`torch.Tensor`): -int_eps^1 div v dt, the change of variables along the probability-flow ODE.
        dequantization_nll (`torch.Tensor`): D (log k - log(high - low)) for integer images of k levels (``num_levels``),
            from the uniform dequantization and the map [0, 1] -> [low, high] of the model's data range; 0 for a tensor.
        nfe (`int`): network evaluations over all repeats (each with its vector-Jacobian products).
    """

    nll: torch.Tensor
    bits_per_dim: torch.Tensor
    prior_nll: torch.Tensor
    ode_nll: torch.Tensor
    dequantization_nll: torch.Tensor
    nfe: int


@dataclass
class ScoreSDEEncodeOutput(BaseOutput):
    """Output of :meth:`ScoreSDEPipeline.encode`.

    Args:
        latents (`torch.Tensor`): the probability-flow ODE's end point at t = 1 (a prior-shaped sample).
        nfe (`int`): network evaluations.
    """

    latents: torch.Tensor
    nfe: int


def _data_range(scheduler):
    """(low, high) of the model's data: [-1, 1] if ``data_centered`` else [0, 1]."""
    return (-1.0, 1.0) if scheduler.config.data_centered else (0.0, 1.0)


def _split_images(images):
    """Integer images -> ``(uint8 tensor (B, C, H, W), True)``; a floating tensor -> ``(images, False)``."""
    if isinstance(images, PIL.Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, PIL.Image.Image) for i in images):
        arrays = [np.asarray(i) for i in images]
        images = np.stack([a[..., None] if a.ndim == 2 else a for a in arrays])
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (3, 4):
        images = images[None] if images.ndim == 3 else images
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2), True
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        if images.dtype == torch.uint8:
            return images, True
        if images.is_floating_point():
            return images, False
    description = f"{type(images).__name__}" + (f" of dtype {images.dtype}" if hasattr(images, "dtype") else "")
    raise ValueError(
        f"images must be PIL images, a uint8 numpy array (B, H, W, C) or (H, W, C), a uint8 tensor (B, C, H, W), or a"
        f" floating tensor (B, C, H, W) already in the model's data range; got {description}."
    )


def slerp(start, end, weight):
    """Spherical interpolation between two batches of latents, sample by sample (Shoemake 1985).

    Prior samples of high dimension concentrate on a sphere; interpolating along the great circle keeps the norm a
    prior sample has, where a straight line would pass through unlikely, low-norm latents.

    Args:
        start (`torch.Tensor`), end (`torch.Tensor`): latents of the same shape (B, ...).
        weight (`float`): in [0, 1]; 0 gives ``start``, 1 gives ``end``.
    """
    if start.shape != end.shape:
        raise ValueError(f"start and end must have the same shape, got {tuple(start.shape)} and {tuple(end.shape)}.")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"weight must be a number in [0, 1], got {weight!r}.")
    a, b = start.flatten(1).double(), end.flatten(1).double()
    cosine = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp(-1, 1)
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    parallel = sine < 1e-6  # (anti-)parallel latents: the great circle is undefined, fall back to the straight line
    safe_sine = torch.where(parallel, torch.ones_like(sine), sine)
    weight_start = torch.where(parallel, torch.full_like(sine, 1 - weight), torch.sin((1 - weight) * angle) / safe_sine)
    weight_end = torch.where(parallel, torch.full_like(sine, weight), torch.sin(weight * angle) / safe_sine)
    return (weight_start[:, None] * a + weight_end[:, None] * b).view_as(start).to(start.dtype)


def _check_num_levels(num_levels, pixels):
    """``num_levels`` (None -> 256) must be an integer >= 2 above every pixel value; returns it."""
    if num_levels is None:
        return 256
    if isinstance(num_levels, bool) or not isinstance(num_levels, numbers.Integral) or num_levels < 2:
        raise ValueError(f"num_levels must be an integer >= 2 (the number of integer values, 0..num_levels-1), got"
                         f" {num_levels!r}.")
    if pixels is None:
        raise ValueError(f"num_levels={num_levels!r} only applies to integer images; a floating tensor is scored as a"
                         " continuous density. Pass the integer values (uint8) to have them dequantized.")
    largest = pixels.max().item()
    if largest >= num_levels:
        raise ValueError(f"num_levels={num_levels} allows integer values 0..{num_levels - 1}, but the images hold a"
                         f" maximum value of {largest}; raise num_levels to at least {largest + 1}.")
    return int(num_levels)


def _sample_shape(unet):
    config = unet.config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return config.in_channels, height, width


class ScoreSDEPipeline(DiffusionPipeline):
    """Sample a score-based model (Song et al. 2021) with a predictor-corrector or probability-flow scheduler.

    Args:
        unet (`UNet2DModel` or any `ModelMixin` with ``in_channels`` / ``sample_size`` in its config): the network; its
            output and time input follow the scheduler's ``prediction_type`` and ``timestep_type``.
        scheduler: a diffusers-sde scheduler. A stock ``ScoreSdeVeScheduler`` or linear-beta DDPM-family scheduler is
            mapped to the equivalent :class:`PredictorCorrectorScheduler`, so stock score-SDE and DDPM repos load as is.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet, scheduler):
        super().__init__()
        if not isinstance(scheduler, ScoreSDESchedulerMixin):
            scheduler = PredictorCorrectorScheduler.from_config(scheduler.config)
        self.register_modules(unet=unet, scheduler=scheduler)

    def _check_inputs(self, batch_size, shape, generator, latents, output_type):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if output_type == "pil" and shape[0] not in (1, 3, 4):
            raise ValueError(
                f"output_type='pil' needs 1, 3 or 4 channels, the model has {shape[0]}; use output_type='np' or 'pt'."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"generator is a list of {len(generator)} generators but batch_size is {batch_size}; pass one per sample."
            )
        if latents is not None and tuple(latents.shape) != (batch_size, *shape):
            raise ValueError(
                f"latents has shape {tuple(latents.shape)}, expected {(batch_size, *shape)}"
                " (batch_size, unet in_channels, sample_size)."
            )

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = None,
        generator=None,
        latents: torch.Tensor = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
        solver: str = None,
        method: str = None,
        rtol: float = None,
        atol: float = None,
        max_nfe: int = 10_000,
    ):
        """Generate samples.

        Args:
            batch_size (`int`): number of samples.
            num_inference_steps (`int`, *optional*): grid size (defaults to the scheduler's ``num_train_timesteps``).
                The number of network evaluations also counts corrector steps and Heun's second evaluations.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): a list gives each sample its own
                noise, so a sample does not depend on the batch it is drawn in.
            latents (`torch.Tensor`, *optional*): a (B, C, H, W) prior sample to start from (already scaled by the
                prior's std); drawn from the prior when omitted.
            output_type (`str`): ``"pil"``, ``"np"``, ``"pt"`` (images in [0, 1]) or ``"latent"`` (raw final sample).
            return_dict (`bool`): return a :class:`ScoreSDEPipelineOutput` instead of a tuple ``(images, nfe)``.
            callback_on_step_end (`Callable`, *optional*): ``f(pipe, step, timestep, {"latents": x}) -> dict``, called
                after each network evaluation; a returned ``"latents"`` replaces the sample.
            callback_on_step_end_tensor_inputs (`list[str]`): tensors passed to the callback.
            solver (`str`, *optional*): ``None`` (default) runs the scheduler in the diffusers loop. Otherwise the
                scheduler only supplies the SDE, the parameterization and ``sampling_eps``, and the sample comes from
                ``"torchsde"`` (reverse SDE via ``torchsde.sdeint``: ``num_inference_steps`` fixed steps, or adaptive
                step doubling when ``rtol`` or ``atol`` is given), ``"gotta_go_fast"`` (the adaptive SDE solver of
                Jolicoeur-Martineau et al. 2021, per-sample steps) or ``"ode"`` (adaptive probability-flow ODE,
                RK45). All end with the noise removal; ``callback_on_step_end`` is not called by them.
            method (`str`, *optional*): ``solver="torchsde"``: ``euler`` (default), ``milstein``, ``heun``,
                ``midpoint`` or ``srk``; ``solver="ode"``: a torchdiffeq method (default ``dopri5``).
            rtol (`float`), atol (`float`), *optional*: tolerances, > 0. Defaults: ``gotta_go_fast`` 0.01 / 0.0078
                (the paper's), ``ode`` 1e-5 / 1e-5, ``torchsde`` 0.01 / 0.01 when adaptive.
            max_nfe (`int`): an adaptive solve stops with ``MaxNFEExceededError`` past this many network evaluations.
        """
        shape = _sample_shape(self.unet)
        self._check_inputs(batch_size, shape, generator, latents, output_type)
        self._check_solver(solver, method, rtol, atol, num_inference_steps, max_nfe)
        device = self._execution_device
        model_dtype = self.unet.dtype
        # The SDE math runs in float32 or better whatever the network's dtype.
        sample_dtype = torch.promote_types(latents.dtype, torch.float32) if latents is not None else torch.float32

        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, device=device)
        if latents is None:
            latents = randn_tensor((batch_size, *shape), generator=generator, device=device, dtype=sample_dtype)
            latents = latents * scheduler.init_noise_sigma
        sample = latents.to(device=device, dtype=sample_dtype)

        if solver is not None:
            sample, nfe = self._solve(solver, sample, num_inference_steps, generator, method, rtol, atol, max_nfe)
        else:
            for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
                model_input = scheduler.scale_model_input(sample, t).to(model_dtype)
                model_output = self.unet(model_input, t).sample
                sample = scheduler.step(model_output.to(sample_dtype), t, sample, generator=generator).prev_sample
                if callback_on_step_end is not None:
                    outputs = callback_on_step_end(self, i, t, {"latents": sample})
                    sample = outputs.pop("latents", sample)
            nfe = len(scheduler.timesteps)
        self.maybe_free_model_hooks()

        images = self._postprocess(sample, output_type)
        if not return_dict:
            return (images, nfe)
        return ScoreSDEPipelineOutput(images=images, nfe=nfe)

    # --- solvers outside the scheduler loop (solver=...) -------------------------------------------------------
    @staticmethod
    def _check_solver(solver, method, rtol, atol, num_inference_steps, max_nfe):
        if solver is None:
            given = {name: value for name, value in (("method", method), ("rtol", rtol), ("atol", atol)) if value is not None}
            if given:
                raise ValueError(f"{given} only apply with solver in {SAMPLING_SOLVERS}, got solver=None.")
            return
        if solver not in SAMPLING_SOLVERS:
            raise ValueError(f"solver must be None or one of {SAMPLING_SOLVERS}, got {solver!r}.")
        if solver == "torchsde":
            check_torchsde_arguments(method or "euler", num_inference_steps, rtol, atol, None)
        elif solver == "gotta_go_fast":
            if method is not None or num_inference_steps is not None:
                raise ValueError(
                    f"solver='gotta_go_fast' chooses its own steps and has no method; got method={method!r},"
                    f" num_inference_steps={num_inference_steps!r} (leave both None; set rtol / atol instead)."
                )
            defaults = GOTTA_GO_FAST_DEFAULTS
            check_gotta_go_fast_arguments(
                defaults["rtol"] if rtol is None else rtol, defaults["atol"] if atol is None else atol,
                defaults["h_init"], defaults["safety"], defaults["exponent"], max_nfe, 1e-10,
            )
        elif num_inference_steps is not None:
            raise ValueError(f"solver='ode' chooses its own steps; got num_inference_steps={num_inference_steps!r}.")

    def _solve(self, solver, sample, num_inference_steps, generator, method, rtol, atol, max_nfe):
        """Sample with an adaptive or torchsde solver from the prior sample ``sample``; returns (sample, NFE)."""
        sde, eps = self.scheduler.sde, self.scheduler.config.sampling_eps
        if solver == "gotta_go_fast":
            defaults = GOTTA_GO_FAST_DEFAULTS
            return sample_gotta_go_fast(
                sde, score_function(self.unet, self.scheduler), sample, eps,
                rtol=defaults["rtol"] if rtol is None else rtol, atol=defaults["atol"] if atol is None else atol,
                generator=generator, max_nfe=max_nfe,
            )
        score = score_function(self.unet, self.scheduler)
        if solver == "torchsde":
            return sample_reverse_sde(
                sde, score, sample, eps, method=method or "euler",
                num_steps=num_inference_steps or self.scheduler.config.num_train_timesteps,
                adaptive=rtol is not None or atol is not None, rtol=1e-2 if rtol is None else rtol,
                atol=1e-2 if atol is None else atol, generator=generator, max_nfe=max_nfe,
            )
        ode = self._probability_flow_ode(1e-5 if rtol is None else rtol, 1e-5 if atol is None else atol,
                                         method or "dopri5", max_nfe)
        result = ode.decode(sample, eps=eps)
        x = result.sample
        return remove_noise(sde, x, score(x, torch.tensor(eps, dtype=x.dtype)), eps), result.nfe + 1

    def _postprocess(self, sample, output_type):
        if output_type == "latent":
            return sample
        if self.scheduler.config.data_centered:
            sample = (sample + 1) / 2
        images = sample.clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).float().numpy()
        return self.numpy_to_pil(images) if output_type == "pil" else images

    # --- probability-flow ODE: likelihood, encoding, decoding ---------------------------------------------------
    def _probability_flow_ode(self, rtol, atol, method, max_nfe):
        return ProbabilityFlowODE(self.scheduler.sde, score_function(self.unet, self.scheduler), rtol=rtol, atol=atol,
                                  method=method, max_nfe=max_nfe)

    def _prepare_data(self, images):
        """Validate ``images``; returns (pixels as a uint8 tensor, None) or (None, a float tensor in the model's range)."""
        data, discrete = _split_images(images)
        shape = _sample_shape(self.unet)
        if tuple(data.shape[1:]) != shape:
            raise ValueError(
                f"images have shape (C, H, W) = {tuple(data.shape[1:])} per sample, the model expects {shape}"
                " (unet in_channels, sample_size)."
            )
        if discrete:
            return data, None
        low, high = _data_range(self.scheduler)
        smallest, largest = data.min().item(), data.max().item()
        if not (low <= smallest and largest <= high):
            raise ValueError(
                f"images (a floating tensor) must lie in the model's data range [{low:g}, {high:g}] (scheduler"
                f" data_centered={self.scheduler.config.data_centered}); got values in [{smallest:.4g}, {largest:.4g}]."
                " Pass uint8 images to have them mapped and dequantized, or rescale the tensor."
            )
        return None, data

    def _to_model_range(self, unit):
        low, high = _data_range(self.scheduler)
        return low + (high - low) * unit

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
        max_nfe: int = 10_000,
        num_levels: int = None,
        return_dict: bool = True,
    ):
        """Negative log-likelihood and bits/dim of images under the probability-flow ODE (Song et al. 2021, App. D).

        Integer images (PIL, uint8 numpy or tensor) of k = ``num_levels`` levels are uniformly dequantized,
        u = (pixels + U) / k with U ~ U[0, 1)^D, mapped affinely to the model's data range, and scored with the
        change-of-variables correction D (log k - log(high - low)) (docs/likelihood.md): an upper bound on
        -log P(pixels). A floating tensor already
        in the model's range is scored as a continuous density, with no correction.

        Args:
            images: PIL image(s), a uint8 numpy array (B, H, W, C), a uint8 tensor (B, C, H, W), or a floating tensor
                (B, C, H, W) in the model's data range ([-1, 1] if the scheduler's ``data_centered`` else [0, 1]).
            generator (`torch.Generator`, *optional*): a CPU generator drawing the dequantization noise and the probes.
            num_repeats (`int`): independent dequantizations (and probe draws) averaged per image (paper: 5).
            eps (`float`): the data's time; the ODE runs from eps to 1 (paper: 1e-5).
            rtol (`float`), atol (`float`): the adaptive solver's tolerances (paper: 1e-5).
            method (`str`): torchdiffeq adaptive method; ``dopri5`` is RK45.
            divergence (`str`): ``hutchinson`` (unbiased, one vector-Jacobian product per evaluation) or ``exact``
                (one per dimension; for small models and checks).
            probe (`str`): Hutchinson probes, ``rademacher`` (paper) or ``gaussian``.
            num_probes (`int`): Hutchinson probes averaged per evaluation.
            max_nfe (`int`): error out past this many network evaluations in one solve.
            num_levels (`int`, *optional*): how many values the integer images take, 0..num_levels-1 (default 256,
                8-bit); e.g. 17 for the sklearn digits (0..16). Only for integer images.
            return_dict (`bool`): return a :class:`ScoreSDELikelihoodOutput` instead of a tuple
                ``(nll, bits_per_dim, nfe)``.
        """
        if isinstance(num_repeats, bool) or not isinstance(num_repeats, int) or num_repeats < 1:
            raise ValueError(f"num_repeats must be an integer >= 1, got {num_repeats!r}.")
        pixels, data = self._prepare_data(images)
        num_levels = _check_num_levels(num_levels, pixels)
        ode = self._probability_flow_ode(rtol, atol, method, max_nfe)
        device = self._execution_device
        reference = pixels if data is None else data
        batch, dim = reference.shape[0], reference[0].numel()
        prior_nll = torch.zeros(batch, dtype=torch.float64)
        ode_nll = torch.zeros(batch, dtype=torch.float64)
        nfe = 0
        for _ in range(num_repeats):
            if data is None:
                noise = torch.rand(pixels.shape, generator=generator, dtype=torch.float64)
                x = self._to_model_range((pixels.to(torch.float64) + noise) / num_levels).to(device=device, dtype=torch.float32)
            else:
                x = data.to(device=device, dtype=torch.promote_types(data.dtype, torch.float32))
            result = ode.log_likelihood(x, eps=eps, divergence=divergence, probe=probe, num_probes=num_probes,
                                        generator=generator)
            prior_nll -= result.prior_log_prob.double().cpu() / num_repeats
            ode_nll -= result.delta_log_prob.double().cpu() / num_repeats
            nfe += result.nfe
        self.maybe_free_model_hooks()

        # Each integer value owns a cube of side 1 / k in [0, 1]^D, mapped onto a cube of side (high - low) / k.
        low, high = _data_range(self.scheduler)
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
               max_nfe: int = 10_000, return_dict: bool = True):
        """Map images to latents with the probability-flow ODE, from t = eps to t = 1 (deterministic, invertible).

        Args:
            images: as in :meth:`log_likelihood`; integer images are mapped to the model's range as pixels / 255
                (no dequantization), a floating tensor must already be in it.
            eps (`float`, *optional*): the data's time (default: the scheduler's ``sampling_eps``); use the same in
                :meth:`decode`.
            rtol (`float`), atol (`float`), method (`str`), max_nfe (`int`): the adaptive solver, as in
                :meth:`log_likelihood`.
            return_dict (`bool`): return a :class:`ScoreSDEEncodeOutput` instead of a tuple ``(latents, nfe)``.
        """
        pixels, data = self._prepare_data(images)
        if data is None:
            data = self._to_model_range(pixels.to(torch.float64) / 255).to(torch.float32)
        x = data.to(device=self._execution_device, dtype=torch.promote_types(data.dtype, torch.float32))
        eps = self.scheduler.config.sampling_eps if eps is None else eps
        result = self._probability_flow_ode(rtol, atol, method, max_nfe).encode(x, eps=eps)
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
        shape = _sample_shape(self.unet)
        self._check_inputs(len(latents), shape, None, latents, output_type)
        x = latents.to(device=self._execution_device, dtype=torch.promote_types(latents.dtype, torch.float32))
        eps = self.scheduler.config.sampling_eps if eps is None else eps
        result = self._probability_flow_ode(rtol, atol, method, max_nfe).decode(x, eps=eps)
        self.maybe_free_model_hooks()
        images = self._postprocess(result.sample, output_type)
        if not return_dict:
            return (images, result.nfe)
        return ScoreSDEPipelineOutput(images=images, nfe=result.nfe)
