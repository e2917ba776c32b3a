"""ScoreSDEPipeline: unconditional sampling of a score-SDE model with any diffusers-sde scheduler."""

from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..schedulers.scheduling_predictor_corrector import PredictorCorrectorScheduler
from ..schedulers.scheduling_score_sde import ScoreSDESchedulerMixin

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


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
        """
        shape = _sample_shape(self.unet)
        self._check_inputs(batch_size, shape, generator, latents, output_type)
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
