"""Img2img (SDEdit) against the closed form, and save/load of the conditional pipelines."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from testing_utils import MIXTURE_SHAPE, mixture_model, tiny_unet
from diffusers_sde import (
    EDMHeunScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    ScoreSDEColorizationPipeline,
    ScoreSDEImg2ImgPipeline,
    ScoreSDEInpaintPipeline,
    ScoreSDEInverseProblemPipeline,
)


@pytest.mark.filterwarnings("ignore:image .a floating tensor. holds values")  # mixture data spread past [0, 1]
@pytest.mark.parametrize("scheduler", [PredictorCorrectorScheduler(sde_type="ve", corrector="none"),
                                       ProbabilityFlowScheduler(sde_type="subvp"), EDMHeunScheduler(sde_type="vp")],
                         ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_img2img_of_exact_samples_preserves_the_mixture(mixture, scheduler, strength):
    pipe = ScoreSDEImg2ImgPipeline(unet=mixture_model(mixture, scheduler), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    x0, _ = mixture.sample(2000, torch.Generator().manual_seed(4))
    steps = {"PredictorCorrectorScheduler": 1000, "ProbabilityFlowScheduler": 100, "EDMHeunScheduler": 100}
    n = steps[type(scheduler).__name__]
    out = pipe(x0.float().view(-1, *MIXTURE_SHAPE), strength=strength, num_inference_steps=n,
               generator=torch.Generator().manual_seed(5), output_type="latent")
    assert out.nfe == len(pipe.scheduler.timesteps) - (n - round(n * strength)) * pipe.scheduler.order
    fidelity = mixture.fidelity(out.images.flatten(1))
    assert abs(fidelity["variance_ratio"] - 1) < 0.05 and fidelity["mode_weight_error"] < 0.05, fidelity


def test_img2img_small_strength_stays_near_the_input_and_bad_strength_is_refused():
    pipe = ScoreSDEImg2ImgPipeline(unet=tiny_unet(1), scheduler=PredictorCorrectorScheduler(sde_type="vp"))
    pipe.set_progress_bar_config(disable=True)
    image = (np.random.default_rng(0).random((2, 8, 8, 1)) * 255).astype(np.uint8)
    for strength in (0.0, 1.5, "high"):
        with pytest.raises(ValueError, match="strength must be a finite number > 0 and <= 1"):
            pipe(image, strength=strength, num_inference_steps=10)
    with pytest.raises(ValueError, match="runs no step"):
        pipe(image, strength=0.01, num_inference_steps=10)
    out = pipe(image, strength=0.1, num_inference_steps=10, output_type="np")
    assert out.nfe == 1 and out.images.shape == (2, 8, 8, 1)


@pytest.mark.parametrize("pipeline_class", [ScoreSDEInverseProblemPipeline, ScoreSDEInpaintPipeline,
                                            ScoreSDEColorizationPipeline, ScoreSDEImg2ImgPipeline])
def test_conditional_pipelines_save_and_load(pipeline_class, tmp_path):
    pipe = pipeline_class(unet=tiny_unet(3), scheduler=PredictorCorrectorScheduler(sde_type="vp"))
    pipe.save_pretrained(tmp_path)
    for loader in (pipeline_class, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is pipeline_class
        assert torch.equal(loaded.unet.conv_in.weight, pipe.unet.conv_in.weight)
