"""The diffusers denoising loop with two conditioning hooks, shared by the conditional pipelines."""


def denoising_loop(pipe, sample, timesteps, generator=None, guidance=None, after_step=None, callback_on_step_end=None,
                   callback_on_step_end_tensor_inputs=("latents",)):
    """Run ``pipe.scheduler`` over ``timesteps`` (all of ``scheduler.timesteps``, or its tail for a run that starts
    mid-schedule); returns ``(sample, NFE)``.

    Args:
        pipe: a pipeline with ``unet`` and a diffusers-sde ``scheduler`` (``set_timesteps`` already called).
        sample (`torch.Tensor`): the sample at the level of ``timesteps[0]``.
        timesteps (`torch.Tensor`): the evaluations to run.
        generator: the steps' noise.
        guidance (`Callable`, *optional*): ``guidance(unet, scheduler, sample, t, level) -> (model_output, correction)``
            replaces the plain network call; ``correction`` (or None) is subtracted from the step's result.
        after_step (`Callable`, *optional*): ``after_step(sample, level) -> sample``, applied to each step's result at the
            noise level it lies at (``output.prev_level``).
        callback_on_step_end, callback_on_step_end_tensor_inputs: diffusers' per-step callback.
    """
    scheduler, unet = pipe.scheduler, pipe.unet
    pipe._num_timesteps = len(timesteps)
    pipe._interrupt = False
    nfe = 0
    for i, t in enumerate(pipe.progress_bar(timesteps)):
        if pipe.interrupt:
            continue
        correction = None
        if guidance is None:
            model_output = unet(scheduler.scale_model_input(sample, t).to(unet.dtype), t).sample
        else:
            model_output, correction = guidance(unet, scheduler, sample, t, scheduler.sample_level)
        output = scheduler.step(model_output.to(sample.dtype), t, sample, generator=generator)
        sample = output.prev_sample if correction is None else output.prev_sample - correction
        if after_step is not None:
            sample = after_step(sample, output.prev_level)
        nfe += 1
        if callback_on_step_end is not None:
            outputs = callback_on_step_end(pipe, i, t, {name: sample for name in callback_on_step_end_tensor_inputs})
            if not isinstance(outputs, dict):
                raise ValueError(
                    f"callback_on_step_end must return a dict (e.g. the callback_kwargs it was given), got"
                    f" {type(outputs).__name__} at step {i}."
                )
            sample = outputs.pop("latents", sample)
    return sample, nfe
