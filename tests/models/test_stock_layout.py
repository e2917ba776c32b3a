"""NCSN++ networks of the 256 px / 1024 px VE layout as diffusers' stock UNet2DModel (Skip blocks)."""

import pytest
import torch

from diffusers_sde import NCSNppModel
from diffusers_sde.models.conversion import model_config, resolve_config
from diffusers_sde.models.stock_layout import to_unet2d_model, unet2d_layout_problems


def _layout_256(**overrides):
    # ve/ffhq_256_ncsnpp_continuous shrunk: 128 channels are the fewest the stock attention handles like NCSN++.
    config = model_config(resolve_config("ve/ffhq_256_ncsnpp_continuous")[0])
    config.update(sample_size=16, nf=128, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(8,), **overrides)
    torch.manual_seed(0)
    model = NCSNppModel(**config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # the initializer zeroes last layers, which would hide mistakes
            parameter.normal_(0, 0.05)
    return model


def test_stock_unet2d_computes_the_same_function():
    # NCSNppModel equals the original network (test_ncsnpp.py); the stock layout must equal NCSNppModel.
    model = _layout_256()
    unet = to_unet2d_model(model)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.7, 150.0])
    with torch.no_grad():
        expected, actual = model(x, sigma).sample, unet(x, sigma).sample
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def _paper_config(name):
    with torch.device("meta"):
        return NCSNppModel(**model_config(resolve_config(name)[0])).config


@pytest.mark.parametrize("name", ["ve/celebahq_256_ncsnpp_continuous", "ve/church_ncsnpp_continuous",
                                  "ve/bedroom_ncsnpp_continuous", "ve/ffhq_256_ncsnpp_continuous",
                                  "ve/ffhq_ncsnpp_continuous", "ve/celebahq_ncsnpp_continuous"])
def test_the_256_and_1024_px_paper_networks_fit_the_stock_layout(name):
    assert unet2d_layout_problems(_paper_config(name)) == []


def test_the_cifar10_networks_are_refused_with_reasons():
    assert unet2d_layout_problems(_paper_config("ve/cifar10_ncsnpp_continuous")) == [
        "progressive='none' (the stock layout has 'output_skip')",
        "progressive_input='residual' (the stock layout has 'input_skip')"]
    with pytest.raises(ValueError, match="no stock UNet2DModel layout: embedding_type='positional'"):
        to_unet2d_model(NCSNppModel(sample_size=8, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                                    embedding_type="positional", scale_by_sigma=False))


def test_stock_layout_samples_like_the_ncsnpp_model_after_a_save(tmp_path):
    from diffusers import DiffusionPipeline, UNet2DModel

    from diffusers_sde import PredictorCorrectorScheduler, ScoreSDEPipeline

    model = _layout_256()
    scheduler = PredictorCorrectorScheduler(sde_type="ve", sigma_max=348.0, num_train_timesteps=2000, snr=0.075)
    ScoreSDEPipeline(unet=to_unet2d_model(model), scheduler=scheduler).save_pretrained(tmp_path / "stock")
    stock = DiffusionPipeline.from_pretrained(tmp_path / "stock")
    assert type(stock.unet) is UNet2DModel
    assert type(UNet2DModel.from_pretrained(tmp_path / "stock", subfolder="unet")) is UNet2DModel

    def sample(pipe):
        return pipe(batch_size=1, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                    output_type="pt").images

    torch.testing.assert_close(sample(stock), sample(ScoreSDEPipeline(unet=model, scheduler=scheduler)),
                               rtol=1e-3, atol=1e-3)


def test_converter_writes_the_stock_layout_from_an_original_checkpoint(tmp_path):
    from diffusers import UNet2DModel
    from original_checkpoints import original_state_dict, write_config_file

    from diffusers_sde import ScoreSDEPipeline
    from diffusers_sde.models.conversion import convert_checkpoint

    model = _layout_256()
    sections = resolve_config("ve/ffhq_256_ncsnpp_continuous")[0]
    sections["model"].update(nf=128, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[8])
    sections["data"]["image_size"] = 16
    torch.save({"model": {f"module.{k}": v for k, v in original_state_dict(model).items()}, "step": 7}, tmp_path / "c.pth")
    convert_checkpoint(str(tmp_path / "c.pth"), str(write_config_file(tmp_path / "c.py", sections)),
                       str(tmp_path / "out"), weights="model", layout="unet2d")
    pipe = ScoreSDEPipeline.from_pretrained(tmp_path / "out")
    assert type(pipe.unet) is UNet2DModel and "`UNet2DModel`" in (tmp_path / "out" / "README.md").read_text()
    x, sigma = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([3.0, 90.0])
    with torch.no_grad():
        expected = model(x, sigma).sample
        torch.testing.assert_close(pipe.unet(x, sigma).sample, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
