import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # the suite's tensors are tiny: extra threads only add synchronization

from diffusers_sde import GaussianMixture  # noqa: E402


@pytest.fixture(scope="session")
def mixture():
    """A 16-dimensional test mixture: 3 components, unequal weights, anisotropic variances."""
    return GaussianMixture.random(16, num_components=3, spread=2.0, scale=0.3)
