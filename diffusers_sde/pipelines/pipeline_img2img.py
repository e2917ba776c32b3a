"""SDEdit (Meng et al. 2022): noise an image part of the way up the schedule, then run the rest of it back down."""

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..validation import check_number
from .image_processing import images_to_data, sample_shape
from .denoising_loop import denoising_loop
from .pipeline_score_sde import ScoreSDEPipeline


class ScoreSDEImg2ImgPipeline(ScoreSDEPipeline):
    """Image-to-image translation by SDEdit with any diffusers-sde scheduler, in diffusers' img2img convention.

    ``strength`` is the share of the schedule that is run: the input is forward-noised (the SDE's exact marginal) to
    the grid time ``timesteps[t_start * order]`` with t_start = N - round(N strength), and the scheduler runs from there;
    strength 1 starts from the top of the schedule (from a forward-noised image, not from pure prior noise),
    strength -> 0 returns nearly the input.

    Args:
        unet, scheduler: as in :class:`ScoreSDEPipeline`.
    """

    @torch.no_grad()
    def __call__(self, image, strength: float = 0.8, num_inference_steps: int = None, generator=None,
                 output_type: str = "pil", return_dict: bool = True, callback_on_step_end=None,
                 callback_on_step_end_tensor_inputs=("latents",)):
        """Edit ``image``.

        Args:
            image: PIL image(s), uint8 numpy (B, H, W, C) / tensor (B, C, H, W) mapped to the model's range, or a
                floating tensor (B, C, H, W) taken as data in the model's space.
            strength (`float`): in (0, 1]; how much of the schedule runs (diffusers' ``strength``).
            num_inference_steps (`int`, *optional*): the full schedule's grid size (default: the scheduler's own); about
                ``strength`` of it runs.
            generator, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs: as in
                :class:`ScoreSDEPipeline`.
        """
        self._check_scheduler()
        strength = check_number("strength", strength, minimum=0, maximum=1)
        shape = sample_shape(self.unet)
        data = images_to_data(image, shape, self.scheduler.config.data_centered, name="image")
        self._check_inputs(data.shape[0], shape, generator, None, output_type, callback_on_step_end,
                           callback_on_step_end_tensor_inputs, None)
        scheduler, device = self.scheduler, self._execution_device
        scheduler.set_timesteps(num_inference_steps, device=device)
        steps = scheduler.num_inference_steps
        run = min(int(round(steps * strength)), steps)
        if run < 1:
            raise ValueError(f"strength={strength} with {steps} inference steps runs no step; raise strength or"
                             " num_inference_steps.")
        begin = (steps - run) * scheduler.order
        timesteps = scheduler.timesteps[begin:]
        scheduler.set_begin_index(begin)
        data = data.to(device=device, dtype=torch.float32)
        noise = randn_tensor(data.shape, generator=generator, device=device, dtype=data.dtype)
        sample = scheduler.add_noise(data, noise, timesteps[:1])
        sample, nfe = denoising_loop(self, sample, timesteps, generator, callback_on_step_end=callback_on_step_end,
                                     callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
        return self._output(sample, nfe, output_type, return_dict)
