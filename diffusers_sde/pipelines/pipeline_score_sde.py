"""ScoreSDEPipeline: sampling of a score-SDE model with any diffusers-sde scheduler, or with one of the solvers that
choose their own steps (``sampler=``), unconditionally or guided towards classes (a noise-conditional classifier, or a
class-conditional network with classifier-free guidance). Likelihood, encode and decode come from
:class:`~diffusers_sde.pipelines.probability_flow.ProbabilityFlowMixin`."""

import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import deprecate, logging
from diffusers.utils.torch_utils import randn_tensor

from ..guidance.guidance import resolve_guidance
from ..schedulers.scheduling_predictor_corrector import PredictorCorrectorScheduler
from ..schedulers.scheduling_score_sde import ScoreSDESchedulerMixin
from ..solvers.gotta_go_fast import check_gotta_go_fast_arguments, sample_gotta_go_fast
from ..solvers.noise_removal import remove_noise
from ..solvers.reverse_sde_torchsde import check_torchsde_arguments, sample_reverse_sde
from ..validation import check_integer
from .denoising_loop import denoising_loop
from .image_processing import check_output_type, postprocess, sample_shape
from .outputs import ScoreSDEPipelineOutput
from .probability_flow import ProbabilityFlowMixin
from .progress import time_progress

logger = logging.get_logger(__name__)

SAMPLERS = ("torchsde", "gotta_go_fast", "adaptive_ode")  # __call__(sampler=...); None runs the scheduler
_OLD_SOLVER_NAMES = {"torchsde": "torchsde", "gotta_go_fast": "gotta_go_fast", "ode": "adaptive_ode"}


class ScoreSDEPipeline(ProbabilityFlowMixin, DiffusionPipeline):
    """Sample a score-based model (Song et al. 2021) with a diffusers-sde scheduler or solver; score it and encode or
    decode it with the probability-flow ODE (:meth:`log_likelihood`, :meth:`encode`, :meth:`decode`).

    Args:
        unet (`UNet2DModel` or any `ModelMixin` with ``in_channels`` / ``sample_size`` in its config): the network; its
            output and time input follow the scheduler's ``prediction_type`` and ``timestep_type``.
        scheduler: a diffusers-sde scheduler. A stock ``ScoreSdeVeScheduler`` or linear-beta DDPM-family scheduler
            (the stock score-SDE and DDPM repos) is mapped to the equivalent :class:`PredictorCorrectorScheduler`, with
            a logged message; any other diffusers scheduler is refused with the reason. diffusers' discrete schedulers
            do not run here: swap in one of ours with ``XScheduler.from_config(pipe.scheduler.config)``.
        classifier (`ModelMixin`, *optional*): a noise-conditional classifier for classifier guidance, fed exactly what
            the unet is fed, ``classifier(sample, timestep)``, returning logits (B, num_classes) as a tensor or as an
            output with a ``logits`` field (e.g. :class:`~diffusers_sde.guidance.NoiseConditionalClassifier`, trained
            by ``diffusers-sde train-classifier``). Saved and loaded with the pipeline.
    """

    model_cpu_offload_seq = "classifier->unet"
    _optional_components = ["classifier"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet, scheduler, classifier=None):
        super().__init__()
        if not isinstance(scheduler, ScoreSDESchedulerMixin):
            mapped = PredictorCorrectorScheduler.from_config(scheduler.config)
            logger.warning(
                f"ScoreSDEPipeline runs diffusers-sde schedulers: the given {type(scheduler).__name__} was mapped to"
                f" PredictorCorrectorScheduler(sde_type={mapped.config.sde_type!r}, predictor={mapped.predictor!r},"
                f" corrector={mapped.corrector!r}). Swap samplers with e.g."
                " ExponentialIntegratorScheduler.from_config(pipe.scheduler.config)."
            )
            scheduler = mapped
        self.register_modules(unet=unet, scheduler=scheduler, classifier=classifier)

    @property
    def num_timesteps(self):
        """Network evaluations of the last scheduler run (``len(scheduler.timesteps)``), as diffusers pipelines report."""
        return self._num_timesteps

    @property
    def interrupt(self):
        """Set ``pipe._interrupt = True`` (e.g. from a callback) to skip the remaining steps of a run."""
        return self._interrupt

    def _check_scheduler(self):
        if not isinstance(self.scheduler, ScoreSDESchedulerMixin):
            raise ValueError(
                f"ScoreSDEPipeline needs a diffusers-sde scheduler, got {type(self.scheduler).__name__}. diffusers'"
                " discrete schedulers do not speak the SDE; use PredictorCorrectorScheduler, ProbabilityFlowScheduler,"
                " ExponentialIntegratorScheduler (DPM-Solver++) or EDMHeunScheduler, e.g."
                " pipe.scheduler = ExponentialIntegratorScheduler.from_config(pipe.scheduler.config)."
            )

    def _check_inputs(self, batch_size, shape, generator, latents, output_type, callback_on_step_end,
                      callback_on_step_end_tensor_inputs, sampler):
        check_output_type(output_type, self.image_shape()[0])
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"generator is a list of {len(generator)} generators but batch_size is {batch_size}; pass one per sample."
            )
        if latents is not None and tuple(latents.shape) != (batch_size, *shape):
            raise ValueError(
                f"latents has shape {tuple(latents.shape)}, expected {(batch_size, *shape)}"
                " (batch_size, unet in_channels, sample_size)."
            )
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs has {unknown}, not among this pipeline's tensors"
                f" {self._callback_tensor_inputs}."
            )
        if callback_on_step_end is not None and sampler is not None:
            raise ValueError(
                f"callback_on_step_end runs once per scheduler step; sampler={sampler!r} chooses its own steps and does"
                " not call it. Use a scheduler (sampler=None) to get per-step callbacks."
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
        sampler: str = None,
        method: str = None,
        rtol: float = None,
        atol: float = None,
        max_nfe: int = 10_000,
        solver: str = None,
        class_labels=None,
        guidance_scale: float = 1.0,
    ):
        """Generate samples.

        Args:
            batch_size (`int`): number of samples.
            num_inference_steps (`int`, *optional*): grid size; default: the scheduler's
                ``default_num_inference_steps`` (documented per scheduler). The number of network evaluations also
                counts corrector steps and Heun's second evaluations (``nfe`` of the output).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): a list gives each sample its own
                noise, so a sample does not depend on the batch it is drawn in (every sampler except the ``langevin``
                corrector with ``langevin_norm="batch"``, which couples the batch; see docs/core.md).
            latents (`torch.Tensor`, *optional*): a (B, C, H, W) prior sample to start from (already scaled by the
                prior's std); drawn from the prior when omitted.
            output_type (`str`): ``"pil"``, ``"np"``, ``"pt"`` (images in [0, 1]) or ``"latent"`` (raw final sample).
            return_dict (`bool`): return a :class:`ScoreSDEPipelineOutput` instead of a tuple ``(images, nfe)``.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                ``f(pipe, step, timestep, callback_kwargs) -> dict``, called after each network evaluation with the
                tensors named in ``callback_on_step_end_tensor_inputs``; a returned ``"latents"`` replaces the sample.
                Scheduler runs only (``sampler=None``).
            callback_on_step_end_tensor_inputs (`list[str]`): tensors passed to the callback, from
                ``pipe._callback_tensor_inputs``.
            sampler (`str`, *optional*): ``None`` (default) runs the scheduler in the diffusers loop. Otherwise the
                scheduler only supplies the SDE, the parameterization and ``sampling_eps``, and the sample comes from
                ``"torchsde"`` (reverse SDE via ``torchsde.sdeint``: ``num_inference_steps`` fixed steps, default the
                scheduler's ``num_train_timesteps``, or adaptive step doubling when ``rtol`` or ``atol`` is given),
                ``"gotta_go_fast"`` (the adaptive SDE solver of Jolicoeur-Martineau et al. 2021, per-sample steps) or
                ``"adaptive_ode"`` (the probability-flow ODE with an adaptive Runge-Kutta method). All end with the
                noise removal.
            method (`str`, *optional*): ``sampler="torchsde"``: ``euler`` (default), ``milstein``, ``heun``,
                ``midpoint`` or ``srk``; ``sampler="adaptive_ode"``: a torchdiffeq method (default ``dopri5``, RK45).
            rtol (`float`), atol (`float`), *optional*: tolerances, > 0. Defaults: ``gotta_go_fast`` 0.01 / 0.0078
                (the paper's), ``adaptive_ode`` 1e-5 / 1e-5, ``torchsde`` 0.01 / 0.01 when adaptive.
            max_nfe (`int`): an adaptive solve stops with ``MaxNFEExceededError`` past this many network evaluations.
            solver (`str`, *optional*): deprecated name of ``sampler`` (``"ode"`` is now ``"adaptive_ode"``).
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*): the class of each sample (one int for the
                whole batch, or ``batch_size`` labels), in 0..num_classes-1. Needs a ``classifier`` or a
                class-conditional unet (``num_class_embeds = num_classes + 1``, whose last label is the unconditional
                one; without ``class_labels`` such a unet samples unconditionally). ``sampler="gotta_go_fast"``
                advances samples separately and takes one label for the batch.
            guidance_scale (`float`): >= 0. With a classifier: score + guidance_scale * grad_x log p_t(y | x) (Song et
                al. 2021, Eq. 14; 1 is the conditional score of an exact classifier, 0 the unconditional model). With a
                class-conditional unet (classifier-free guidance, Ho & Salimans 2021): output = uncond +
                guidance_scale * (cond - uncond), diffusers' convention, 1 being the plain conditional network; other
                values run the network on a doubled batch (``nfe`` still counts steps of the batch).
        """
        if solver is not None:
            if sampler is not None:
                raise ValueError(f"Pass sampler={sampler!r} only; solver={solver!r} is its deprecated name.")
            deprecate("solver", "1.0.0", f"pipe(solver={solver!r}) is now pipe(sampler="
                      f"{_OLD_SOLVER_NAMES.get(solver, solver)!r}).", standard_warn=False)
            sampler = _OLD_SOLVER_NAMES.get(solver, solver)
        self._check_scheduler()
        batch_size = check_integer("batch_size", batch_size, minimum=1)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        shape = sample_shape(self.unet)
        self._check_inputs(batch_size, shape, generator, latents, output_type, callback_on_step_end,
                           callback_on_step_end_tensor_inputs, sampler)
        _check_sampler(sampler, method, rtol, atol, num_inference_steps, max_nfe)
        guidance = resolve_guidance(self.unet, self.classifier, class_labels, guidance_scale, batch_size)
        labels = guidance.class_labels
        if sampler == "gotta_go_fast" and labels is not None and not bool((labels == labels[0]).all()):
            raise ValueError(f"sampler='gotta_go_fast' advances each sample on its own and evaluates sub-batches, so it"
                             f" takes one class label for the batch; got class_labels {labels.tolist()}. Draw one class"
                             " per call, or use another sampler.")
        device = self._execution_device
        # The SDE math runs in float32 or better whatever the network's dtype.
        sample_dtype = torch.promote_types(latents.dtype, torch.float32) if latents is not None else torch.float32
        if latents is None:
            latents = randn_tensor((batch_size, *shape), generator=generator, device=device, dtype=sample_dtype)
            latents = latents * self.scheduler.init_noise_sigma
        sample = latents.to(device=device, dtype=sample_dtype)
        self._interrupt = False
        self._num_timesteps = None

        if sampler is not None:
            sample, nfe = self._sample_with(sampler, sample, num_inference_steps, generator, method, rtol, atol, max_nfe,
                                            guidance)
        else:
            sample, nfe = self._run_scheduler(sample, num_inference_steps, generator, callback_on_step_end,
                                              callback_on_step_end_tensor_inputs, guidance)
        return self._output(sample, nfe, output_type, return_dict)

    def image_shape(self):
        """(C, H, W) of the images the pipeline returns: the unet's samples (a latent pipeline's are decoded)."""
        return sample_shape(self.unet)

    def _output(self, sample, nfe, output_type, return_dict):
        """The end of every sampling call: offload hooks freed, the final sample as images, the output."""
        self.maybe_free_model_hooks()
        images = self._to_images(sample, output_type)
        return ScoreSDEPipelineOutput(images=images, nfe=nfe) if return_dict else (images, nfe)

    def _to_images(self, sample, output_type):
        """Where a final sample becomes images (a latent pipeline decodes it here)."""
        return postprocess(sample, output_type, self.scheduler.config.data_centered)

    def _run_scheduler(self, sample, num_inference_steps, generator, callback_on_step_end, tensor_inputs, guidance):
        """The diffusers denoising loop over ``scheduler.timesteps``, with ``guidance``'s network and classifier term;
        returns (sample, NFE)."""
        self.scheduler.set_timesteps(num_inference_steps, device=sample.device)

        def guided(unet, scheduler, x, t, level):
            output = guidance.model(scheduler.scale_model_input(x, t).to(unet.dtype), t).sample.to(x.dtype)
            # The classifier term goes in as score, converted at the level the step reads the output at.
            return guidance.guide_output(output, x, t, scheduler.parameterization, level), None

        return denoising_loop(self, sample, self.scheduler.timesteps, generator, guided,
                              callback_on_step_end=callback_on_step_end,
                              callback_on_step_end_tensor_inputs=tensor_inputs)

    # --- samplers that choose their own steps (sampler=...) ---------------------------------------------------
    def _sample_with(self, sampler, sample, num_inference_steps, generator, method, rtol, atol, max_nfe, guidance):
        """Sample from the prior sample ``sample`` with an adaptive or torchsde solver and ``guidance``'s score;
        returns (sample, NFE)."""
        sde, eps = self.scheduler.sde, self.scheduler.config.sampling_eps
        with time_progress(self, guidance.score_function(self.scheduler), 1.0, eps, sampler) as score:
            if sampler == "gotta_go_fast":
                return sample_gotta_go_fast(sde, score, sample, eps, rtol=rtol, atol=atol, generator=generator,
                                            max_nfe=max_nfe)
            if sampler == "torchsde":
                return sample_reverse_sde(
                    sde, score, sample, eps, method=method or "euler",
                    num_steps=num_inference_steps or self.scheduler.config.num_train_timesteps,
                    adaptive=rtol is not None or atol is not None, rtol=1e-2 if rtol is None else rtol,
                    atol=1e-2 if atol is None else atol, generator=generator, max_nfe=max_nfe,
                )
            ode = self._probability_flow_ode(1e-5 if rtol is None else rtol, 1e-5 if atol is None else atol,
                                             method or "dopri5", max_nfe, score)
            result = ode.decode(sample, eps=eps)
            x = result.sample
            return remove_noise(sde, x, score(x, torch.tensor(eps, dtype=x.dtype)), eps), result.nfe + 1


def _check_sampler(sampler, method, rtol, atol, num_inference_steps, max_nfe):
    if sampler is None:
        given = {name: value for name, value in (("method", method), ("rtol", rtol), ("atol", atol)) if value is not None}
        if given:
            raise ValueError(f"{given} only apply with sampler in {SAMPLERS}, got sampler=None (the scheduler runs).")
        return
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be None or one of {SAMPLERS}, got {sampler!r}.")
    if sampler == "torchsde":
        check_torchsde_arguments(method or "euler", num_inference_steps, rtol, atol, None)
    elif sampler == "gotta_go_fast":
        if method is not None or num_inference_steps is not None:
            raise ValueError(
                f"sampler='gotta_go_fast' chooses its own steps and has no method; got method={method!r},"
                f" num_inference_steps={num_inference_steps!r} (leave both None; set rtol / atol instead)."
            )
        check_gotta_go_fast_arguments(rtol, atol, max_nfe=max_nfe)
    elif num_inference_steps is not None:
        raise ValueError(f"sampler='adaptive_ode' chooses its own steps; got num_inference_steps={num_inference_steps!r}.")
