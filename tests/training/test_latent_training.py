"""train-vae and train --vae: the autoencoder's loss and scaling factor, its atomic save, and a latent score model saved
as a ScoreSDELatentPipeline that holds exactly the given VAE."""

import os

import pytest
import torch
from diffusers import AutoencoderKL

from diffusers_sde import ScoreSDELatentPipeline
from diffusers_sde.cli import main
from diffusers_sde.training import TrainingConfig, train
from diffusers_sde.training import autoencoder as autoencoder_module
from diffusers_sde.training import data as data_module
from diffusers_sde.training.autoencoder import AutoencoderTrainingConfig, autoencoder_loss, train_autoencoder
from diffusers_sde.training.data import load_digits_dataset

TINY_VAE = ["--block-out-channels", "4,8", "--norm-num-groups", "4", "--latent-channels", "2", "--batch-size", "16",
            "--log-every", "0"]


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae") / "digits-vae"
    main(["train-vae", "--output-dir", str(folder), "--max-steps", "3", *TINY_VAE])
    return folder


def test_train_vae_saves_an_autoencoder_whose_latents_have_unit_scale(vae_folder):
    vae = AutoencoderKL.from_pretrained(vae_folder)
    assert (vae.config.latent_channels, vae.config.sample_size, tuple(vae.config.block_out_channels)) == (2, 8, (4, 8))
    images = load_digits_dataset(data_centered=True)
    with torch.no_grad():
        modes = vae.encode(images).latent_dist.mode().double()
    # scaling_factor = 1 / std of the posterior modes of the training images: the scaled latents have unit std.
    assert (modes * vae.config.scaling_factor).std().item() == pytest.approx(1.0, abs=1e-4)
    assert not [name for name in os.listdir(vae_folder.parent) if name.startswith(".tmp")]


def test_autoencoder_loss_is_squared_error_plus_weighted_kl():
    """Against the loss written out by hand from the posterior's mean and log-variance."""
    torch.manual_seed(0)
    config = AutoencoderTrainingConfig(output_dir="unused", block_out_channels="4,8", norm_num_groups=4)
    vae = autoencoder_module.build_autoencoder(config, 1, 8)
    images = load_digits_dataset(data_centered=True)[:5]
    loss, error, kl = autoencoder_loss(vae, images, 0.25, torch.Generator().manual_seed(1))
    moments = vae.quant_conv(vae.encoder(images))
    mean, log_variance = moments.chunk(2, dim=1)
    log_variance = log_variance.clamp(-30, 20)  # diffusers' DiagonalGaussianDistribution clamps it so
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    reconstruction = vae.decode(mean + (0.5 * log_variance).exp() * noise).sample
    expected_error = ((reconstruction - images) ** 2).sum((1, 2, 3)).mean()
    expected_kl = (0.5 * (mean**2 + log_variance.exp() - 1 - log_variance)).sum((1, 2, 3)).mean()
    torch.testing.assert_close(error, expected_error)
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(loss, expected_error + 0.25 * expected_kl)


def test_interrupted_vae_save_keeps_the_previous_folder(tmp_path, monkeypatch):
    folder = tmp_path / "vae"
    config = AutoencoderTrainingConfig(output_dir=str(folder), block_out_channels="4,8", norm_num_groups=4,
                                       batch_size=16, max_steps=1, log_every=0)
    train_autoencoder(config)
    before = (folder / "diffusion_pytorch_model.safetensors").read_bytes()

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(AutoencoderKL, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        train_autoencoder(AutoencoderTrainingConfig(**{**vars(config), "seed": 1}))
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["vae"]


@pytest.mark.parametrize("option, value, message", [
    ("block_out_channels", "4,x", "--block-out-channels must be comma-separated positive integers, got '4,x'"),
    ("norm_num_groups", 3, "--norm-num-groups 3 must divide every entry of --block-out-channels '8,16'"),
    ("kl_weight", -1.0, "--kl-weight must be a finite number >= 0"),
    ("block_out_channels", "8,8,8,8,8", "the images. side 8 is not divisible by 16"),
])
def test_bad_vae_options_name_the_option(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        train_autoencoder(AutoencoderTrainingConfig(output_dir=str(tmp_path), max_steps=1, **{option: value}))


def test_train_with_vae_learns_cached_latents_and_saves_a_latent_pipeline(tmp_path, vae_folder, monkeypatch):
    calls = []
    encode = data_module.encode_dataset
    monkeypatch.setattr("diffusers_sde.training.trainer.encode_dataset",
                        lambda vae, images: calls.append(len(images)) or encode(vae, images))
    config = TrainingConfig(output_dir=str(tmp_path / "latent"), vae=str(vae_folder), model_preset="digits-mini",
                            max_steps=3, batch_size=8, warmup_steps=1, checkpointing_steps=0, log_every=0)
    train(config)
    assert calls == [1297]  # the training images are encoded once, not per step
    pipe = ScoreSDELatentPipeline.from_pretrained(config.output_dir)
    assert (pipe.unet.config.in_channels, pipe.unet.config.sample_size) == (2, 4)
    given = AutoencoderKL.from_pretrained(vae_folder).state_dict()
    saved = pipe.vae.state_dict()
    assert given.keys() == saved.keys() and all(torch.equal(given[key], saved[key]) for key in given)
    # --vae also takes a pipeline folder, reading its vae/
    from_pipeline = data_module.load_autoencoder(config.output_dir).state_dict()
    assert all(torch.equal(given[key], from_pipeline[key]) for key in given)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1)
    # diffusers-sde sample loads the folder as the latent pipeline and writes decoded 8 x 8 images
    main(["sample", "--model", config.output_dir, "--batch-size", "2", "--steps", "2", "--quiet", "--out",
          str(tmp_path / "grid.png")])
    assert (tmp_path / "grid.png").exists()


def test_bad_vae_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--vae .* is not an AutoencoderKL folder"):
        train(TrainingConfig(output_dir=str(tmp_path / "x"), vae=str(tmp_path / "missing"), max_steps=1,
                             warmup_steps=0))


def test_resume_refuses_another_vae(tmp_path, vae_folder):
    config = TrainingConfig(output_dir=str(tmp_path / "latent"), vae=str(vae_folder), model_preset="digits-mini",
                            max_steps=1, batch_size=8, warmup_steps=0, checkpointing_steps=1, log_every=0)
    train(config)
    other = tmp_path / "other-vae"  # latents of the same shape: only --vae tells the two models apart
    main(["train-vae", "--output-dir", str(other), "--max-steps", "1", "--seed", "1", *TINY_VAE])
    with pytest.raises(ValueError, match=f"holds a different model: --vae {vae_folder} -> {other} \\(checkpoint"):
        train(TrainingConfig(**{**vars(config), "vae": str(other), "resume": "latest", "max_steps": 2}))
