"""ScoreSDEPipeline: outputs, inputs, dtypes, callbacks, and the NaN guard."""

import numpy as np
import pytest
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from testing_utils import tiny_unet
from diffusers_sde import PredictorCorrectorScheduler, ProbabilityFlowScheduler, ScoreSDEPipeline


def make_pipe(channels=1, scheduler=None, unet=None):
    pipe = ScoreSDEPipeline(unet=unet or tiny_unet(channels), scheduler=scheduler or PredictorCorrectorScheduler(sde_type="vp"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_output_types_and_ranges():
    pipe = make_pipe()
    run = lambda kind: pipe(batch_size=3, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type=kind)
    latent = run("latent")
    assert latent.nfe == 4 and latent.images.shape == (3, 1, 8, 8)
    # [-1, 1] data (VP default) mapped to [0, 1] then clamped: the same draw in every format.
    expected = ((latent.images + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(run("pt").images, expected)
    np_images = run("np").images
    assert np_images.shape == (3, 8, 8, 1) and np_images.min() >= 0 and np_images.max() <= 1
    np.testing.assert_allclose(np_images, expected.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    pil = run("pil").images
    assert len(pil) == 3 and pil[0].mode == "L" and pil[0].size == (8, 8)
    images, nfe = pipe(batch_size=1, num_inference_steps=2, output_type="np", return_dict=False)
    assert nfe == 2 and images.shape == (1, 8, 8, 1)


def test_any_number_of_channels():
    pipe = make_pipe(channels=2)
    assert pipe(batch_size=2, num_inference_steps=2, output_type="np").images.shape == (2, 8, 8, 2)
    with pytest.raises(ValueError, match="output_type='pil' needs 1, 3 or 4 channels"):
        pipe(batch_size=1, num_inference_steps=2)


def test_nfe_counts_correctors_and_heun():
    pc = make_pipe(scheduler=PredictorCorrectorScheduler(sde_type="ve", corrector="langevin", corrector_steps=2))
    assert pc(num_inference_steps=3, output_type="latent").nfe == 9
    ode = make_pipe(scheduler=ProbabilityFlowScheduler(sde_type="vp", integrator="heun"))
    assert ode(num_inference_steps=3, output_type="latent").nfe == 5


def test_latents_start_the_run():
    pipe = make_pipe()
    latents = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    a = pipe(batch_size=2, num_inference_steps=3, latents=latents, generator=torch.Generator().manual_seed(1),
             output_type="latent").images
    b = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="latent").images
    c = pipe(batch_size=2, num_inference_steps=3, latents=latents, generator=torch.Generator().manual_seed(1),
             output_type="latent").images
    torch.testing.assert_close(a, c)
    assert not torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=2, latents=torch.zeros(2, 3, 8, 8)), r"latents has shape \(2, 3, 8, 8\), expected \(2, 1, 8, 8\)"),
        (dict(batch_size=2, latents=torch.zeros(3, 1, 8, 8)), "latents has shape"),
        (dict(batch_size=2, latents=torch.zeros(2, 1, 16, 16)), "latents has shape"),
        (dict(batch_size=3, generator=[torch.Generator()] * 2), "generator is a list of 2 generators but batch_size is 3"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(output_type="jpeg"), "output_type must be one of"),
        (dict(num_inference_steps=0), "num_inference_steps must be an integer >= 1"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_pipe()(**kwargs)


def test_callback_sees_every_evaluation_and_can_replace_latents():
    pipe = make_pipe()
    seen = []

    def callback(pipeline, step, timestep, tensors):
        seen.append((step, float(timestep)))
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 3 else {}

    out = pipe(batch_size=2, num_inference_steps=4, callback_on_step_end=callback, output_type="latent")
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert torch.equal(out.images, torch.zeros(2, 1, 8, 8))


def test_low_precision_model_keeps_float32_sde_math():
    pipe = make_pipe(unet=tiny_unet(1).to(torch.bfloat16))
    out = pipe(batch_size=2, num_inference_steps=3, output_type="latent")
    assert out.images.dtype == torch.float32 and torch.isfinite(out.images).all()


class _DivergingModel(ModelMixin, ConfigMixin):
    """Returns inf once the network time drops below `threshold`: a network that blows up mid-run."""

    @register_to_config
    def __init__(self, in_channels=1, sample_size=8, threshold=500.0):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, sample, timestep, return_dict=True):
        out = torch.zeros_like(sample) if float(timestep) >= self.config.threshold else torch.full_like(sample, float("inf"))
        return UNet2DOutput(sample=out)


def test_nan_stops_the_run_naming_step_and_time():
    pipe = make_pipe(unet=_DivergingModel(), scheduler=PredictorCorrectorScheduler(sde_type="vp", predictor="ancestral"))
    with pytest.raises(FloatingPointError, match=r"NaN or inf at step 5 of 10 \(t=0\.44\d*, network time 44\d"):
        pipe(batch_size=2, num_inference_steps=10, output_type="np")
