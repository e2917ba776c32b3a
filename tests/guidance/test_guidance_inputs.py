"""Guidance inputs: bad labels and scales are refused naming the argument; the classifier travels with the pipeline;
classifier-free guidance on a real class-conditional UNet2DModel mixes its two outputs as diffusers does."""

import json
import os

import pytest
import torch
from diffusers import DiffusionPipeline, ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from testing_utils import MIXTURE_SHAPE

from diffusers_sde import (
    ConditionalGaussianMixtureModel,
    ExponentialIntegratorScheduler,
    GaussianMixtureClassifier,
    GaussianMixtureModel,
    NoiseConditionalClassifier,
    PredictorCorrectorScheduler,
    ScoreSDEPipeline,
    pretrained_model_path,
)


def _scheduler():
    return ExponentialIntegratorScheduler(sde_type="vp", prediction_type="score", timestep_type="continuous")


def _pipe(mixture, kind):
    scheduler = _scheduler()
    channels, size = MIXTURE_SHAPE[:2]
    if kind == "plain":
        pipe = ScoreSDEPipeline(unet=GaussianMixtureModel.for_scheduler(mixture, scheduler, channels, size), scheduler=scheduler)
    elif kind == "classifier":
        pipe = ScoreSDEPipeline(unet=GaussianMixtureModel.for_scheduler(mixture, scheduler, channels, size), scheduler=scheduler,
                                classifier=GaussianMixtureClassifier.for_scheduler(mixture, scheduler, channels, size))
    else:
        pipe = ScoreSDEPipeline(unet=ConditionalGaussianMixtureModel.for_scheduler(mixture, scheduler, channels, size),
                                scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _TwoClassLogits(ModelMixin, ConfigMixin):
    """A classifier with no ``num_classes`` in its config: its 2 logits are only seen when it is called."""

    @register_to_config
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(16, 2))

    def forward(self, sample, timestep):
        return sample.flatten(1) @ self.weight.to(sample.dtype)


@pytest.mark.parametrize(
    "kind, arguments, message",
    [
        ("free", dict(class_labels=3), r"class_labels must be in 0..2 \(the class-conditional unet has 3 classes\), got \[3\]"),
        ("classifier", dict(class_labels=[0, 7, 1]), r"class_labels must be in 0..2 \(the classifier has 3 classes\), got \[7\]"),
        ("free", dict(class_labels=-1), r"class_labels must be in 0..2 .*got \[-1\]"),
        ("free", dict(class_labels=[0, 1]), "class_labels has 2 labels but batch_size is 3"),
        ("classifier", dict(class_labels=torch.tensor([0.0, 1.0, 2.0])), "class_labels must be an int or a 1-D sequence"),
        ("free", dict(class_labels="three"), "class_labels must be an int or a 1-D sequence of ints"),
        ("plain", dict(guidance_scale=3.0), r"guidance_scale=3 was given, but this pipeline has neither a classifier"),
        ("plain", dict(class_labels=1), "class_labels was given, but this pipeline has neither a classifier"),
        ("free", dict(guidance_scale=2.0), "guidance_scale=2 needs class_labels"),
        ("free", dict(class_labels=1, guidance_scale=-1.0), "guidance_scale must be a finite number >= 0, got -1.0"),
        ("classifier", dict(class_labels=[0, 1, 2], sampler="gotta_go_fast", num_inference_steps=None),
         "takes one class label for the batch"),
    ],
)
def test_bad_guidance_input_is_refused_naming_the_argument(mixture, kind, arguments, message):
    with pytest.raises(ValueError, match=message):
        _pipe(mixture, kind)(**{"batch_size": 3, "num_inference_steps": 2, "output_type": "latent", **arguments})


def test_classifier_with_fewer_classes_than_the_labels_is_refused(mixture):
    pipe = _pipe(mixture, "plain")
    pipe.register_modules(classifier=_TwoClassLogits())  # learns its class count only from the logits
    with pytest.raises(ValueError, match=r"class_labels go up to 2 but the classifier returns 2 logits \(labels 0..1\)"):
        pipe(batch_size=2, num_inference_steps=2, class_labels=[1, 2], output_type="latent")
    pipe.register_modules(classifier=NoiseConditionalClassifier(in_channels=1, sample_size=4, num_classes=2,
                                                                block_out_channels=(8,), norm_num_groups=4))
    with pytest.raises(ValueError, match=r"class_labels must be in 0..1 \(the classifier has 2 classes\), got \[2\]"):
        pipe(batch_size=2, num_inference_steps=2, class_labels=2, output_type="latent")


def test_classifier_and_class_conditional_unet_together_are_ambiguous(mixture):
    pipe = _pipe(mixture, "free")
    pipe.register_modules(classifier=GaussianMixtureClassifier.for_scheduler(mixture, pipe.scheduler, *MIXTURE_SHAPE[:2]))
    with pytest.raises(ValueError, match="both a classifier and a class-conditional unet"):
        pipe(batch_size=2, num_inference_steps=2, class_labels=1, output_type="latent")


def _tiny_conditional_unet(num_classes=3):
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=num_classes + 1)


def test_classifier_free_guidance_mixes_the_real_unets_two_outputs():
    unet = _tiny_conditional_unet()
    torch.nn.init.normal_(unet.class_embedding.weight)  # make the labels matter
    from diffusers_sde.guidance import resolve_guidance

    x, t, labels, scale = torch.randn(4, 1, 8, 8), torch.tensor(500.0), torch.tensor([0, 1, 2, 1]), 3.0
    guided = resolve_guidance(unet, None, labels, scale, batch_size=4).model(x, t).sample
    with torch.no_grad():
        conditional = unet(x, t, class_labels=labels).sample
        unconditional = unet(x, t, class_labels=torch.full((4,), 3)).sample
    assert not torch.allclose(conditional, unconditional)
    torch.testing.assert_close(guided, unconditional + scale * (conditional - unconditional), rtol=1e-4, atol=1e-5)


def test_class_conditional_unet_samples_with_and_without_labels():
    pipe = ScoreSDEPipeline(unet=_tiny_conditional_unet(), scheduler=PredictorCorrectorScheduler(sde_type="vp"))
    pipe.set_progress_bar_config(disable=True)
    conditional = pipe(batch_size=2, num_inference_steps=3, class_labels=[0, 2], guidance_scale=4.0, output_type="np")
    unconditional = pipe(batch_size=2, num_inference_steps=3, output_type="np")  # the unconditional label, 3
    assert conditional.images.shape == unconditional.images.shape == (2, 8, 8, 1)


def test_classifier_is_saved_and_loaded_with_the_pipeline(tmp_path):
    pipe = ScoreSDEPipeline.from_pretrained(pretrained_model_path("digits-vp"))
    assert pipe.classifier is None  # a folder saved before the classifier existed loads without one
    torch.manual_seed(0)
    classifier = NoiseConditionalClassifier(in_channels=1, sample_size=8, num_classes=10, block_out_channels=(8, 16),
                                            norm_num_groups=4)
    pipe.register_modules(classifier=classifier)
    pipe.save_pretrained(tmp_path / "guided")
    with open(os.path.join(tmp_path / "guided", "model_index.json")) as handle:
        assert json.load(handle)["classifier"] == ["diffusers_sde", "NoiseConditionalClassifier"]
    for loader in (ScoreSDEPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path / "guided")
        assert type(loaded).__name__ == "ScoreSDEPipeline"
        for name, value in classifier.state_dict().items():
            assert torch.equal(loaded.classifier.state_dict()[name], value), name
    ScoreSDEPipeline(unet=pipe.unet, scheduler=pipe.scheduler).save_pretrained(tmp_path / "plain")
    assert ScoreSDEPipeline.from_pretrained(tmp_path / "plain").classifier is None


@pytest.mark.parametrize("time_embedding_type, timestep", [("positional", torch.tensor([10.0, 500.0])),
                                                            ("fourier", torch.tensor(0.3))])
def test_noise_conditional_classifier_takes_the_unets_time_inputs(time_embedding_type, timestep):
    classifier = NoiseConditionalClassifier(in_channels=3, sample_size=8, num_classes=5, block_out_channels=(8, 16),
                                            norm_num_groups=4, time_embedding_type=time_embedding_type)
    logits = classifier(torch.randn(2, 3, 8, 8), timestep).logits
    assert logits.shape == (2, 5) and bool(torch.isfinite(logits).all())
    with pytest.raises(ValueError, match="time_embedding_type must be one of"):
        NoiseConditionalClassifier(time_embedding_type="learned")

