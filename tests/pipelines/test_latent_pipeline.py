"""ScoreSDELatentPipeline against closed-form truth: an orthogonal linear "VAE" maps a Gaussian mixture in pixel space
to a Gaussian mixture in latent space, so the latent pipeline run on the exact latent score must sample the pixel
mixture after decoding, and its latent likelihood plus the map's log|det| must be the pixel mixture's density."""

import math
import os
from types import SimpleNamespace

import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from diffusers_sde import (
    ExponentialIntegratorScheduler,
    GaussianMixture,
    GaussianMixtureModel,
    PredictorCorrectorScheduler,
    ScoreSDELatentPipeline,
)

IMAGE_SHAPE = (1, 4, 4)  # pixel space, D = 16
LATENT_SHAPE = (4, 2, 2)  # the same 16 dimensions as 4 channels of 2 x 2, as a VAE that halves the side once
DIM = 16
SCALING_FACTOR = 2.5


class _Posterior:
    """A point-mass posterior with AutoencoderKL's ``latent_dist`` interface."""

    def __init__(self, latents):
        self.latents = latents

    def mode(self):
        return self.latents

    def sample(self, generator=None):
        return self.latents


class OrthogonalAutoencoder(ModelMixin, ConfigMixin):
    """x -> Q^T x (encode) and z -> Q z (decode) for a random orthogonal Q, with AutoencoderKL's interface."""

    @register_to_config
    def __init__(self, in_channels=1, out_channels=1, latent_channels=4, sample_size=4, block_out_channels=(1, 1),
                 scaling_factor=SCALING_FACTOR, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))
        self.register_buffer("orthogonal", q)

    def encode(self, x):
        z = x.to(torch.float64).flatten(1) @ self.orthogonal  # rows: Q^T x
        return SimpleNamespace(latent_dist=_Posterior(z.view(-1, *LATENT_SHAPE).to(x.dtype)))

    def decode(self, z):
        x = z.to(torch.float64).flatten(1) @ self.orthogonal.T
        return SimpleNamespace(sample=x.view(-1, *IMAGE_SHAPE).to(z.dtype))


def pixel_mixture():
    """3 components in [-1, 1]^16, isotropic within each (an orthogonal map keeps them diagonal), unequal weights."""
    generator = torch.Generator().manual_seed(0)
    means = 0.6 * (2 * torch.rand(3, DIM, generator=generator, dtype=torch.float64) - 1)
    variances = torch.tensor([0.02, 0.04, 0.03], dtype=torch.float64)[:, None].expand(3, DIM)
    return GaussianMixture(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), means, variances)


def latent_mixture(vae, mixture):
    """The law of z = scaling_factor * Q^T x for x ~ ``mixture``."""
    q = vae.orthogonal
    return GaussianMixture(mixture.weights, SCALING_FACTOR * mixture.means @ q, SCALING_FACTOR**2 * mixture.variances)


def exact_latent_pipeline(scheduler):
    vae = OrthogonalAutoencoder()
    mixture = pixel_mixture()
    unet = GaussianMixtureModel.for_scheduler(latent_mixture(vae, mixture), scheduler, LATENT_SHAPE[0], LATENT_SHAPE[1])
    pipe = ScoreSDELatentPipeline(vae=vae, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, mixture


def check_mixture_samples(mixture, samples):
    """Decoded samples must be the pixel mixture: component shares within 4 standard errors, the spread about each
    component's mean within 5% of its variance, each component's mean within 4 standard errors."""
    samples = samples.flatten(1).to(torch.float64)
    fidelity = mixture.fidelity(samples)
    shares = torch.tensor(fidelity["mode_weights"], dtype=torch.float64)
    share_error = (mixture.weights * (1 - mixture.weights) / len(samples)).sqrt()
    assert ((shares - mixture.weights).abs() <= 4 * share_error).all(), (shares, mixture.weights)
    assert abs(fidelity["variance_ratio"] - 1) < 0.05, fidelity
    labels = mixture.classify(samples)
    for k in range(len(mixture.weights)):
        members = samples[labels == k]
        mean_error = (members.mean(0) - mixture.means[k]).abs().max()
        assert mean_error < 4 * math.sqrt(mixture.variances[k, 0] / len(members)) + 1e-3, (k, mean_error)


@pytest.mark.parametrize("scheduler, steps", [
    (ExponentialIntegratorScheduler(sde_type="vp", solver_order=2), 50),
    (PredictorCorrectorScheduler(sde_type="vp", predictor="euler_maruyama", corrector="none"), 200),
])
def test_decoded_samples_reproduce_the_pixel_mixture(scheduler, steps):
    pipe, mixture = exact_latent_pipeline(scheduler)
    latents = pipe(batch_size=2000, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                   output_type="latent").images
    assert latents.shape == (2000, *LATENT_SHAPE)
    check_mixture_samples(mixture, pipe.decode_latents(latents))
    # The "pt" images of a run are its decoded [-1, 1] sample mapped to [0, 1] and clamped.
    runs = [pipe(batch_size=2, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                 output_type=output_type).images for output_type in ("latent", "pt")]
    assert runs[1].shape == (2, *IMAGE_SHAPE)
    torch.testing.assert_close(runs[1], ((pipe.decode_latents(runs[0]) + 1) / 2).clamp(0, 1))


def test_adaptive_sampler_runs_in_latent_space():
    pipe, mixture = exact_latent_pipeline(ExponentialIntegratorScheduler(sde_type="vp"))
    latents = pipe(batch_size=1000, sampler="adaptive_ode", rtol=1e-4, atol=1e-4,
                   generator=torch.Generator().manual_seed(1), output_type="latent").images
    check_mixture_samples(mixture, pipe.decode_latents(latents))


def test_latent_likelihood_plus_log_det_is_the_pixel_density():
    """log p_x(x) = log p_z(s Q^T x) + D log s: the latent density at the encoded image, plus the map's log|det|."""
    pipe, mixture = exact_latent_pipeline(ExponentialIntegratorScheduler(sde_type="vp"))
    x, _ = mixture.sample(8, generator=torch.Generator().manual_seed(2))
    x = x.view(8, *IMAGE_SHAPE)
    latents = pipe.encode_image(x.to(torch.float32)).to(torch.float64)
    eps = 1e-5
    out = pipe.log_likelihood(latents, eps=eps, divergence="exact", rtol=1e-6, atol=1e-6)
    pixel_log_prob = -out.nll + DIM * math.log(SCALING_FACTOR)
    # p_eps in latent space is the latent mixture under noise s(eps): in pixel space, noise s(eps) / scaling_factor.
    a, s = pipe.scheduler.sde.marginal(torch.tensor(eps, dtype=torch.float64))
    truth = mixture.log_prob(x.flatten(1), a, s / SCALING_FACTOR)
    assert ((pixel_log_prob - truth) / (DIM * math.log(2))).abs().max() < 0.01  # bits per dimension
    assert (truth - mixture.log_prob(x.flatten(1))).abs().max() < 0.05  # and p_eps is the data density


def test_encode_decode_and_probability_flow_round_trip():
    pipe, mixture = exact_latent_pipeline(ExponentialIntegratorScheduler(sde_type="vp"))
    x, _ = mixture.sample(4, generator=torch.Generator().manual_seed(3))
    x = x.view(4, *IMAGE_SHAPE).to(torch.float32)
    latents = pipe.encode_image(x)
    torch.testing.assert_close(latents.flatten(1).double(), SCALING_FACTOR * x.flatten(1).double() @ pipe.vae.orthogonal,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pipe.decode_latents(latents), x, atol=1e-5, rtol=1e-5)
    # The probability-flow encode / decode act on latents; decode returns images through the VAE.
    prior = pipe.encode(latents).latents
    images = pipe.decode(prior, output_type="pt").images
    torch.testing.assert_close(images, ((x + 1) / 2).clamp(0, 1), atol=2e-3, rtol=0)


def test_vae_that_does_not_match_the_unet_is_refused():
    scheduler = ExponentialIntegratorScheduler(sde_type="vp")
    unet = GaussianMixtureModel.for_scheduler(pixel_mixture(), scheduler, 4, 2)
    with pytest.raises(ValueError, match="vae has latent_channels=3 but the unet takes in_channels=4"):
        ScoreSDELatentPipeline(vae=OrthogonalAutoencoder(latent_channels=3), unet=unet, scheduler=scheduler)
    with pytest.raises(ValueError, match=r"vae has sample_size=8 .* unet has sample_size \(2, 2\)"):
        ScoreSDELatentPipeline(vae=OrthogonalAutoencoder(sample_size=8), unet=unet, scheduler=scheduler)


def test_likelihood_refuses_integer_images():
    pipe, _ = exact_latent_pipeline(ExponentialIntegratorScheduler(sde_type="vp"))
    with pytest.raises(ValueError, match="scores latents"):
        pipe.log_likelihood(torch.zeros(1, *LATENT_SHAPE, dtype=torch.uint8))


# --- with diffusers' AutoencoderKL: save / load ---------------------------------------------------------------------
def tiny_latent_pipeline():
    from diffusers import AutoencoderKL

    from testing_utils import tiny_unet

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(4, 8), layers_per_block=1,
                        latent_channels=2, norm_num_groups=4, sample_size=8, scaling_factor=0.7).eval()
    # eval(), as from_pretrained leaves the modules: the VAE's attention is not bit-identical in train mode.
    pipe = ScoreSDELatentPipeline(vae=vae, unet=tiny_unet(channels=2, size=4).eval(),
                                  scheduler=PredictorCorrectorScheduler(sde_type="vp"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _state_dicts(pipe):
    return {name: getattr(pipe, name).state_dict() for name in ("vae", "unet")}


@pytest.mark.parametrize("loader", ["ScoreSDELatentPipeline", "DiffusionPipeline"])
def test_save_and_load_are_bit_identical(tmp_path, loader):
    import json

    from diffusers import DiffusionPipeline

    pipe = tiny_latent_pipeline()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "ScoreSDELatentPipeline"
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    loaded = (ScoreSDELatentPipeline if loader == "ScoreSDELatentPipeline" else DiffusionPipeline).from_pretrained(tmp_path)
    assert type(loaded) is ScoreSDELatentPipeline
    for name, state in _state_dicts(pipe).items():
        reloaded = _state_dicts(loaded)[name]
        assert state.keys() == reloaded.keys()
        assert all(torch.equal(state[key], reloaded[key]) for key in state), name
    public = lambda config: {key: value for key, value in config.items() if not key.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    loaded.set_progress_bar_config(disable=True)
    run = dict(batch_size=2, num_inference_steps=3, output_type="np")
    assert (pipe(generator=torch.Generator().manual_seed(0), **run).images
            == loaded(generator=torch.Generator().manual_seed(0), **run).images).all()


def test_real_autoencoder_images_and_latents_have_the_documented_shapes():
    pipe = tiny_latent_pipeline()
    assert pipe.image_shape() == (1, 8, 8) and pipe.vae_scale_factor == 2
    images = pipe(batch_size=3, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pil").images
    assert [image.size for image in images] == [(8, 8)] * 3 and images[0].mode == "L"
    digits = torch.randint(0, 17, (2, 1, 8, 8), dtype=torch.uint8)
    latents = pipe.encode_image(digits, num_levels=17)
    assert latents.shape == (2, 2, 4, 4)
    expected = pipe.vae.encode(digits.float() / 16 * 2 - 1).latent_dist.mode() * 0.7
    torch.testing.assert_close(latents, expected)
    with pytest.raises(ValueError, match=r"images have shape \(C, H, W\) = \(1, 4, 4\)"):
        pipe.encode_image(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="latents must be a tensor"):
        pipe.decode_latents(torch.zeros(1, 1, 8, 8))


def test_embedded_latent_model_saves_and_loads_bit_identically(tmp_path):
    from diffusers_sde import pretrained_model_path

    pipe = ScoreSDELatentPipeline.from_pretrained(pretrained_model_path("digits-vp-latent"))
    assert pipe.image_shape() == (1, 8, 8) and (pipe.unet.config.in_channels, pipe.unet.config.sample_size) == (2, 4)
    pipe.save_pretrained(tmp_path)
    for component in ("vae", "unet"):
        name = "diffusion_pytorch_model.safetensors"
        embedded = os.path.join(pretrained_model_path("digits-vp-latent"), component, name)
        assert (tmp_path / component / name).read_bytes() == open(embedded, "rb").read(), component
    loaded = ScoreSDELatentPipeline.from_pretrained(tmp_path)
    for name, state in _state_dicts(pipe).items():
        assert all(torch.equal(tensor, _state_dicts(loaded)[name][key]) for key, tensor in state.items()), name
