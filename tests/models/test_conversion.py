"""The converter: original checkpoint + config -> a ScoreSDEPipeline whose network gives the original's outputs."""

import pickle

import pytest
import torch
from diffusers import DiffusionPipeline
from fixtures import load_fixture
from original_checkpoints import write_config_file, write_original_checkpoint

from diffusers_sde import NCSNppModel, PredictorCorrectorScheduler, ScoreSDEPipeline
from diffusers_sde.cli import main as cli_main
from diffusers_sde.models.conversion import (convert_checkpoint, convert_state_dict, load_original_checkpoint, model_config,
                                            resolve_config)


def _converted_output(folder, family, loader=ScoreSDEPipeline):
    _, _, inputs, expected = load_fixture(family)
    pipe = loader.from_pretrained(folder)
    assert type(pipe.unet) is NCSNppModel
    with torch.no_grad():
        output = pipe.unet(inputs["sample"], inputs["timestep"]).sample
    return pipe, output, expected


def _convert(tmp_path, family, true_weights="ema", weights="ema"):
    config, _, _, _ = load_fixture(family)
    checkpoint = write_original_checkpoint(tmp_path / "checkpoint_8.pth", family, true_weights)
    config_file = write_config_file(tmp_path / f"{family}.py", config)
    convert_checkpoint(str(checkpoint), str(config_file), str(tmp_path / "out"), weights=weights)
    return tmp_path / "out"


@pytest.mark.parametrize("weights", ["ema", "model"])
def test_converted_pipeline_gives_the_original_output(tmp_path, weights):
    folder = _convert(tmp_path, "ve_ncsnpp_continuous", true_weights=weights, weights=weights)
    _, output, expected = _converted_output(folder, "ve_ncsnpp_continuous")
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_default_weights_are_the_ema(tmp_path):
    # The fixture's weights sit in the raw model; the EMA holds perturbed ones: the default must not pick the raw.
    folder = _convert(tmp_path, "vp_ddpmpp_continuous", true_weights="model")
    _, output, expected = _converted_output(folder, "vp_ddpmpp_continuous")
    assert (output - expected).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["vp_ddpmpp_continuous", "ve_ncsnpp_discrete", "ddpm_ve"])
def test_scheduler_config_and_time_input_follow_the_original_config(tmp_path, family):
    config, _, inputs, expected = load_fixture(family)
    pipe, _, _ = _converted_output(_convert(tmp_path, family), family, loader=DiffusionPipeline)
    scheduler = pipe.scheduler
    assert isinstance(scheduler, PredictorCorrectorScheduler)
    assert scheduler.config.num_train_timesteps == config["model"]["num_scales"]
    assert scheduler.config.data_centered == config["data"]["centered"]
    assert scheduler.config.snr == config["sampling"]["snr"]
    if config["training"]["sde"] == "vesde":
        assert (scheduler.config.sde_type, scheduler.config.timestep_type) == ("ve", "sigma")
        assert scheduler.config.sigma_max == config["model"]["sigma_max"]
        # score_sde feeds a discrete VE model the index round((1 - t)(N - 1)); the converted one is fed sigma(t).
        n = config["model"]["num_scales"]
        t = 1 - inputs["timestep"].double() / (n - 1)
        model_time = scheduler.parameterization.model_time(t).float()
    else:
        assert (scheduler.config.sde_type, scheduler.config.prediction_type) == ("vp", "epsilon")
        assert scheduler.config.beta_max == config["model"]["beta_max"]
        model_time = inputs["timestep"]  # 999 t, as score_sde feeds continuous VP models
    with torch.no_grad():
        output = pipe.unet(inputs["sample"], model_time).sample
    torch.testing.assert_close(output, expected.float(), rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_round_trip_samples_are_bit_identical(tmp_path):
    folder = _convert(tmp_path, "ve_ncsnpp_continuous")
    pipe = ScoreSDEPipeline.from_pretrained(folder)
    pipe.save_pretrained(tmp_path / "again")
    again = ScoreSDEPipeline.from_pretrained(tmp_path / "again")

    def sample(p):
        return p(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images

    assert torch.equal(sample(pipe), sample(again))
    assert "ve_ncsnpp_continuous.py" in (folder / "README.md").read_text()


def test_cli_convert(tmp_path, capsys):
    config, _, _, _ = load_fixture("ve_ncsnpp_256")
    checkpoint = write_original_checkpoint(tmp_path / "checkpoint.pth", "ve_ncsnpp_256")
    config_file = write_config_file(tmp_path / "config.py", config)
    cli_main(["convert", "--checkpoint", str(checkpoint), "--config", str(config_file), "--output", str(tmp_path / "o")])
    assert f"saved {tmp_path / 'o'}" in capsys.readouterr().out
    _, output, expected = _converted_output(tmp_path / "o", "ve_ncsnpp_256")
    torch.testing.assert_close(output, expected.float(), rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_every_key_must_map(tmp_path):
    config, _, _, _ = load_fixture("ve_ncsnpp_continuous")
    config_file = write_config_file(tmp_path / "c.py", config)
    checkpoint = torch.load(write_original_checkpoint(tmp_path / "c.pth", "ve_ncsnpp_continuous", "model"),
                            weights_only=False)
    checkpoint["model"]["module.all_modules.999.weight"] = torch.zeros(1)
    del checkpoint["model"]["module.all_modules.1.bias"]
    torch.save(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match=r"unmapped checkpoint keys \['all_modules.999.weight'\].*not filled"
                                       r" \['time_dense.0.bias'\]"):
        convert_checkpoint(str(tmp_path / "bad.pth"), str(config_file), str(tmp_path / "out"), weights="model")
    assert not (tmp_path / "out").exists()


def test_weights_only_allows_numpy_scalars_and_nothing_else(tmp_path):
    path = write_original_checkpoint(tmp_path / "c.pth", "ve_ncsnpp_continuous")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # what a plain weights_only load of a released checkpoint does
    assert float(load_original_checkpoint(path)["optimizer"]["param_groups"][0]["lr"]) == 2e-4
    torch.save({"model": {}, "payload": _Unsafe()}, tmp_path / "unsafe.pth")
    with pytest.raises(pickle.UnpicklingError):
        load_original_checkpoint(tmp_path / "unsafe.pth")


class _Unsafe:
    pass


def test_config_names_and_checkpoint_folder_aliases():
    assert resolve_config("vp/cifar10_ddpm")[1] == "vp/ddpm/cifar10"
    ffhq, name = resolve_config("ve/ffhq_1024_ncsnpp_continuous")
    assert name == "ve/ffhq_ncsnpp_continuous" and ffhq["data"]["image_size"] == 1024
    deep, _ = resolve_config("configs/subvp/cifar10_ddpmpp_deep_continuous.py")
    assert deep["model"]["num_res_blocks"] == 8 and deep["training"]["sde"] == "subvpsde"
    with pytest.raises(ValueError, match="'ve/nope' is neither a file nor a known config. Known configs: .*ve/cifar10"):
        resolve_config("ve/nope")


def test_every_config_of_the_table_builds_its_network():
    from diffusers_sde.models.score_sde_configs import CONFIGS
    from diffusers_sde.models.conversion import model_config, scheduler_config

    for name, config in CONFIGS.items():
        with torch.device("meta"):  # shapes only: the 256 px and 1024 px networks would cost seconds to initialize
            model = NCSNppModel(**model_config(config))
        assert model.config.sample_size == config["data"]["image_size"], name
        PredictorCorrectorScheduler(**scheduler_config(config))


def test_stock_layout_is_refused_with_reasons_where_it_cannot_express_the_network(tmp_path):
    config, _, _, _ = load_fixture("ve_ncsnpp_continuous")
    checkpoint = write_original_checkpoint(tmp_path / "c.pth", "ve_ncsnpp_continuous")
    with pytest.raises(ValueError, match="no stock UNet2DModel layout: progressive='none'"):
        convert_checkpoint(str(checkpoint), str(write_config_file(tmp_path / "c.py", config)), str(tmp_path / "out"),
                           layout="unet2d")
    assert not (tmp_path / "out").exists()


def _hub_snapshot(*args):
    # The Hub cache layout helper of tests/pipelines/test_loading.py (one implementation, loaded by path).
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "pipelines", "test_loading.py")
    spec = importlib.util.spec_from_file_location("_pipeline_loading_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._hub_snapshot(*args)


@pytest.mark.parametrize("loader", [ScoreSDEPipeline, DiffusionPipeline], ids=lambda cls: cls.__name__)
def test_converted_pipeline_loads_from_a_hub_snapshot(tmp_path, loader):
    # On the Hub path diffusers refuses a component library it does not know unless the repo ships its code; the
    # converted pipeline records its network as ["diffusers_sde", "NCSNppModel"].
    folder = _convert(tmp_path, "ve_ncsnpp_256")
    _hub_snapshot(folder, tmp_path / "cache", "me/ncsnpp-256")
    pipe = loader.from_pretrained("me/ncsnpp-256", cache_dir=tmp_path / "cache")
    _, _, inputs, expected = load_fixture("ve_ncsnpp_256")
    assert type(pipe.unet) is NCSNppModel
    with torch.no_grad():
        output = pipe.unet(inputs["sample"], inputs["timestep"]).sample
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path):
    checkpoint = write_original_checkpoint(tmp_path / "c.pth", "ve_ncsnpp_continuous")
    with pytest.raises(SystemExit, match="diffusers-sde convert: --config 've/ncsnv2/cifar10' is neither a file nor"
                                         " a known config.*NCSN / NCSNv2 .* not supported"):
        cli_main(["convert", "--checkpoint", str(checkpoint), "--config", "ve/ncsnv2/cifar10", "--output",
                  str(tmp_path / "o")])


@pytest.mark.parametrize("family", ["ve_ncsnpp_continuous", "ve_ncsnpp_256", "ncsnpp_ddpm_blocks_cat", "ddpm_ve"])
def test_backward_map_of_the_test_helper_restores_the_original_keys(family):
    # original_state_dict (tests only) must invert the converter exactly, keys and values, on real original state_dicts.
    from original_checkpoints import original_state_dict

    config, state, _, _ = load_fixture(family)
    model = NCSNppModel(**model_config(config))
    model.load_state_dict(convert_state_dict(state, model))
    restored = original_state_dict(model)
    assert set(restored) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(restored[key].to(value.dtype), value, rtol=0, atol=1e-7 if key == "sigmas" else 0)


def test_missing_ema_and_an_occupied_output_are_refused(tmp_path):
    config, state, _, _ = load_fixture("ve_ncsnpp_continuous")
    config_file = str(write_config_file(tmp_path / "c.py", config))
    torch.save({"model": state, "step": 3}, tmp_path / "raw.pth")
    with pytest.raises(ValueError, match="has no 'ema' entry; pass weights='model'"):
        convert_checkpoint(str(tmp_path / "raw.pth"), config_file, str(tmp_path / "out"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        convert_checkpoint(str(tmp_path / "raw.pth"), config_file, str(tmp_path / "taken"), weights="model")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".converting-")]  # no staging folder left behind
