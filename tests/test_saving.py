"""Atomic saving: a stopped save never leaves a folder that loads a mix of old and new parts."""

import os

import pytest
import torch
from testing_utils import tiny_unet

from diffusers_sde import PredictorCorrectorScheduler, ScoreSDEPipeline
from diffusers_sde.saving import save_pipeline_atomically


def _pipeline(sde_type, seed):
    torch.manual_seed(seed)
    return ScoreSDEPipeline(unet=tiny_unet(), scheduler=PredictorCorrectorScheduler(sde_type=sde_type))


def test_a_pipeline_replaces_the_old_one_and_keeps_the_other_contents(tmp_path):
    save_pipeline_atomically(_pipeline("ve", 0), tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "state.json").write_text("{}")
    new = _pipeline("vp", 1)
    save_pipeline_atomically(new, tmp_path)
    loaded = ScoreSDEPipeline.from_pretrained(tmp_path)
    assert loaded.scheduler.config.sde_type == "vp"
    for name, value in new.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], value)
    assert (tmp_path / "checkpoints" / "state.json").read_text() == "{}"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-save-")]


def test_a_save_stopped_halfway_does_not_load_as_a_mixed_pipeline(tmp_path, monkeypatch):
    save_pipeline_atomically(_pipeline("ve", 0), tmp_path)
    moved, replace = [], os.replace

    def stop_after_one_component(source, target):
        if moved:
            raise KeyboardInterrupt  # Ctrl-C between the unet and the scheduler
        moved.append(target)
        replace(source, target)

    monkeypatch.setattr(os, "replace", stop_after_one_component)
    with pytest.raises(KeyboardInterrupt):
        save_pipeline_atomically(_pipeline("vp", 1), tmp_path)
    monkeypatch.undo()
    assert len(moved) == 1 and not (tmp_path / "model_index.json").exists()
    with pytest.raises((OSError, ValueError)):
        ScoreSDEPipeline.from_pretrained(tmp_path)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-save-")]
