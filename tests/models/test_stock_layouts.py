"""Stock diffusers repos (google/ncsnpp-*, google/ddpm-*) load into ScoreSDEPipeline and sample with every scheduler,
feeding the network the time input, and reading the output in the parameterization and data range, it was trained for."""

import os
import shutil

import pytest
import torch
from diffusers import UNet2DModel

from diffusers_sde import (EDMHeunScheduler, ExponentialIntegratorScheduler, PredictorCorrectorScheduler,
                           ProbabilityFlowScheduler, ScoreSDEPipeline)

STOCK = os.path.join(os.path.dirname(__file__), "..", "fixtures", "stock")
REPOS = sorted(os.listdir(os.path.join(STOCK)))
REPOS = [name for name in REPOS if os.path.isdir(os.path.join(STOCK, name))]
# Every scheduler of the project (each registers itself as compatible with the others).
SCHEDULERS = PredictorCorrectorScheduler().compatibles


@pytest.fixture(scope="module", params=REPOS)
def stock_repo(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    shutil.copytree(os.path.join(STOCK, request.param), folder, dirs_exist_ok=True)
    torch.manual_seed(0)
    UNet2DModel.from_config(UNet2DModel.load_config(folder / "unet")).save_pretrained(folder / "unet")
    return request.param, folder


def test_every_scheduler_is_covered():
    assert {EDMHeunScheduler, ExponentialIntegratorScheduler, PredictorCorrectorScheduler,
            ProbabilityFlowScheduler} <= set(SCHEDULERS)


def test_every_stock_layout_is_kept():
    assert set(REPOS) == {"ncsnpp-celebahq-256", "ncsnpp-ffhq-256", "ncsnpp-church-256", "ncsnpp-bedroom-256",
                          "ncsnpp-ffhq-1024", "ddpm-cifar10-32", "ddpm-celebahq-256", "ddpm-church-256"}


@pytest.mark.parametrize("scheduler_class", SCHEDULERS, ids=lambda cls: cls.__name__)
def test_stock_repo_samples_with_every_scheduler(stock_repo, scheduler_class):
    name, folder = stock_repo
    pipe = ScoreSDEPipeline.from_pretrained(folder)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    config = pipe.scheduler.config
    if name.startswith("ncsnpp"):
        # NCSN++ repos: VE, a score network fed sigma, data in [0, 1].
        assert (config.sde_type, config.prediction_type, config.timestep_type, config.data_centered) == (
            "ve", "score", "sigma", False)
        low, high = config.sigma_min, config.sigma_max
    else:
        # DDPM repos: VP on DDPM's discrete schedule, an epsilon network fed the index, data in [-1, 1].
        assert (config.sde_type, config.prediction_type, config.timestep_type, config.data_centered) == (
            "vp", "epsilon", "ddpm", True)
        low, high = 0.0, 999.0
    seen = []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(torch.as_tensor(args[1]).flatten()))
    images = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    size = pipe.unet.config.sample_size
    assert images.shape == (1, size, size, 3) and images.min() >= 0 and images.max() <= 1
    times = torch.cat(seen).double()
    assert len(times) >= 2 and bool(((times >= low * 0.999) & (times <= high * 1.001)).all()), times
    assert times.max() > 0.5 * high  # the first evaluation is at (or near) the prior's noise level
