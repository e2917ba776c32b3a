"""Conditional sampling for linear inverse problems y = A x + n with an unconditional score model (Song et al. 2021,
Sec. 5 and App. I), and the inpainting and colorization pipelines built on it.

Methods (``method=``):

- ``"imputation"``: the paper's. After every scheduler step, the coordinates of the sample that A observes, in the
  orthonormal basis of A's SVD, are replaced by a freshly forward-noised copy of the measurement at the exact noise
  level the step returned (``output.prev_level``). The final step lands on the data (s = 0), so the observed part of
  the output equals the measurement and the unobserved part got the final denoising. Noiseless measurements only.
- ``"dps"``: diffusion posterior sampling (Chung et al. 2023, Alg. 1): after every step, x <- x - zeta / ||y - A
  x0_hat|| * grad_x ||y - A x0_hat(x)||^2, with Tweedie's x0_hat through the network. Takes noisy measurements and
  nonlinear differentiable operators (any callable). Biased: an approximation of the posterior.
- ``"smc"``: the twisted diffusion sampler (Wu et al. 2023), sequential Monte Carlo over the reverse process with
  ``num_particles`` particles per measurement; asymptotically exact as particles grow. See
  :mod:`diffusers_sde.inverse_problems.smc`.
"""

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..inverse_problems.operators import ChannelMean, LinearOperator, Masking
from ..inverse_problems.smc import twisted_diffusion_sampler
from ..sde import tweedie_denoise
from ..validation import check_choice, check_integer, check_number
from .image_processing import check_data_range, parse_images, pixels_to_data
from .image_processing import images_to_data, sample_shape
from .denoising_loop import denoising_loop
from .pipeline_score_sde import ScoreSDEPipeline

METHODS = ("imputation", "dps", "smc")


class ScoreSDEInverseProblemPipeline(ScoreSDEPipeline):
    """Sample x given a measurement y = A x + n, n ~ N(0, noise_std^2 I), with an unconditional score model and any
    diffusers-sde scheduler. Unconditional sampling, likelihood, encode and decode are inherited from
    :class:`ScoreSDEPipeline`.

    Args:
        unet, scheduler: as in :class:`ScoreSDEPipeline`.
    """

    @torch.no_grad()
    def __call__(
        self,
        measurement,
        operator,
        noise_std: float = 0.0,
        method: str = "imputation",
        num_inference_steps: int = None,
        generator=None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
        step_size: float = 1.0,
        num_particles: int = 16,
    ):
        """Sample one x per measurement row.

        Args:
            measurement (`torch.Tensor`): (B, ...) measurements; B samples come back, each conditioned on its own row.
            operator (`LinearOperator` or `Callable`): A. ``imputation`` and ``smc`` need a :class:`LinearOperator`
                (``Masking``, ``ChannelMean``, ``Downsample``, ``LinearOperator.from_matrix``); ``dps`` also takes any
                differentiable callable mapping (B, C, H, W) samples to measurements.
            noise_std (`float`): the measurement noise's std (>= 0); ``imputation`` needs 0.
            method (`str`): ``imputation``, ``dps`` or ``smc`` (see the module docstring).
            num_inference_steps (`int`, *optional*): the scheduler's grid size (default: its own).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): a list gives each sample its own noise.
            output_type (`str`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (the raw sample in the model's space).
            return_dict (`bool`): return a :class:`ScoreSDEPipelineOutput` instead of a tuple ``(images, nfe)``.
            callback_on_step_end, callback_on_step_end_tensor_inputs: as in :class:`ScoreSDEPipeline` (``imputation``
                and ``dps``).
            step_size (`float`): ``dps``: zeta, the guidance step (Chung et al.: 0.1 to 1).
            num_particles (`int`): ``smc``: particles per measurement.
        """
        self._check_scheduler()
        check_choice("method", method, METHODS)
        noise_std = check_number("noise_std", noise_std, minimum=0, strict_minimum=False)
        shape = sample_shape(self.unet)
        self._check_measurement(measurement, operator, method, noise_std, shape)
        batch_size = measurement.shape[0]
        self._check_inputs(batch_size, shape, generator, None, output_type, callback_on_step_end,
                           callback_on_step_end_tensor_inputs, None)
        device = self._execution_device
        measurement = measurement.to(device=device, dtype=torch.float32)
        if method == "smc":
            num_particles = check_integer("num_particles", num_particles, minimum=1)
            if callback_on_step_end is not None:
                raise ValueError("callback_on_step_end is not called by method='smc' (its particles are internal).")
            sample, nfe = twisted_diffusion_sampler(self.unet, self.scheduler, measurement, operator, noise_std,
                                                    num_particles, num_inference_steps, generator)
            self._num_timesteps = nfe
        else:
            step_size = check_number("step_size", step_size, minimum=0, strict_minimum=False)
            sample = randn_tensor((batch_size, *shape), generator=generator, device=device, dtype=torch.float32)
            sample = sample * self.scheduler.init_noise_sigma
            imputation = _imputation(operator, measurement, generator) if method == "imputation" else None
            guidance = _dps_guidance(operator, measurement, step_size) if method == "dps" else None
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            sample, nfe = denoising_loop(self, sample, self.scheduler.timesteps, generator, guidance, imputation,
                                         callback_on_step_end, callback_on_step_end_tensor_inputs)
        return self._output(sample, nfe, output_type, return_dict)

    def _check_measurement(self, measurement, operator, method, noise_std, shape):
        if method in ("imputation", "smc") and not isinstance(operator, LinearOperator):
            raise ValueError(
                f"method={method!r} needs a LinearOperator (Masking, ChannelMean, Downsample, LinearOperator.from_matrix);"
                f" got {type(operator).__name__}. A nonlinear operator works with method='dps'."
            )
        if method == "imputation" and noise_std > 0:
            raise ValueError(f"method='imputation' assumes a noiseless measurement (noise_std=0), got noise_std="
                             f"{noise_std}; use method='dps' or 'smc' for noisy measurements.")
        if isinstance(operator, LinearOperator):
            if tuple(operator.sample_shape) != tuple(shape):
                raise ValueError(f"operator acts on samples of shape {tuple(operator.sample_shape)}, the model's samples"
                                 f" are {tuple(shape)} (unet in_channels, sample_size).")
            operator.check_measurement(measurement)
        elif not callable(operator):
            raise ValueError(f"operator must be a LinearOperator or a callable, got {type(operator).__name__}.")
        elif not isinstance(measurement, torch.Tensor) or not measurement.is_floating_point():
            raise ValueError(f"measurement must be a floating tensor (B, ...), got {type(measurement).__name__}.")


def _imputation(operator, measurement, generator):
    """The paper's replacement step, in A's spectral basis, at the level the scheduler's step returned."""
    target = operator.spectral_measurement(measurement)
    observed = operator.observed.to(measurement.device)

    def impute(sample, level):
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        known = level.a * target + level.s * noise  # y forward-noised to the sample's level (in spectral coordinates)
        return operator.from_spectral(torch.where(observed, known, operator.to_spectral(sample)))

    return impute


def _dps_guidance(operator, measurement, step_size):
    """Chung et al. (2023), Alg. 1: the network output at x, and the correction zeta grad ||y - A x0_hat||^2 / ||.||."""

    def guidance(unet, scheduler, sample, t, level):
        with torch.enable_grad():
            x = sample.detach().requires_grad_(True)
            model_output = unet(scheduler.scale_model_input(x, t).to(unet.dtype), t).sample.to(x.dtype)
            score = scheduler.parameterization.score(model_output, x, level.a, level.s)
            residual = (measurement - operator(tweedie_denoise(x, score, level.a, level.s))).flatten(1)
            squared = residual.pow(2).sum(1)
            (gradient,) = torch.autograd.grad(squared.sum(), x)
        scale = step_size / squared.detach().sqrt().clamp(min=1e-12)
        return model_output.detach(), scale.view(-1, *([1] * (x.dim() - 1))) * gradient

    return guidance


def _mask_tensor(mask_image, shape, batch_size):
    """mask_image (PIL "L", np or a float tensor; 1 = generate, 0 = keep) as a (B or 1, 1 or C, H, W) tensor of 0/1."""
    import numpy as np
    import PIL.Image

    if isinstance(mask_image, PIL.Image.Image):
        mask_image = np.asarray(mask_image.convert("L"), dtype=np.float32) / 255
    if isinstance(mask_image, np.ndarray):
        mask_image = torch.from_numpy(np.asarray(mask_image, dtype=np.float32))
        mask_image = mask_image.reshape(-1, 1, *mask_image.shape[-2:]) if mask_image.dim() in (2, 3) else mask_image
    if isinstance(mask_image, torch.Tensor) and mask_image.dim() in (2, 3):
        mask_image = mask_image.reshape(1, -1, *mask_image.shape[-2:])  # one mask, (H, W) or (1 or C, H, W)
    if not isinstance(mask_image, torch.Tensor) or mask_image.dim() != 4:
        raise ValueError(f"mask_image must be a PIL image, a numpy array (H, W) or (B, H, W), or a tensor (B or 1,"
                         f" 1 or C, H, W); got {type(mask_image).__name__}"
                         f"{' of shape ' + str(tuple(mask_image.shape)) if isinstance(mask_image, torch.Tensor) else ''}.")
    mask_image = mask_image.to(torch.float32)
    if tuple(mask_image.shape[-2:]) != tuple(shape[1:]) or mask_image.shape[1] not in (1, shape[0]) or \
            mask_image.shape[0] not in (1, batch_size):
        raise ValueError(f"mask_image has shape {tuple(mask_image.shape)}; it must be (1 or {batch_size}, 1 or"
                         f" {shape[0]}, {shape[1]}, {shape[2]}) to match the image.")
    if not torch.all((mask_image == 0) | (mask_image == 1)):
        raise ValueError("mask_image must be binary: 1 (white) = pixels to generate, 0 (black) = pixels to keep; got"
                         f" values such as {mask_image[(mask_image != 0) & (mask_image != 1)][:3].tolist()}."
                         " Threshold it first (e.g. mask > 0.5).")
    return mask_image


class ScoreSDEInpaintPipeline(ScoreSDEInverseProblemPipeline):
    """Inpainting with an unconditional score model (Song et al. 2021, App. I.2): the paper's imputation, any scheduler.

    Args:
        unet, scheduler: as in :class:`ScoreSDEPipeline`.
    """

    @torch.no_grad()
    def __call__(self, image, mask_image, num_inference_steps: int = None, generator=None, output_type: str = "pil",
                 return_dict: bool = True, callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",)):
        """Fill the masked pixels of ``image``; the kept pixels of the output equal the input's.

        Args:
            image: PIL image(s), uint8 numpy (B, H, W, C) / tensor (B, C, H, W) mapped to the model's range, or a
                floating tensor (B, C, H, W) taken as data in the model's space, unchanged.
            mask_image: 1 (white) = pixels to generate, 0 (black) = pixels to keep; PIL ("L"), numpy (H, W) or
                (B, H, W), or a tensor (H, W), (1 or C, H, W) or (B or 1, 1 or C, H, W). A non-binary mask is refused.
            num_inference_steps, generator, output_type, return_dict, callback_on_step_end,
            callback_on_step_end_tensor_inputs: as in :class:`ScoreSDEPipeline`.
        """
        shape = sample_shape(self.unet)
        data = images_to_data(image, shape, self.scheduler.config.data_centered, name="image")
        mask = _mask_tensor(mask_image, shape, data.shape[0])
        return super().__call__(data, Masking(mask, shape), method="imputation", num_inference_steps=num_inference_steps,
                                generator=generator, output_type=output_type, return_dict=return_dict,
                                callback_on_step_end=callback_on_step_end,
                                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)


class ScoreSDEColorizationPipeline(ScoreSDEInverseProblemPipeline):
    """Colorization with an unconditional colour score model (Song et al. 2021, App. I.3): imputation in the orthogonal
    basis whose first axis is the grey direction; the output's per-pixel channel mean equals the grey input.

    Args:
        unet, scheduler: as in :class:`ScoreSDEPipeline` (a model of 2 or more channels).
    """

    @torch.no_grad()
    def __call__(self, image, num_inference_steps: int = None, generator=None, output_type: str = "pil",
                 return_dict: bool = True, callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",)):
        """Colour a grey image.

        Args:
            image: the grey image, the per-pixel channel mean of the colour image: a floating tensor (B, 1, H, W) in
                the model's data space, or PIL / uint8 grey or colour images (colour ones are turned grey by their
                channel mean).
            num_inference_steps, generator, output_type, return_dict, callback_on_step_end,
            callback_on_step_end_tensor_inputs: as in :class:`ScoreSDEPipeline`.
        """
        channels, height, width = sample_shape(self.unet)
        if channels < 2:
            raise ValueError(f"colorization needs a colour model (2 or more channels); the unet has {channels}.")
        grey = _grey_image(image, (channels, height, width), self.scheduler.config.data_centered)
        return super().__call__(grey, ChannelMean((channels, height, width)), method="imputation",
                                num_inference_steps=num_inference_steps, generator=generator, output_type=output_type,
                                return_dict=return_dict, callback_on_step_end=callback_on_step_end,
                                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)


def _grey_image(image, shape, data_centered):
    """The grey measurement (B, 1, H, W): a floating 1-channel tensor as is; images of 1 or C channels via their mean."""
    if isinstance(image, torch.Tensor) and image.is_floating_point():
        if image.dim() != 4 or image.shape[1] != 1 or tuple(image.shape[2:]) != tuple(shape[1:]):
            raise ValueError(f"image (a floating tensor) must be the grey image (B, 1, {shape[1]}, {shape[2]}), got"
                             f" {tuple(image.shape)}.")
        check_data_range(image, data_centered)
        return image
    for channels in (1, shape[0]):
        try:
            pixels, _ = parse_images(image, (channels, *shape[1:]))
        except ValueError:
            continue
        return pixels_to_data(pixels, 256, data_centered).to(torch.float32).mean(dim=1, keepdim=True)
    raise ValueError(f"image must be a grey or {shape[0]}-channel image of {shape[1]}x{shape[2]} pixels (PIL, uint8"
                     " numpy / tensor), or a floating grey tensor (B, 1, H, W).")
