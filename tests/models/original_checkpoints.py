"""Original-format score_sde checkpoints and config files, built from the reference fixtures."""

import zipfile

import numpy as np
import torch
from fixtures import fixture_key_orders, load_fixture


def write_config_file(path, sections):
    """A config file in score_sde's format: ``get_config()`` building an ``ml_collections.ConfigDict``."""
    lines = ["import ml_collections", "", "", "def get_config():", "  config = ml_collections.ConfigDict()"]
    for section, values in sections.items():
        lines.append(f"  config.{section} = {section} = ml_collections.ConfigDict()")
        lines += [f"  {section}.{key} = {value!r}" for key, value in values.items()]
    path.write_text("\n".join(lines + ["  return config", ""]))
    return path


def _as_numpy_1x_pickle(path):
    # The released checkpoints were written with numpy 1.x, whose scalar lives in numpy.core.multiarray.
    with zipfile.ZipFile(path) as archive:
        entries = [(item, archive.read(item.filename)) for item in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for item, data in entries:
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            archive.writestr(item, data)


def write_original_checkpoint(path, family, true_weights="ema", seed=0):
    """A checkpoint as score_sde's run_lib saves it (DataParallel keys, EMA shadow params, Adam with a numpy float64
    learning rate). The fixture's weights, whose output the original computed, go to ``true_weights`` ("ema" or
    "model"); the other entry gets perturbed copies. The Fourier ``W`` and ``sigmas`` are never in the EMA."""
    _, state, _, _ = load_fixture(family)
    state_keys, trainable = fixture_key_orders(family)
    state = {key: state[key] for key in state_keys}
    generator = torch.Generator().manual_seed(seed)
    perturbed = {key: value + 0.05 * torch.randn(value.shape, generator=generator) if key in trainable else value
                 for key, value in state.items()}
    raw, shadow = (perturbed, state) if true_weights == "ema" else (state, perturbed)
    optimizer = {"state": {}, "param_groups": [{"lr": np.float64(2e-4), "betas": (0.9, 0.999), "eps": 1e-8,
                                                "weight_decay": 0, "amsgrad": False, "params": list(range(len(trainable)))}]}
    checkpoint = {"optimizer": optimizer, "model": {f"module.{key}": value for key, value in raw.items()},
                  "ema": {"decay": 0.9999, "num_updates": 1000, "shadow_params": [shadow[key] for key in trainable]},
                  "step": 1000}
    torch.save(checkpoint, path)
    _as_numpy_1x_pickle(path)
    return path


def original_state_dict(model):
    """An ``NCSNppModel``'s weights under the original code's keys: the converter's map run backwards, for tests that
    need an original checkpoint of a network larger than the fixtures (that map itself is checked against them)."""
    state = {"sigmas": torch.exp(torch.linspace(np.log(model.config.sigma_max), np.log(model.config.sigma_min),
                                                model.config.num_scales, dtype=torch.float64))}
    for index, path in enumerate(model.original_module_paths):
        module = model.get_submodule(path)
        names = {ours: theirs for theirs, ours in getattr(module, "ORIGINAL_NAMES", {}).items()}
        if getattr(module, "kind", None) == "biggan":
            names["shortcut"] = "Conv_2"
        if getattr(module, "fir_kernel", None) is None and "conv" in names:
            names["conv"] = "Conv_0"
        for name, value in module.state_dict().items():
            inner, _, parameter = name.rpartition(".")
            original = names.get(inner, inner)
            if original.startswith("NIN_") and parameter == "weight":
                name, value = f"{original}.W", value.flatten(1).t()  # a 1x1 convolution back to a dense (in, out)
            elif original.startswith("NIN_"):
                name = f"{original}.b"
            elif inner:
                name = f"{original}.{parameter}"
            state[f"all_modules.{index}.{name}"] = value
    return state
