"""ColdDiffusionPipeline: restoration and generation with a Cold Diffusion restoration network (Bansal et al. 2022)."""

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..pipelines.image_processing import check_output_type, parse_images, pixels_to_data, postprocess, sample_shape
from ..validation import check_integer, check_number
from .scheduling_cold_diffusion import ColdDiffusionScheduler

SYMMETRY_BREAKING_STD = 0.002  # the paper's small noise on the fully degraded start of generation


class ColdDiffusionPipeline(DiffusionPipeline):
    """Restore degraded images, or generate from the fully degraded state, with a restoration network R(x_t, t) ~ x0.

    Args:
        unet (`UNet2DModel`): the restoration network, fed the sample and the integer level t, predicting x0.
        scheduler (:class:`ColdDiffusionScheduler`): the algorithm (1 or 2) and the degradation.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        if not isinstance(scheduler, ColdDiffusionScheduler):
            raise ValueError(f"scheduler must be a ColdDiffusionScheduler, got {type(scheduler).__name__}.")
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, image=None, degradation_level=None, batch_size=1, num_inference_steps=None, initial_means=None,
                 initial_stds=None, symmetry_breaking_std=SYMMETRY_BREAKING_STD, generator=None, output_type="pil",
                 return_dict=True, initial_weights=None):
        """Restore ``image`` from its degradation level, or, without an image, generate from the fully degraded state.

        Generation starts at x_T = D(u, T) + symmetry_breaking_std * z, where u is an image constant per channel whose
        channel values are drawn from the paper's Gaussian model of channel-wise means: one Gaussian (``initial_means``
        and ``initial_stds`` of shape (C,)) or a mixture of K of them (shape (K, C), weights ``initial_weights``, equal
        by default), as fitted to the training data's channel means (``fit_channel_mean_mixture``; a trained pipeline
        stores it in its scheduler's config). Without any, u is the middle of the data range with no spread. For a fade,
        D(u, T) is the constant itself; for a blur, the channel-constant image (blur keeps constants).

        Args:
            image (PIL images, uint8 array / tensor, or floating tensor (B, C, H, W) in the data space, *optional*):
                the degraded images to restore.
            degradation_level (`int`, *optional*): the level t of ``image`` (default T); must be on the schedule
                (any level when ``num_inference_steps`` is left at T). Only with ``image``.
            batch_size (`int`): number of images to generate (without ``image``).
            num_inference_steps (`int`, *optional*): steps from T to 0; default T.
            initial_means, initial_stds (`torch.Tensor` or list, *optional*): the channel-mean model of generation,
                shape (C,) or (K, C); default: the scheduler's (``initial_means`` / ``initial_stds`` in its config, as
                ``diffusers-sde train --degradation`` fits them to the training data), else the middle of the range.
            initial_weights (`torch.Tensor` or list, *optional*): (K,) mixture weights (default: the scheduler's, else
                equal weights).
            symmetry_breaking_std (`float`): std of the noise added to the generation start (default 0.002, the
                paper's); 0 for none.
            generator (`torch.Generator`, *optional*): for the generation start.
            output_type (`str`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (the raw sample).
            return_dict (`bool`): return an ``ImagePipelineOutput`` instead of a tuple.
        """
        scheduler = self.scheduler
        shape = sample_shape(self.unet)
        check_output_type(output_type, shape[0])
        data_centered = scheduler.config.data_centered
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        total = scheduler.num_train_timesteps
        if image is not None:
            if initial_means is not None or initial_stds is not None or initial_weights is not None:
                raise ValueError("initial_means / initial_stds describe the generation start; they do not apply when"
                                 " an image is restored.")
            level = total if degradation_level is None else degradation_level
            level = check_integer("degradation_level", level, minimum=1)
            if level > total:
                raise ValueError(f"degradation_level must be in 1..{total} (the degradation's num_steps), got {level}.")
            matches = (scheduler.timesteps == level).nonzero().flatten().tolist()
            if not matches:
                raise ValueError(f"degradation_level={level} is not on the schedule of num_inference_steps="
                                 f"{scheduler.num_inference_steps}; leave num_inference_steps at its default (every"
                                 " level) or pick a level of scheduler.timesteps.")
            pixels, data = parse_images(image, shape)
            sample = pixels_to_data(pixels, 256, data_centered) if pixels is not None else data
            sample = sample.to(device=self.device, dtype=self.unet.dtype)
            begin = matches[0]
        else:
            if degradation_level is not None:
                raise ValueError("degradation_level only applies to a given image; generation starts at level T.")
            batch_size = check_integer("batch_size", batch_size, minimum=1)
            symmetry_breaking_std = check_number("symmetry_breaking_std", symmetry_breaking_std, minimum=0,
                                                 strict_minimum=False)
            if initial_means is None and initial_stds is None and initial_weights is None:
                initial_means, initial_stds, initial_weights = (
                    scheduler.config.get(name) for name in ("initial_means", "initial_stds", "initial_weights"))
            sample = self._generation_start(batch_size, shape, initial_means, initial_stds, initial_weights,
                                            symmetry_breaking_std, generator, data_centered)
            begin = 0
        scheduler.set_begin_index(begin)
        for t in self.progress_bar(scheduler.timesteps[begin:]):
            levels = t.expand(sample.shape[0]).to(self.device)
            x0_hat = self.unet(scheduler.scale_model_input(sample, t), levels).sample
            sample = scheduler.step(x0_hat, t, sample).prev_sample
        images = postprocess(sample, output_type, data_centered)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _generation_start(self, batch_size, shape, means, stds, weights, noise_std, generator, data_centered):
        """x_T = D(u, T) + noise_std z, u constant per channel with values from the channel-mean model."""
        channels = shape[0]
        dtype = self.unet.dtype
        middle = 0.0 if data_centered else 0.5
        means = torch.full((1, channels), middle) if means is None else torch.as_tensor(means, dtype=torch.float32)
        stds = torch.zeros_like(means) if stds is None else torch.as_tensor(stds, dtype=torch.float32)
        means, stds = (values[None] if values.dim() == 1 else values for values in (means, stds))  # (C,) -> (1, C)
        if means.dim() != 2 or means.shape[1] != channels or stds.shape != means.shape or bool((stds < 0).any()):
            raise ValueError(f"initial_means and initial_stds must both have shape ({channels},) or (K, {channels}) (one"
                             f" value per channel, K mixture components), stds >= 0; got shapes {tuple(means.shape)} and"
                             f" {tuple(stds.shape)}.")
        if weights is None:
            component = torch.randint(len(means), (batch_size,), generator=generator)  # equally weighted mixture
        else:
            weights = torch.as_tensor(weights, dtype=torch.float64)
            if weights.shape != (len(means),) or bool((weights < 0).any()) or not weights.sum() > 0:
                raise ValueError(f"initial_weights must hold K = {len(means)} non-negative weights (one per row of"
                                 f" initial_means), not all 0; got {weights.tolist()}.")
            component = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        z = randn_tensor((batch_size, channels), generator=generator, dtype=torch.float32)
        values = means[component] + stds[component] * z
        constant = values[:, :, None, None].expand(batch_size, channels, *shape[1:]).to(device=self.device, dtype=dtype)
        start = self.scheduler.degrade(constant, self.scheduler.num_train_timesteps)
        noise = randn_tensor(start.shape, generator=generator, device=self.device, dtype=dtype)
        return start + noise_std * noise
