"""An ``NCSNppModel`` as diffusers' stock ``UNet2DModel`` (Skip blocks), where that layout can express it.

``UNet2DModel`` with ``SkipDownBlock2D`` / ``AttnSkipDownBlock2D`` / ``SkipUpBlock2D`` / ``AttnSkipUpBlock2D`` is the
NCSN++ network of score_sde's 256 px and 1024 px VE configs: Fourier features of log sigma, BigGAN blocks that
resample with the FIR kernel, an ``input_skip`` input pyramid merged by sum, an ``output_skip`` output pyramid, skip
rescaling and the output divided by sigma. This is the layout of the ``google/ncsnpp-*`` repos; configs outside it
(the CIFAR-10 ones: residual input pyramid, no output pyramid; DDPM++ with a positional embedding) cannot be
expressed and are refused with the reasons.
"""

import math

from diffusers import UNet2DModel

# What the stock layout hard-codes, as (NCSNppModel config key, required value).
_REQUIRED = (("embedding_type", "fourier"), ("resblock_type", "biggan"), ("fir", True), ("fir_kernel", [1, 3, 3, 1]),
             ("progressive", "output_skip"), ("progressive_input", "input_skip"), ("progressive_combine", "sum"),
             ("skip_rescale", True), ("scale_by_sigma", True), ("conditional", True), ("in_channels", 3),
             ("nonlinearity", "swish"), ("norm_num_groups", None), ("sigma_input", False))


def unet2d_layout_problems(config):
    """Why an ``NCSNppModel`` config cannot become a stock ``UNet2DModel`` (an empty list when it can)."""
    problems = [f"{key}={config[key]!r} (the stock layout has {value!r})" for key, value in _REQUIRED
                if (list(config[key]) if key == "fir_kernel" else config[key]) != value]
    if config["ch_mult"][0] != 1:
        problems.append(f"ch_mult[0]={config['ch_mult'][0]} (the Fourier embedding's width is the first block's)")
    channels = [config["nf"] * mult for mult in config["ch_mult"]]
    resolutions = [config["sample_size"] // 2**level for level in range(len(channels))]
    attention_channels = [c for c, r in zip(channels, resolutions) if r in config["attn_resolutions"]]
    if min(attention_channels + [channels[-1]]) < 128:
        problems.append("attention on fewer than 128 channels (the stock attention always uses 32 GroupNorm groups,"
                        " NCSN++ min(C // 4, 32))")
    return problems


def to_unet2d_model(model):
    """The stock ``UNet2DModel`` computing the same function as ``model`` (an ``NCSNppModel``), weights copied.

    Raises ``ValueError`` listing what the stock layout cannot express.
    """
    config = model.config
    problems = unet2d_layout_problems(config)
    if problems:
        raise ValueError("this NCSN++ network has no stock UNet2DModel layout: " + "; ".join(problems) + ".")
    levels = len(config.ch_mult)
    resolutions = [config.sample_size // 2**level for level in range(levels)]
    attention = [resolution in config.attn_resolutions for resolution in resolutions]
    unet = UNet2DModel(
        sample_size=config.sample_size, in_channels=3, out_channels=3, center_input_sample=not config.centered,
        time_embedding_type="fourier", block_out_channels=[config.nf * mult for mult in config.ch_mult],
        down_block_types=["AttnSkipDownBlock2D" if a else "SkipDownBlock2D" for a in attention],
        up_block_types=["AttnSkipUpBlock2D" if a else "SkipUpBlock2D" for a in reversed(attention)],
        layers_per_block=config.num_res_blocks, mid_block_scale_factor=math.sqrt(2.0), norm_eps=1e-6,
        norm_num_groups=None, attention_head_dim=None, act_fn="silu", dropout=config.dropout,
    )
    state = {}
    for ours, theirs in _module_pairs(model, levels):
        for name, value in model.get_submodule(ours).state_dict().items():
            state[f"{theirs}.{_renamed(name)}"] = value.flatten(1) if _is_attention_projection(name) else value
    state["time_proj.weight"] = model.fourier_projection.W
    unet.load_state_dict(state, strict=True)
    return unet.eval()


_ATTENTION_NAMES = {"norm": "group_norm", "query": "to_q", "key": "to_k", "value": "to_v", "proj_out": "to_out.0"}
_RESNET_NAMES = {"time_proj": "time_emb_proj", "shortcut": "conv_shortcut"}


def _renamed(name):
    if "." not in name:
        return name
    module, parameter = name.rsplit(".", 1)
    return f"{_ATTENTION_NAMES.get(module, _RESNET_NAMES.get(module, module))}.{parameter}"


def _is_attention_projection(name):
    return name.split(".")[0] in ("query", "key", "value", "proj_out") and name.endswith("weight")


def _module_pairs(model, levels):
    """(our module path, the stock UNet2DModel's) for every module with weights, except the Fourier features."""
    pairs = [("time_dense.0", "time_embedding.linear_1"), ("time_dense.1", "time_embedding.linear_2"),
             ("conv_in", "conv_in"), ("mid.0", "mid_block.resnets.0"), ("mid.1", "mid_block.attentions.0"),
             ("mid.2", "mid_block.resnets.1")]
    for level, stage in enumerate(model.down_levels):
        pairs += [(f"down_levels.{level}.resnets.{i}", f"down_blocks.{level}.resnets.{i}")
                  for i in range(len(stage.resnets))]
        pairs += [(f"down_levels.{level}.attentions.{i}", f"down_blocks.{level}.attentions.{i}")
                  for i in range(len(stage.attentions))]
        if level != levels - 1:
            pairs += [(f"down_levels.{level}.downsample", f"down_blocks.{level}.resnet_down"),
                      (f"down_levels.{level}.pyramid.conv", f"down_blocks.{level}.skip_conv")]
    for level, stage in enumerate(model.up_levels):
        block = f"up_blocks.{levels - 1 - level}"
        pairs += [(f"up_levels.{level}.resnets.{i}", f"{block}.resnets.{i}") for i in range(len(stage.resnets))]
        if hasattr(stage, "attention"):
            pairs.append((f"up_levels.{level}.attention", f"{block}.attentions.0"))
        # The output pyramid's last norm and convolution are the stock network's conv_norm_out / conv_out.
        norm, conv = ("conv_norm_out", "conv_out") if level == 0 else (f"{block}.skip_norm", f"{block}.skip_conv")
        pairs += [(f"up_levels.{level}.pyramid_norm", norm), (f"up_levels.{level}.pyramid_conv", conv)]
        if level != 0:
            pairs.append((f"up_levels.{level}.upsample", f"{block}.resnet_up"))
    return pairs
