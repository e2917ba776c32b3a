"""NCSNppModel against outputs of the original score_sde networks on the same weights and inputs."""

import pytest
import torch
from fixtures import FAMILIES, load_fixture

from diffusers_sde import NCSNppModel
from diffusers_sde.models.conversion import convert_state_dict, model_config


def _converted(family, **overrides):
    config, state, inputs, expected = load_fixture(family)
    model = NCSNppModel(**dict(model_config(config), **overrides)).eval()
    model.load_state_dict(convert_state_dict(state, model))
    return model, config, inputs, expected


def _assert_close(actual, expected):
    assert actual.shape == expected.shape
    # The original keeps its noise levels in float64, so a network that divides by them returns float64.
    torch.testing.assert_close(actual, expected.float(), rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_every_family_has_a_fixture():
    assert {"ve_ncsnpp_continuous", "ve_ncsnpp_256", "ve_ncsnpp_discrete", "vp_ddpmpp_continuous",
            "ncsnpp_ddpm_blocks_cat", "ddpm_ve"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_output_as_the_original_network(family):
    # Fed exactly what the original was fed (a discrete VE model: the noise-level index itself).
    model, _, inputs, expected = _converted(family, sigma_input=False)
    with torch.no_grad():
        output = model(inputs["sample"], inputs["timestep"]).sample
    _assert_close(output, expected)


@pytest.mark.parametrize("family", ["ve_ncsnpp_discrete", "ddpm_ve"])
def test_discrete_ve_model_fed_sigma_looks_its_index_up(family):
    # score_sde feeds a discrete VE model round((1 - t)(N - 1)); fed sigma_i = sigmas[i] it must give the same output.
    model, config, inputs, expected = _converted(family)
    assert model.config.sigma_input
    m = config["model"]
    index = inputs["timestep"].double()
    sigma = m["sigma_max"] * (m["sigma_min"] / m["sigma_max"]) ** (index / (m["num_scales"] - 1))
    with torch.no_grad():
        output = model(inputs["sample"], sigma.float()).sample
    _assert_close(output, expected)


def test_unknown_option_names_argument_value_and_choices():
    with pytest.raises(ValueError, match=r"progressive must be one of \('none', 'output_skip', 'residual'\), got 'skip'"):
        NCSNppModel(progressive="skip")
    with pytest.raises(ValueError, match="sample_size=20 must be divisible"):
        NCSNppModel(sample_size=20, ch_mult=(1, 2, 2, 2))


@pytest.mark.parametrize("sde_type", ["ve", "vp"])
def test_trainer_trains_an_ncsnpp_preset(tmp_path, sde_type):
    from diffusers_sde import ScoreSDEPipeline
    from diffusers_sde.training import TrainingConfig, train

    config = TrainingConfig(output_dir=str(tmp_path / "out"), model_preset="ncsnpp-digits-tiny", sde_type=sde_type,
                            max_steps=2, batch_size=4, warmup_steps=1, checkpointing_steps=0, log_every=0)
    trained = train(config).unet
    pipe = ScoreSDEPipeline.from_pretrained(config.output_dir)
    assert type(pipe.unet) is NCSNppModel
    assert pipe.unet.config.embedding_type == ("fourier" if sde_type == "ve" else "positional")
    for name, value in trained.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[name], value), name
    images = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 8, 8, 1) and torch.isfinite(torch.from_numpy(images)).all()


@pytest.mark.parametrize("embedding_type", ["fourier", "positional"])
def test_bfloat16_model_keeps_its_time_input_exact(embedding_type):
    # A bf16 model runs (its float32 embedding is cast to the first layer's dtype) and stays close to float32: the time
    # input is kept in float32, as bf16 cannot hold noise-level indices such as 999 (it rounds them to 1000).
    torch.manual_seed(0)
    model = NCSNppModel(sample_size=8, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                        embedding_type=embedding_type, scale_by_sigma=True, sigma_input=embedding_type == "positional")
    x, sigma = torch.rand(2, 3, 8, 8), torch.tensor([1.0, 20.0])
    with torch.no_grad():
        reference = model(x, sigma).sample
        half = model.to(torch.bfloat16)(x.bfloat16(), sigma).sample
    assert half.dtype == torch.bfloat16
    assert (half.float() - reference).abs().max() < 0.02 * reference.abs().max()
