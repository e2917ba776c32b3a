"""Reference fixtures made by the original score_sde code (tests/fixtures/make_score_sde_fixtures.py)."""

import json
import os

from safetensors import safe_open

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
FAMILIES = sorted(name[: -len(".safetensors")] for name in os.listdir(FIXTURES) if name.endswith(".safetensors"))


def fixture_key_orders(family):
    """(the original state_dict's keys in its order, its trainable parameters in ``parameters()`` order: the order of
    a checkpoint's EMA ``shadow_params``)."""
    with safe_open(os.path.join(FIXTURES, f"{family}.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["state_keys"]), json.loads(f.metadata()["trainable"])


def load_fixture(family):
    """(original config sections, original state_dict, inputs {sample, timestep}, the original network's output)."""
    with safe_open(os.path.join(FIXTURES, f"{family}.safetensors"), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        config = json.loads(f.metadata()["config"])
    state = {key[len("original."):]: value for key, value in tensors.items() if key.startswith("original.")}
    return config, state, {"sample": tensors["input.sample"], "timestep": tensors["input.timestep"]}, tensors["output"]
