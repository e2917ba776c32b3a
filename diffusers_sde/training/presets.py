"""UNet2DModel and NCSNppModel presets by name, sized for the data they are meant for."""

from diffusers import UNet2DModel

from ..models import NCSNppModel

UNET_PRESETS = {
    # ~0.4 M parameters: 8x8 greyscale digits on a CPU in minutes.
    "digits-tiny": dict(
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=32,
    ),
    # ~0.18 M parameters (0.7 MB): the same network at half the width, small enough to ship in the package
    # (the classifier-free guidance digits model, docs/controllable.md).
    "digits-mini": dict(
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=16,
    ),
    # 32x32 images on one GPU.
    "small": dict(
        block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
    ),
    # The DDPM CIFAR-10 network (35.7 M parameters).
    "ddpm-cifar10": dict(
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
    ),
}

# NCSNppModel presets: the paper's CIFAR-10 networks by their score_sde config, and a tiny one for 8x8 digits.
NCSNPP_PRESETS = {
    "ncsnpp-cifar10": "ve/cifar10_ncsnpp_continuous",
    "ncsnpp-deep-cifar10": "ve/cifar10_ncsnpp_deep_continuous",
    "ddpmpp-cifar10": "vp/cifar10_ddpmpp_continuous",
    "ddpmpp-deep-cifar10": "vp/cifar10_ddpmpp_deep_continuous",
    "ncsnpp-digits-tiny": dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0),
}
UNET_PRESETS.update({name: {"model": "ncsnpp"} for name in NCSNPP_PRESETS})


def _build_ncsnpp(preset, sample_size, in_channels, timestep_type):
    from ..models.conversion import model_config, resolve_config

    architecture = NCSNPP_PRESETS[preset]
    if isinstance(architecture, str):
        architecture = model_config(resolve_config(architecture)[0])
    # The time input decides the embedding, as for UNet2DModel: sigma gets Fourier features of log sigma and the
    # output divided by sigma (NCSN++, a score network); an index gets the positional embedding (DDPM++).
    fourier = timestep_type == "sigma"
    config = dict(architecture, sample_size=sample_size, in_channels=in_channels, centered=True,
                  embedding_type="fourier" if fourier else "positional", scale_by_sigma=fourier, sigma_input=False)
    return NCSNppModel(**config)


def build_unet(preset, sample_size, in_channels, timestep_type="discrete", num_classes=None):
    """A fresh ``UNet2DModel`` (or ``NCSNppModel``, for a name in ``NCSNPP_PRESETS``) from a named preset.

    Args:
        preset (`str`): one of ``UNET_PRESETS``.
        sample_size (`int` or `tuple`), in_channels (`int`): the data's shape.
        timestep_type (`str`): ``"sigma"`` gets NCSN++'s Fourier embedding of log sigma (whose output is divided by
            sigma, i.e. a score network); the others get DDPM's positional embedding.
        num_classes (`int`, *optional*): K classes make a class-conditional network for classifier-free guidance, with
            ``num_class_embeds = K + 1``: the last label, K, is the unconditional one.
    """
    if preset not in UNET_PRESETS:
        raise ValueError(f"--model-preset must be one of {tuple(UNET_PRESETS)}, got {preset!r}.")
    if preset in NCSNPP_PRESETS:
        if num_classes is not None:
            raise ValueError(f"--num-classes needs a UNet2DModel preset; --model-preset {preset!r} (NCSNppModel) has no"
                             " class embedding.")
        if not isinstance(sample_size, int):
            raise ValueError(f"--model-preset {preset!r} (NCSNppModel) needs square images, got {sample_size}.")
        return _build_ncsnpp(preset, sample_size, in_channels, timestep_type)
    config = dict(UNET_PRESETS[preset])
    size = sample_size if isinstance(sample_size, int) else min(sample_size)
    downsamplings = len(config["block_out_channels"]) - 1
    if size % 2**downsamplings:
        raise ValueError(
            f"--model-preset {preset!r} halves the image {downsamplings} times, so the image size must be a multiple of"
            f" {2**downsamplings}; got {sample_size}."
        )
    time_embedding = "fourier" if timestep_type == "sigma" else "positional"
    num_class_embeds = None if num_classes is None else num_classes + 1
    return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                       time_embedding_type=time_embedding, num_class_embeds=num_class_embeds, **config)
