"""Convert score_sde checkpoints (Song et al. 2021, original PyTorch code) to a saved ``ScoreSDEPipeline``.

An original checkpoint is a ``.pth`` dict: ``model`` (the network's state_dict, keys ``module.all_modules.<i>.<...>``
because it was saved from ``DataParallel``), ``ema`` (``shadow_params``, the EMA of the trainable parameters in
``model.parameters()`` order), ``optimizer`` and ``step``. Its config is a Python file of score_sde's ``configs/`` tree
(``get_config()`` returns an ``ml_collections.ConfigDict``), named by its path there (``ve/cifar10_ncsnpp_continuous``)
or given as a file.
"""

import argparse
import importlib.util
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import types
from contextlib import contextmanager

import numpy as np
import torch

from .ncsnpp import NCSNppModel
from .score_sde_configs import CONFIGS
from .stock_layout import to_unet2d_model

# The released checkpoints were pickled with numpy 1.x, which stores the optimizer's learning rate as a numpy float64
# scalar (its reconstructor, under numpy 1.x's or 2.x's module name, and its float64 dtype): weights_only loading allows
# exactly these and nothing else.
_NUMPY_SCALAR = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
NUMPY_SAFE_GLOBALS = [(_NUMPY_SCALAR, "numpy.core.multiarray.scalar"), (_NUMPY_SCALAR, "numpy._core.multiarray.scalar"),
                      np.dtype, type(np.dtype(np.float64))]

# Folder names of the released checkpoints that are not config names.
CHECKPOINT_FOLDER_ALIASES = {
    "vp/cifar10_ddpm": "vp/ddpm/cifar10",
    "vp/cifar10_ddpm_continuous": "vp/ddpm/cifar10_continuous",
    "ve/ffhq_1024_ncsnpp_continuous": "ve/ffhq_ncsnpp_continuous",
}
WEIGHTS = ("ema", "model")
LAYOUTS = ("ncsnpp", "unet2d")
_SDE_TYPES = {"vesde": "ve", "vpsde": "vp", "subvpsde": "subvp"}
_PREDICTORS = {"reverse_diffusion": "reverse_diffusion", "euler_maruyama": "euler_maruyama",
               "ancestral_sampling": "ancestral", "none": "none"}
_CORRECTORS = {"langevin": "langevin", "ald": "ald", "none": "none"}
_NCSNPP_FIELDS = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv", "conditional",
                  "fir", "fir_kernel", "skip_rescale", "resblock_type", "progressive", "progressive_input",
                  "progressive_combine", "embedding_type", "fourier_scale", "init_scale", "scale_by_sigma", "sigma_min",
                  "sigma_max", "num_scales", "nonlinearity")
# The DDPM U-Net is NCSN++ with DDPM blocks, no pyramids, positional embedding and 32 GroupNorm groups.
_DDPM_AS_NCSNPP = dict(resblock_type="ddpm", fir=False, skip_rescale=False, progressive="none", progressive_input="none",
                       embedding_type="positional", init_scale=0.0, norm_num_groups=32)


# --- configs -------------------------------------------------------------------------------------------------------
class _ConfigDict(types.SimpleNamespace):
    """Stands in for ``ml_collections.ConfigDict`` while an original config file runs."""


@contextmanager
def _original_config_imports(path):
    """Let a config file import ``ml_collections`` and its sibling ``configs.default_*`` modules."""
    saved = {name: module for name, module in sys.modules.items() if name == "ml_collections" or name == "configs"
             or name.startswith("configs.")}
    for name in saved:
        del sys.modules[name]
    shim = types.ModuleType("ml_collections")
    shim.ConfigDict = _ConfigDict
    sys.modules["ml_collections"] = shim
    folder = os.path.dirname(os.path.abspath(path))
    while os.path.basename(folder) != "configs" and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    root = os.path.dirname(folder) if os.path.basename(folder) == "configs" else None
    if root:
        sys.path.insert(0, root)
    try:
        yield
    finally:
        if root:
            sys.path.remove(root)
        for name in [name for name in sys.modules if name == "ml_collections" or name.split(".")[0] == "configs"]:
            del sys.modules[name]
        sys.modules.update(saved)


def _plain(value):
    if isinstance(value, _ConfigDict):
        return {key: _plain(item) for key, item in vars(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def read_config_file(path):
    """Run an original-format config file (``get_config()`` returning an ``ml_collections.ConfigDict``) and return its
    sections (``training``, ``sampling``, ``data``, ``model``, ...) as plain dicts. ``ml_collections`` is not needed:
    a stand-in is provided while the file runs, and ``configs.default_*`` imports resolve to the ``configs`` folder
    the file lives in.

    Args:
        path (`str`): the ``.py`` config file.
    """
    with _original_config_imports(path):
        spec = importlib.util.spec_from_file_location("_score_sde_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ValueError(f"config file {path} defines no get_config(); expected a score_sde config file.")
        config = module.get_config()
    return {key: _plain(value) for key, value in vars(config).items() if isinstance(value, _ConfigDict)}


def resolve_config(config):
    """The original config named ``config``: a path under score_sde's ``configs/`` without ``.py`` (or a released
    checkpoint folder name, see ``CHECKPOINT_FOLDER_ALIASES``), or the path of a config file in the original format.

    Returns ``(sections, source)`` with ``source`` the name or path that was read.
    """
    if os.path.isfile(config):
        return read_config_file(config), os.path.abspath(config)
    name = config.strip("/").removesuffix(".py").removeprefix("configs/")
    name = CHECKPOINT_FOLDER_ALIASES.get(name, name)
    if name not in CONFIGS:
        raise ValueError(
            f"--config {config!r} is neither a file nor a known config. Known configs: {sorted(CONFIGS)}; checkpoint"
            f" folder names {sorted(CHECKPOINT_FOLDER_ALIASES)} are accepted too. NCSN / NCSNv2 (RefineNet) configs"
            " are not supported."
        )
    return json.loads(json.dumps(CONFIGS[name])), name


def model_config(original):
    """``NCSNppModel`` config of an original config's ``model`` and ``data`` sections."""
    model, data = original["model"], original["data"]
    name = model.get("name")
    if name not in ("ncsnpp", "ddpm"):
        raise ValueError(f"config model.name must be 'ncsnpp' or 'ddpm' to convert, got {name!r}.")
    fields = _NCSNPP_FIELDS if name == "ncsnpp" else [key for key in _NCSNPP_FIELDS if key not in _DDPM_AS_NCSNPP]
    config = {key: model[key] for key in fields if key in model}
    if name == "ddpm":
        config.update(_DDPM_AS_NCSNPP)
    discrete_ve = original["training"]["sde"] == "vesde" and config.get("embedding_type") == "positional"
    # A discrete VE network indexes the noise levels (0 = sigma_max); it is fed sigma and looks its index up, so it
    # speaks the same time convention as continuous VE networks.
    return dict(config, sample_size=data["image_size"], in_channels=data["num_channels"], centered=data["centered"],
                sigma_input=discrete_ve)


def scheduler_config(original):
    """``PredictorCorrectorScheduler`` config of an original config: SDE, its constants, N, sampler, data range."""
    training, sampling, model = original["training"], original["sampling"], original["model"]
    sde_type = _SDE_TYPES[training["sde"]]
    config = dict(sde_type=sde_type, num_train_timesteps=model["num_scales"], data_centered=original["data"]["centered"],
                  predictor=_PREDICTORS[sampling.get("predictor", "none")],
                  corrector=_CORRECTORS[sampling.get("corrector", "none")], snr=sampling.get("snr"),
                  corrector_steps=sampling.get("n_steps_each", 1))
    if sde_type == "ve":
        # Continuous or discrete, the converted network takes sigma and returns the score (output / sigma).
        config.update(sigma_min=model["sigma_min"], sigma_max=model["sigma_max"], sampling_eps=1e-5,
                      prediction_type="score", timestep_type="sigma")
    else:
        # score_sde feeds VP / sub-VP networks t (N - 1) and reads epsilon; a discrete (DDPM) model's epsilon refers to
        # DDPM's discrete kernel, sqrt_1m_alphas_cumprod[index].
        discrete = sde_type == "vp" and not training["continuous"]
        config.update(beta_min=model["beta_min"], beta_max=model["beta_max"], sampling_eps=1e-3,
                      prediction_type="epsilon", timestep_type="ddpm" if discrete else "discrete")
    return config


# --- weights ---------------------------------------------------------------------------------------------------------
def load_original_checkpoint(path):
    """``torch.load(weights_only=True)`` of an original checkpoint, allowing only numpy's scalar and dtype."""
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        raise RuntimeError(f"converting a score_sde checkpoint needs torch >= 2.6 (allowlists for weights_only loading"
                           f" under a given module name), found {torch.__version__}.")
    with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"checkpoint {path} is not a score_sde checkpoint: expected a dict with 'model', got {found}.")
    return checkpoint


def _strip_data_parallel(state):
    return {key.removeprefix("module."): value for key, value in state.items()}


def ema_state(model_state, ema):
    """The raw state with every trainable parameter replaced by its EMA. The EMA keeps ``shadow_params`` in
    ``parameters()`` order for the parameters that require grad: every tensor of the state except the noise-level
    buffer ``sigmas`` and the fixed Fourier frequencies ``W`` (which therefore come from the raw weights)."""
    trainable = [key for key in model_state if key != "sigmas" and not _is_fourier_key(key)]
    shadow = ema["shadow_params"]
    if len(shadow) != len(trainable):
        raise ValueError(f"ema has {len(shadow)} shadow_params but the model has {len(trainable)} trainable tensors.")
    state = dict(model_state)
    for key, value in zip(trainable, shadow):
        if value.shape != model_state[key].shape:
            raise ValueError(f"ema shadow param for {key} has shape {tuple(value.shape)}, the model's is"
                             f" {tuple(model_state[key].shape)}.")
        state[key] = value
    return state


def _is_fourier_key(key):
    return key.endswith(".W") and key.count(".") == 2 and key.startswith("all_modules.0.")


def convert_state_dict(original_state, model):
    """Map an original state_dict (``all_modules.<i>.<name>``, ``sigmas``) onto ``model``'s keys.

    Every original key must map and every key of ``model`` must be filled; otherwise a ``KeyError`` lists them.
    """
    original_state = _strip_data_parallel(original_state)
    target = model.state_dict()
    converted, unmapped = {}, []
    for key, value in original_state.items():
        if key == "sigmas":
            expected = _noise_levels(model.config)
            if value.shape != expected.shape or not torch.allclose(value.double(), expected, rtol=1e-5):
                unmapped.append(f"{key} (noise levels differ from the config's sigma_min/sigma_max/num_scales)")
            continue
        new_key, value = _convert_key(key, value, model)
        if new_key is None or new_key not in target or target[new_key].shape != value.shape:
            unmapped.append(key)
            continue
        converted[new_key] = value
    missing = sorted(set(target) - set(converted))
    if unmapped or missing:
        raise KeyError(f"checkpoint does not match the config's network: unmapped checkpoint keys {unmapped};"
                       f" network keys not filled {missing}.")
    return converted


def _noise_levels(config):
    return torch.exp(torch.linspace(math.log(config.sigma_max), math.log(config.sigma_min), config.num_scales,
                                    dtype=torch.float64))


def _convert_key(key, value, model):
    parts = key.split(".")
    if parts[0] != "all_modules" or len(parts) < 3 or not parts[1].isdigit():
        return None, value
    index = int(parts[1])
    if index >= len(model.original_module_paths):
        return None, value
    path = model.original_module_paths[index]
    module = model.get_submodule(path)
    inner, parameter = parts[2:-1], parts[-1]
    names = getattr(module, "ORIGINAL_NAMES", {})
    if inner:
        if len(inner) != 1 or inner[0] not in names:
            return None, value
        path = f"{path}.{names[inner[0]]}"
    if parameter == "W" and inner and inner[0].startswith("NIN_"):
        # A NIN layer is a dense map over channels, W of shape (in, out); ours is a 1x1 convolution (out, in, 1, 1).
        return f"{path}.weight", value.t()[:, :, None, None].contiguous()
    if parameter == "b" and inner and inner[0].startswith("NIN_"):
        return f"{path}.bias", value
    return f"{path}.{parameter}", value


# --- the converter ---------------------------------------------------------------------------------------------------
_MODEL_CARD = """---
library_name: diffusers
tags: [diffusers-sde, score-sde, unconditional-image-generation]
---
# {title}

Converted from an original [score_sde](https://github.com/yang-song/score_sde_pytorch) checkpoint (Song et al.,
"Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021) with
`diffusers-sde convert`.

- source checkpoint: `{checkpoint}` (training step {step})
- config: `{config}`
- weights: {weights}
- network: `{network}` ({parameters:,} parameters); scheduler: `PredictorCorrectorScheduler` ({sde})

```python
from diffusers_sde import ScoreSDEPipeline
pipe = ScoreSDEPipeline.from_pretrained("path/to/this/folder")
images = pipe(batch_size=4).images
```
"""


def convert_checkpoint(checkpoint, config, output_dir, weights="ema", layout="ncsnpp"):
    """Convert an original checkpoint and save it as a :class:`ScoreSDEPipeline` in ``output_dir``.

    Args:
        checkpoint (`str`): the original ``.pth`` file.
        config (`str`): the config name under score_sde's ``configs/`` or a config file (see :func:`resolve_config`).
        output_dir (`str`): where the pipeline is saved; written to a temporary folder, then renamed into place.
        weights (`str`): ``"ema"`` (the EMA weights, which the paper evaluates; default) or ``"model"`` (raw weights).
        layout (`str`): ``"ncsnpp"`` (an :class:`NCSNppModel`; every config) or ``"unet2d"`` (diffusers' stock
            ``UNet2DModel`` with Skip blocks, as the ``google/ncsnpp-*`` repos; only the 256 px and 1024 px VE
            configs fit it, see ``stock_layout.py``).

    Returns:
        The converted :class:`ScoreSDEPipeline`.
    """
    from ..pipelines import ScoreSDEPipeline
    from ..schedulers import PredictorCorrectorScheduler

    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}.")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint!r} is not a file.")
    _check_output(output_dir)  # before the (long) conversion
    original, source = resolve_config(config)
    state = load_original_checkpoint(checkpoint)
    raw = _strip_data_parallel(state["model"])
    if weights == "ema":
        if "ema" not in state:
            raise ValueError(f"checkpoint {checkpoint} has no 'ema' entry; pass weights='model' (--weights model).")
        raw = ema_state(raw, state["ema"])
    unet = NCSNppModel(**model_config(original))
    unet.load_state_dict(convert_state_dict(raw, unet))
    unet.eval()
    if layout == "unet2d":
        unet = to_unet2d_model(unet)
    scheduler = PredictorCorrectorScheduler(**scheduler_config(original))
    pipe = ScoreSDEPipeline(unet=unet, scheduler=scheduler)
    card = _MODEL_CARD.format(
        title=f"score_sde {os.path.basename(source).removesuffix('.py')}", checkpoint=os.path.basename(checkpoint),
        step=int(state.get("step", -1)), config=source, weights="EMA" if weights == "ema" else "raw (no EMA)",
        network=type(unet).__name__, parameters=sum(p.numel() for p in unet.parameters()),
        sde=scheduler.config.sde_type)
    _save_atomically(pipe, card, output_dir)
    return pipe


def _check_output(output_dir):
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise FileExistsError(f"--output {output_dir!r} exists and is not empty; choose a new folder.")


def _save_atomically(pipe, card, output_dir):
    output_dir = os.path.abspath(output_dir)
    _check_output(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    try:
        pipe.save_pretrained(staging)
        with open(os.path.join(staging, "README.md"), "w") as f:
            f.write(card)
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def add_convert_parser(commands):
    """Add the ``convert`` subcommand to the CLI."""
    p = commands.add_parser("convert", help="convert an original score_sde checkpoint to a ScoreSDEPipeline folder")
    _add_arguments(p)
    p.set_defaults(func=_convert_from_args)
    return p


def _convert_from_args(args):
    """The CLI's conversion: a checkpoint or config that does not fit ends the command with its message."""
    try:
        convert_checkpoint(args.checkpoint, args.config, args.output, args.weights, args.layout)
    except (ValueError, KeyError, OSError, RuntimeError, pickle.UnpicklingError) as error:  # RuntimeError: torch < 2.6
        raise SystemExit(f"diffusers-sde convert: {error.args[0] if error.args else error}") from error
    print(f"saved {args.output}")


def _add_arguments(p):
    p.add_argument("--checkpoint", required=True, help="original .pth checkpoint (model, ema, optimizer, step)")
    p.add_argument("--config", required=True, help="config name under score_sde's configs/ without .py (e.g."
                   " ve/cifar10_ncsnpp_continuous; checkpoint folder names work too) or a config file")
    p.add_argument("--output", required=True, help="new folder for the converted pipeline")
    p.add_argument("--weights", choices=WEIGHTS, default="ema", help="EMA (default) or raw model weights")
    p.add_argument("--layout", choices=LAYOUTS, default="ncsnpp", help="NCSNppModel (default; every config) or the"
                   " stock UNet2DModel with Skip blocks (the 256 px / 1024 px VE configs)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    _convert_from_args(parser.parse_args(argv))
