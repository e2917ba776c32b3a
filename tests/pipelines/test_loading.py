"""Save/load round trips: local folders, a simulated Hub snapshot, and stock diffusers repos."""

import hashlib
import json
import os
import shutil

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, ScoreSdeVePipeline, ScoreSdeVeScheduler
from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
from huggingface_hub.file_download import repo_folder_name

from testing_utils import tiny_unet
from diffusers_sde import PredictorCorrectorScheduler, ProbabilityFlowScheduler, ScoreSDEPipeline


def _samples(pipe, seed=0):
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(seed), output_type="latent").images


def _hub_snapshot(folder, cache_dir, repo_id):
    """Lay `folder` out as the Hub cache does after a download (blobs, snapshots, refs, tree listing)."""
    storage = os.path.join(cache_dir, repo_folder_name(repo_id=repo_id, repo_type="model"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    entries = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            data = open(path, "rb").read()
            blob = hashlib.sha256(data).hexdigest()
            os.makedirs(os.path.join(storage, "blobs"), exist_ok=True)
            shutil.copyfile(path, os.path.join(storage, "blobs", blob))
            target = os.path.join(storage, "snapshots", commit, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
            entries[relative] = TreeCacheEntry(size=len(data), blob_id=hashlib.sha1(data).hexdigest())
    os.makedirs(os.path.join(storage, "refs"), exist_ok=True)
    with open(os.path.join(storage, "refs", "main"), "w") as f:
        f.write(commit)
    write_tree_cache(storage, commit, entries)


@pytest.fixture
def saved(tmp_path):
    pipe = ScoreSDEPipeline(unet=tiny_unet(1), scheduler=PredictorCorrectorScheduler(sde_type="subvp", beta_max=15.0))
    pipe.save_pretrained(tmp_path / "model")
    return pipe, tmp_path / "model"


def test_save_writes_a_loadable_model_index(saved):
    _, folder = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "ScoreSDEPipeline"
    assert index["scheduler"] == ["diffusers_sde", "PredictorCorrectorScheduler"]
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()


@pytest.mark.parametrize("loader", [ScoreSDEPipeline, DiffusionPipeline])
def test_local_round_trip_is_bit_identical(saved, loader):
    pipe, folder = saved
    loaded = loader.from_pretrained(folder)
    assert type(loaded) is ScoreSDEPipeline and type(loaded.scheduler) is PredictorCorrectorScheduler
    assert loaded.scheduler.config.sde_type == "subvp" and loaded.scheduler.config.beta_max == 15.0
    assert torch.equal(_samples(loaded), _samples(pipe))


@pytest.mark.parametrize("loader", [ScoreSDEPipeline, DiffusionPipeline])
def test_hub_snapshot_round_trip_is_bit_identical(saved, tmp_path, loader, monkeypatch):
    # HF_HUB_OFFLINE=1: the loader resolves the repo id through the Hub cache, reading the cached tree listing,
    # and applies the Hub-only check that every non-diffusers library is known or ships a .py file.
    pipe, folder = saved
    _hub_snapshot(folder, tmp_path / "cache", "me/my-model")
    loaded = loader.from_pretrained("me/my-model", cache_dir=tmp_path / "cache")
    assert type(loaded.scheduler) is PredictorCorrectorScheduler
    assert torch.equal(_samples(loaded), _samples(pipe))


def test_hub_check_is_really_exercised(saved, tmp_path):
    # Control: a component recorded under an unregistered module path is refused on the Hub path.
    _, folder = saved
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers_sde.schedulers.scheduling_predictor_corrector", "PredictorCorrectorScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    _hub_snapshot(folder, tmp_path / "cache", "me/unregistered")
    with pytest.raises(ValueError, match="does not exist"):
        ScoreSDEPipeline.from_pretrained("me/unregistered", cache_dir=tmp_path / "cache")


def test_swapped_scheduler_round_trips(saved, tmp_path):
    pipe, _ = saved
    pipe.scheduler = ProbabilityFlowScheduler.from_config(pipe.scheduler.config, integrator="euler")
    pipe.save_pretrained(tmp_path / "ode")
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "ode")
    assert type(loaded.scheduler) is ProbabilityFlowScheduler and loaded.scheduler.config.sde_type == "subvp"
    assert torch.equal(_samples(loaded), _samples(pipe))


@pytest.mark.parametrize("from_hub", [False, True], ids=["folder", "hub-snapshot"])
def test_stock_score_sde_ve_repo_loads(tmp_path, from_hub):
    # The layout of the google/ncsnpp-* repos: ScoreSdeVePipeline + ScoreSdeVeScheduler + a Fourier UNet2DModel.
    ScoreSdeVePipeline(unet=tiny_unet(3, fourier=True), scheduler=ScoreSdeVeScheduler(sigma_max=90.0, snr=0.17)).save_pretrained(tmp_path / "ve")
    if from_hub:
        _hub_snapshot(tmp_path / "ve", tmp_path / "cache", "google/ncsnpp-tiny")
        pipe = ScoreSDEPipeline.from_pretrained("google/ncsnpp-tiny", cache_dir=tmp_path / "cache")
    else:
        pipe = ScoreSDEPipeline.from_pretrained(tmp_path / "ve")
    scheduler = pipe.scheduler
    assert type(scheduler) is PredictorCorrectorScheduler
    assert (scheduler.config.sde_type, scheduler.config.sigma_max, scheduler.snr) == ("ve", 90.0, 0.17)
    out = _samples(pipe)
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


def test_stock_ddpm_repo_loads(tmp_path):
    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(beta_end=0.03)).save_pretrained(tmp_path / "ddpm")
    pipe = ScoreSDEPipeline.from_pretrained(tmp_path / "ddpm")
    assert pipe.scheduler.config.sde_type == "vp" and pipe.scheduler.config.beta_max == pytest.approx(30.0)
    assert torch.isfinite(_samples(pipe)).all()


def test_unmappable_scheduler_repo_is_refused(tmp_path):
    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2")).save_pretrained(tmp_path / "cos")
    with pytest.raises(ValueError, match="beta_schedule='squaredcos_cap_v2'.*cannot be mapped"):
        ScoreSDEPipeline.from_pretrained(tmp_path / "cos")
