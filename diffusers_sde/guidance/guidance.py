"""Class guidance for score-SDE sampling: classifier guidance (Song et al. 2021, Sec. 5, Eq. 14) and classifier-free
guidance (Ho & Salimans 2021), as one object a pipeline builds once per call and every sampler uses.

- Classifier guidance: score(x, t | y) = score(x, t) + guidance_scale * grad_x log p_t(y | x) (Eq. 14's conditional
  score; guidance_scale = 1 is the exact conditional score when p_t(y | x) is exact, 0 the unconditional model).
- Classifier-free guidance: a class-conditional network whose last class label, ``num_classes``, is the unconditional
  one; output = uncond + guidance_scale * (cond - uncond) (diffusers' convention: 1 is the plain conditional network,
  Ho & Salimans' w is guidance_scale - 1). Every network output is affine in the score with coefficients fixed by
  (x, a, s), and the two weights sum to 1, so mixing outputs is mixing scores, for every ``prediction_type``.

In the diffusers loop the guided score is converted back to the network's output space at the noise level the
scheduler's next step reads (``scheduler.sample_level``), so the schedulers stay untouched; the ``sampler=`` solvers
get a guided ``score(x, t)``.
"""

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..validation import check_number


def classifier_logits(output):
    """The (B, K) logits of a classifier's output: a tensor, an output with a ``logits`` field, or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)):
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the classifier must return logits (B, num_classes) as a tensor or as an output with a"
                        f" `logits` field, got {type(output).__name__}.")
    return logits


def class_label_gradient(classifier, sample, timestep, class_labels):
    """grad_x log p_t(y | x) for each sample's label y (the second term of Eq. 14), by backpropagation through the
    classifier, which is fed ``(sample, timestep)`` exactly as the score network is.

    Args:
        classifier (`Callable`): ``classifier(sample, timestep)`` returning logits (see :func:`classifier_logits`).
        sample (`torch.Tensor`): (B, ...) noisy samples.
        timestep (`torch.Tensor`): the network time, one for the batch or one per sample.
        class_labels (`torch.Tensor`): (B,) int64 labels.
    """
    with torch.enable_grad():
        x = sample.detach().requires_grad_(True)
        logits = classifier_logits(classifier(x.to(getattr(classifier, "dtype", x.dtype)), timestep))
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"the classifier returned logits of shape {tuple(logits.shape)}; expected (batch,"
                             f" num_classes) with batch {x.shape[0]}.")
        if int(class_labels.max()) >= logits.shape[1]:
            raise ValueError(f"class_labels go up to {int(class_labels.max())} but the classifier returns"
                             f" {logits.shape[1]} logits (labels 0..{logits.shape[1] - 1}).")
        log_probability = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
        chosen = log_probability.gather(1, class_labels[:, None].to(logits.device)).sum()
        (gradient,) = torch.autograd.grad(chosen, x)
    return gradient.to(sample.dtype)


def check_class_labels(class_labels, batch_size, num_classes, owner):
    """Class labels as a (batch_size,) int64 tensor: one int for the whole batch, or one per sample.

    Args:
        class_labels (`int`, `list[int]` or `torch.Tensor`): the labels given to ``__call__``.
        batch_size (`int`): the number of samples.
        num_classes (`int` or `None`): labels must lie in 0..num_classes-1 (None: only >= 0 is checked here).
        owner (`str`): what fixes ``num_classes``, for the error message.
    """
    try:
        labels = torch.as_tensor(class_labels)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"class_labels must be an int or a 1-D sequence of ints (one per sample), got"
                         f" {class_labels!r}.") from None
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.dim() > 1:
        raise ValueError(f"class_labels must be an int or a 1-D sequence of ints (one per sample), got {class_labels!r}.")
    labels = labels.to(torch.int64).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(batch_size)
    if labels.numel() != batch_size:
        raise ValueError(f"class_labels has {labels.numel()} labels but batch_size is {batch_size}; pass one int for the"
                         " whole batch or one label per sample.")
    upper = num_classes - 1 if num_classes is not None else None
    bad = labels[(labels < 0) | (labels > upper)] if upper is not None else labels[labels < 0]
    if bad.numel():
        allowed = f"0..{upper} ({owner} has {num_classes} classes)" if upper is not None else ">= 0"
        raise ValueError(f"class_labels must be in {allowed}, got {sorted(set(bad.tolist()))}.")
    return labels.clone()


def _per_sample(labels, size):
    """The labels of a sub-batch of ``size`` samples: solvers that advance only their unfinished samples
    (``gotta_go_fast``) evaluate sub-batches, which is well defined only for one label shared by the batch."""
    if size == len(labels):
        return labels
    if bool((labels == labels[0]).all()):
        return labels[:1].expand(size)
    raise ValueError(f"a sub-batch of {size} of the {len(labels)} samples cannot be matched to per-sample class labels.")


class ClassifierFreeGuidance:
    """A class-conditional network seen as ``model(sample, timestep)``, with classifier-free guidance applied.

    Args:
        unet (`UNet2DModel`): class-conditional, ``num_class_embeds = num_classes + 1``.
        class_labels (`torch.Tensor`): (B,) labels; the unconditional label ``num_classes`` samples the unconditional
            model.
        guidance_scale (`float`): output = uncond + guidance_scale * (cond - uncond).
    """

    def __init__(self, unet, class_labels, guidance_scale):
        self.unet, self.class_labels, self.guidance_scale = unet, class_labels, guidance_scale
        self.unconditional_label = unet.config.num_class_embeds - 1
        self.dtype = unet.dtype

    def __call__(self, sample, timestep, return_dict=True):
        labels = _per_sample(self.class_labels, sample.shape[0]).to(sample.device)
        unconditional = torch.full_like(labels, self.unconditional_label)
        if self.guidance_scale == 1 or bool((labels == self.unconditional_label).all()):
            output = self.unet(sample, timestep, class_labels=labels).sample
        elif self.guidance_scale == 0:
            output = self.unet(sample, timestep, class_labels=unconditional).sample
        else:  # one network call on the doubled batch: [conditional; unconditional]
            timestep = torch.as_tensor(timestep, device=sample.device)
            both_times = timestep.repeat(2) if timestep.dim() else timestep
            both = self.unet(torch.cat([sample, sample]), both_times,
                             class_labels=torch.cat([labels, unconditional])).sample
            conditional, unconditional_output = both.chunk(2)
            output = unconditional_output + self.guidance_scale * (conditional - unconditional_output)
        return UNet2DOutput(sample=output) if return_dict else (output,)


class Guidance:
    """What one guided sampling run needs: the network to call and, for classifier guidance, the classifier term.

    Built by :func:`resolve_guidance`; ``model`` replaces the UNet in the sampling loop and in ``score_function``.

    Args:
        model (`Callable`): ``model(sample, timestep)`` returning ``.sample``: the UNet or its CFG wrapper.
        classifier (`Callable`, *optional*): the noise-conditional classifier; ``None`` without classifier guidance.
        class_labels (`torch.Tensor`, *optional*): (B,) labels of the run (of the classifier term or of the
            class-conditional network); ``None`` for an unconditional model.
        guidance_scale (`float`): weight of the classifier term.
    """

    def __init__(self, model, classifier=None, class_labels=None, guidance_scale=1.0):
        self.model, self.classifier, self.class_labels, self.guidance_scale = (
            model, classifier, class_labels, guidance_scale)

    @property
    def uses_classifier(self):
        return self.classifier is not None and self.guidance_scale != 0

    def _gradient(self, x, timestep):
        labels = _per_sample(self.class_labels, x.shape[0])
        return self.guidance_scale * class_label_gradient(self.classifier, x, timestep, labels)

    def guide_output(self, model_output, sample, timestep, parameterization, level):
        """The network output whose score is score + guidance_scale * grad log p_t(y | x) (Eq. 14), in the network's
        output space at ``level`` (a :class:`NoiseLevel`, the one the scheduler's next step reads)."""
        if not self.uses_classifier:
            return model_output
        score = parameterization.score(model_output, sample, level.a, level.s)
        score = score + self._gradient(sample, timestep)
        return parameterization.output_from_score(score, sample, level.a, level.s)

    def score_function(self, parameterization):
        """``score(x, t)`` of the guided model for the solvers (see :func:`~diffusers_sde.parameterization.score_function`)."""
        from ..parameterization import score_function

        score = score_function(self.model, parameterization)
        if not self.uses_classifier:
            return score
        parameterization = getattr(parameterization, "parameterization", parameterization)

        def guided(x, t):
            time = torch.as_tensor(t, dtype=torch.float64, device=x.device)
            timestep = parameterization.model_time(time.reshape(()) if time.numel() == 1 else time).to(torch.float32)
            return score(x, t) + self._gradient(x, timestep)  # Eq. 14

        return guided


def class_embedding_classes(unet):
    """K of a class-conditional UNet (``num_class_embeds = K + 1``, label K unconditional), or None."""
    config = getattr(unet, "config", {})
    num_class_embeds = config.get("num_class_embeds") if hasattr(config, "get") else None
    if num_class_embeds is None:
        return None
    if config.get("class_embed_type") is not None or num_class_embeds < 2:
        raise ValueError(f"the unet's class embedding (class_embed_type={config.get('class_embed_type')!r},"
                         f" num_class_embeds={num_class_embeds}) is not a classifier-free guidance one: that needs"
                         " class_embed_type=None and num_class_embeds = num_classes + 1 >= 2 (the last label is the"
                         " unconditional one).")
    return num_class_embeds - 1


def resolve_guidance(unet, classifier, class_labels, guidance_scale, batch_size):
    """Check ``class_labels`` and ``guidance_scale`` against the pipeline's networks and build the :class:`Guidance`.

    Args:
        unet: the score network; class-conditional (``num_class_embeds`` set) for classifier-free guidance.
        classifier: the pipeline's classifier, or None.
        class_labels (`int`, `list[int]`, `torch.Tensor` or `None`): the requested classes.
        guidance_scale (`float`): >= 0.
        batch_size (`int`): number of samples.
    """
    guidance_scale = check_number("guidance_scale", guidance_scale, minimum=0, strict_minimum=False)
    num_classes = class_embedding_classes(unet)
    if classifier is None and num_classes is None:
        if class_labels is not None or guidance_scale != 1:
            given = "class_labels" if class_labels is not None else f"guidance_scale={guidance_scale:g}"
            raise ValueError(f"{given} was given, but this pipeline has neither a classifier (pipe.classifier is None)"
                             " nor a class-conditional unet (unet.config.num_class_embeds is None): nothing to guide"
                             " with. Add a classifier (ScoreSDEPipeline(unet, scheduler, classifier=...)) or use a"
                             " model trained with --num-classes.")
        return Guidance(unet)
    if class_labels is None:
        if guidance_scale != 1:
            raise ValueError(f"guidance_scale={guidance_scale:g} needs class_labels (the classes to guide towards);"
                             " without them the model samples unconditionally.")
        if num_classes is None:
            return Guidance(unet)
        labels = torch.full((batch_size,), num_classes)
        return Guidance(ClassifierFreeGuidance(unet, labels, 1.0), class_labels=labels)
    if classifier is not None and num_classes is not None:
        raise ValueError("class_labels is ambiguous here: the pipeline has both a classifier and a class-conditional"
                         " unet. Keep one: pipe.classifier = None for classifier-free guidance, or an unconditional unet.")
    if num_classes is not None:
        labels = check_class_labels(class_labels, batch_size, num_classes, "the class-conditional unet")
        return Guidance(ClassifierFreeGuidance(unet, labels, guidance_scale), class_labels=labels)
    classifier_classes = getattr(getattr(classifier, "config", {}), "get", lambda name: None)("num_classes")
    labels = check_class_labels(class_labels, batch_size, classifier_classes, "the classifier")
    return Guidance(unet, classifier, labels, guidance_scale)
