"""DDGANPipeline: T generator evaluations, each followed by a draw of the exact posterior (Xiao et al. 2022, Alg. 1)."""

import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from ..pipelines.image_processing import check_output_type, postprocess, sample_shape
from ..pipelines.outputs import ScoreSDEPipelineOutput
from ..validation import check_integer
from .scheduling_ddgan import DDGANScheduler


class DDGANPipeline(DiffusionPipeline):
    """Sample a Denoising Diffusion GAN: from x_T ~ N(0, prior_std^2 I), for k = T..1, predict x_0 = G(x_k, z, t_k) with
    a fresh z ~ N(0, I) and draw x_{k-1} from q(x_{k-1} | x_k, x_0); x_0 is the last prediction.

    Args:
        generator (:class:`DDGANGenerator`): the x_0 predictor (``diffusers-sde train-ddgan`` saves its EMA weights).
        scheduler (:class:`DDGANScheduler` or `dict`): the chain, or a config to build one from.
    """

    model_cpu_offload_seq = "generator"

    def __init__(self, generator, scheduler):
        super().__init__()
        if isinstance(scheduler, dict):
            scheduler = DDGANScheduler.from_config(scheduler)
        if not isinstance(scheduler, DDGANScheduler):
            raise ValueError(f"scheduler must be a DDGANScheduler (or its config), got {type(scheduler).__name__}.")
        self.register_modules(generator=generator, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator=None, latents: torch.Tensor = None, output_type: str = "pil",
                 return_dict: bool = True):
        """Generate samples with ``scheduler.num_timesteps`` generator evaluations.

        Args:
            batch_size (`int`): number of samples.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the random draws (x_T, each step's z
                and posterior noise); a list gives each sample its own, so a sample does not depend on its batch.
            latents (`torch.Tensor`, *optional*): x_T, (B, C, H, W); drawn from the prior when omitted.
            output_type (`str`): ``"pil"``, ``"np"``, ``"pt"`` (images in [0, 1]) or ``"latent"`` (the raw sample).
            return_dict (`bool`): return a :class:`~diffusers_sde.ScoreSDEPipelineOutput` (``images``, ``nfe``)
                instead of a tuple.
        """
        batch_size = check_integer("batch_size", batch_size, minimum=1)
        shape = sample_shape(self.generator)
        check_output_type(output_type, shape[0])
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"generator is a list of {len(generator)} generators but batch_size is {batch_size}; pass"
                             " one per sample.")
        if latents is not None and tuple(latents.shape) != (batch_size, *shape):
            raise ValueError(f"latents has shape {tuple(latents.shape)}, expected {(batch_size, *shape)}.")
        device, dtype = self._execution_device, torch.float32
        if latents is None:
            latents = randn_tensor((batch_size, *shape), generator=generator, device=device, dtype=dtype)
            latents = latents * self.scheduler.init_noise_sigma
        sample = latents.to(device=device, dtype=dtype)
        self.scheduler.set_timesteps(device=device)
        for level in self.progress_bar(self.scheduler.timesteps.tolist()):
            latent = randn_tensor((batch_size, self.generator.config.latent_dim), generator=generator, device=device,
                                  dtype=dtype)
            time = self.scheduler.model_time(level).to(device)
            prediction = self.generator(sample.to(self.generator.dtype), time, latent).sample.to(dtype)
            sample = self.scheduler.step(prediction, level, sample, generator=generator).prev_sample
        self.maybe_free_model_hooks()
        images = postprocess(sample, output_type, self.scheduler.config.data_centered)
        if not return_dict:
            return (images, self.scheduler.num_timesteps)
        return ScoreSDEPipelineOutput(images=images, nfe=self.scheduler.num_timesteps)
