"""ScoreSDELatentPipeline: a score SDE in the latent space of a diffusers ``AutoencoderKL`` (latent diffusion, Rombach et
al. 2022, with the SDE samplers of Song et al. 2021).

The score model learns the scaled latents z = scaling_factor * E(x) (the posterior mode, or a posterior sample); every
sampler of :class:`ScoreSDEPipeline` runs on them unchanged, and the final sample is decoded, x = D(z /
scaling_factor). ``log_likelihood``, ``encode`` and ``decode`` (the probability-flow ODE) act on the scaled latents;
``encode_image`` / ``decode_latents`` cross between images and latents through the autoencoder.
"""

import torch

from .image_processing import images_to_data, parse_images, postprocess, sample_shape
from .pipeline_score_sde import ScoreSDEPipeline

# diffusers' VAEs take and return images in [-1, 1].
_VAE_DATA_CENTERED = True


class ScoreSDELatentPipeline(ScoreSDEPipeline):
    """Sample a score-based model of an autoencoder's latents, then decode the sample to images.

    Args:
        vae (`AutoencoderKL`, or a `ModelMixin` with its interface): ``encode(x).latent_dist`` with ``mode()`` /
            ``sample(generator)``, ``decode(z).sample``, and ``scaling_factor``, ``latent_channels``,
            ``out_channels`` (and, to check sizes, ``sample_size`` and ``block_out_channels``) in its config. Images go
            in and come out in [-1, 1].
        unet: the score network of the scaled latents: ``in_channels`` must be the VAE's ``latent_channels`` and its
            ``sample_size`` the VAE's ``sample_size`` / 2 ** (len(block_out_channels) - 1).
        scheduler, classifier: as in :class:`ScoreSDEPipeline` (a classifier is fed latents).
    """

    model_cpu_offload_seq = "classifier->unet->vae"

    def __init__(self, vae, unet, scheduler, classifier=None):
        _check_vae(vae, unet)
        super().__init__(unet=unet, scheduler=scheduler, classifier=classifier)
        self.register_modules(vae=vae)

    @property
    def vae_scale_factor(self):
        """How many image pixels one latent position spans along a side (diffusers' name)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if "block_out_channels" in self.vae.config else 1

    def image_shape(self):
        """(C, H, W) of the images: the VAE's ``out_channels``, the unet's side times :attr:`vae_scale_factor`."""
        _, height, width = sample_shape(self.unet)
        return self.vae.config.out_channels, height * self.vae_scale_factor, width * self.vae_scale_factor

    @torch.no_grad()
    def encode_image(self, images, generator=None, sample_posterior: bool = False, num_levels: int = None):
        """Images to the scaled latents the score model learns, ``scaling_factor * E(x)``.

        Args:
            images: PIL image(s), uint8 numpy (B, H, W, C) / tensor (B, C, H, W) of ``num_levels`` levels mapped to
                [-1, 1], or a floating tensor (B, C, H, W) already in [-1, 1].
            generator (`torch.Generator`, *optional*): the posterior sample's noise (``sample_posterior=True``).
            sample_posterior (`bool`): draw z from the posterior q(z | x) instead of taking its mode.
            num_levels (`int`, *optional*): levels of integer images (default 256; 17 for the sklearn digits).
        """
        data = images_to_data(images, self.image_shape(), _VAE_DATA_CENTERED, num_levels)
        vae = self.vae
        posterior = vae.encode(data.to(device=self._execution_device, dtype=vae.dtype)).latent_dist
        latents = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return latents.to(torch.float32) * vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents):
        """Scaled latents (B, C, h, w) to images ``D(latents / scaling_factor)`` in [-1, 1] (a float32 tensor, not
        clamped): what ``__call__`` and :meth:`decode` return as images after clamping."""
        shape = sample_shape(self.unet)
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4 or tuple(latents.shape[1:]) != shape:
            raise ValueError(f"latents must be a tensor (B, *{shape}) (unet in_channels, sample_size), got"
                             f" {tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}.")
        vae = self.vae
        scaled = latents.to(device=self._execution_device, dtype=vae.dtype) / vae.config.scaling_factor
        return vae.decode(scaled).sample.to(torch.float32)

    def _to_images(self, sample, output_type):
        if output_type == "latent":
            return sample
        return postprocess(self.decode_latents(sample), output_type, _VAE_DATA_CENTERED)

    def _parse_data(self, images, num_levels):
        """``log_likelihood`` scores scaled latents: a floating tensor, from :meth:`encode_image`. Integer pixels have no
        density in latent space without the decoder's Jacobian, so they are refused."""
        pixels, data = parse_images(images, sample_shape(self.unet))
        if pixels is not None or num_levels is not None:
            raise ValueError(
                "ScoreSDELatentPipeline.log_likelihood scores latents: pass a floating tensor (B, C, h, w) of scaled"
                f" latents, e.g. pipe.encode_image(images), without num_levels; got integer images"
                f" {tuple(pixels.shape) if pixels is not None else ''} / num_levels={num_levels!r}."
            )
        return None, data, None


def _check_vae(vae, unet):
    """The VAE's latents must be what the unet models: ``latent_channels`` = unet ``in_channels``, and the latent side
    (``sample_size`` / 2 ** (len(block_out_channels) - 1)) = unet ``sample_size``."""
    config = vae.config
    missing = [name for name in ("scaling_factor", "latent_channels", "out_channels") if name not in config]
    if missing:
        raise ValueError(f"vae ({type(vae).__name__}) needs {missing} in its config, as diffusers' AutoencoderKL has.")
    channels, height, width = sample_shape(unet)
    if config.latent_channels != channels:
        raise ValueError(f"vae has latent_channels={config.latent_channels} but the unet takes in_channels={channels};"
                         " the unet must model the vae's latents (train it with diffusers-sde train --vae).")
    if config.get("sample_size") is not None and "block_out_channels" in config:
        factor = 2 ** (len(config.block_out_channels) - 1)
        size = config.sample_size
        vae_height, vae_width = (size, size) if isinstance(size, int) else tuple(size)
        if (vae_height % factor, vae_width % factor) != (0, 0) or (vae_height // factor, vae_width // factor) != (
                height, width):
            raise ValueError(
                f"vae has sample_size={size} and downsamples by {factor} (len(block_out_channels) - 1 halvings): latents"
                f" of side {vae_height / factor:g} x {vae_width / factor:g}, but the unet has sample_size"
                f" {(height, width)}; the unet must model the vae's latents (or set the vae's sample_size to the images'"
                " size)."
            )
    if not config.scaling_factor > 0:
        raise ValueError(f"vae has scaling_factor={config.scaling_factor!r}; it must be > 0.")
