"""DDGAN networks, losses, pipeline and training, on tiny networks."""

import math
import os

import pytest
import torch
from diffusers import DiffusionPipeline
from torch import nn

from diffusers_sde import DDGANDiscriminator, DDGANGenerator, DDGANPipeline, DDGANScheduler
from diffusers_sde.cli import build_parser
from diffusers_sde.ddgan import discriminator_loss, generator_loss, r1_norm
from diffusers_sde.ddgan.training import DDGANTrainingConfig, train_ddgan
from diffusers_sde.training import TrainingInterrupted

TINY = dict(block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8, latent_dim=4)


def _pipeline(num_timesteps=3):
    torch.manual_seed(0)
    pipe = DDGANPipeline(DDGANGenerator(**TINY), DDGANScheduler(num_timesteps=num_timesteps))
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _LinearCritic(nn.Module):
    """D(x_prev, x, t) = <w, x_prev> + c: its gradient in x_prev is w everywhere."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, previous, sample, time):
        return (previous * self.weight).flatten(1).sum(1) + self.bias


def test_losses_and_r1_against_closed_forms():
    weight = torch.full((1, 2, 2), 0.5)
    real = torch.randn(3, 1, 2, 2, requires_grad=True)
    fake, sample = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    critic = _LinearCritic(weight, 0.3)
    real_logits = critic(real, sample, None).detach()
    fake_logits = critic(fake, sample, None)
    loss, penalty = discriminator_loss(critic, real, fake, sample, None, r1_gamma=0.2)
    sp = lambda v: torch.log1p(torch.exp(v))  # noqa: E731 - softplus written out
    expected_gan = sp(-real_logits).mean() + sp(fake_logits).mean()
    assert penalty.item() == pytest.approx(0.2 / 2 * 4 * 0.25)  # gamma / 2 * ||w||^2
    assert loss.item() == pytest.approx(expected_gan.item() + penalty.item(), rel=1e-6)
    assert generator_loss(critic, fake, sample, None).item() == pytest.approx(sp(-fake_logits).mean().item(), rel=1e-6)
    # R1 of a quadratic critic D = sum x^2: ||grad||^2 = 4 ||x||^2.
    x = torch.randn(5, 1, 2, 2, requires_grad=True)
    assert r1_norm(x.pow(2).flatten(1).sum(1), x).item() == pytest.approx(
        (4 * x.detach().pow(2).flatten(1).sum(1)).mean().item(), rel=1e-6)


def test_generator_uses_its_latent_and_discriminator_its_time():
    torch.manual_seed(0)
    generator, discriminator = DDGANGenerator(**TINY), DDGANDiscriminator(block_out_channels=(4, 8), time_embedding_dim=8)
    x = torch.randn(2, 1, 8, 8)
    out = [generator(x, torch.tensor([10.0, 10.0]), torch.randn(2, 4)).sample for _ in range(2)]
    assert out[0].shape == x.shape and (out[0] - out[1]).abs().max() > 1e-4
    logits = [discriminator(x, x, torch.tensor([time, time])) for time in (10.0, 900.0)]
    assert logits[0].shape == (2,) and (logits[0] - logits[1]).abs().max() > 1e-6


def test_pipeline_is_batch_invariant_with_a_generator_list():
    pipe = _pipeline()
    batch = pipe(batch_size=3, generator=[torch.Generator().manual_seed(s) for s in range(3)], output_type="latent")
    single = pipe(batch_size=1, generator=[torch.Generator().manual_seed(2)], output_type="latent")
    assert batch.nfe == 3
    torch.testing.assert_close(batch.images[2:], single.images, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="generator is a list of 2 generators but batch_size is 3"):
        pipe(batch_size=3, generator=[torch.Generator()] * 2)


def test_last_step_returns_the_generators_prediction():
    """At k = 1 the posterior is the point x_0: the output is G's prediction at level 1."""
    pipe = _pipeline(num_timesteps=1)
    latents = torch.randn(2, 1, 8, 8)
    out = pipe(batch_size=2, latents=latents, generator=torch.Generator().manual_seed(0), output_type="latent").images
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    expected = pipe.generator(latents, pipe.scheduler.model_time(1), z).sample
    torch.testing.assert_close(out, expected)


def test_save_load_round_trip_is_bit_identical(tmp_path):
    pipe = _pipeline()
    pipe.save_pretrained(tmp_path)
    for loader in (DDGANPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is DDGANPipeline and loaded.scheduler.config.num_timesteps == 3
        loaded.set_progress_bar_config(disable=True)
        for key, value in pipe.generator.state_dict().items():
            assert torch.equal(loaded.generator.state_dict()[key], value)
        draws = [p(batch_size=2, generator=torch.Generator().manual_seed(1), output_type="pt").images
                 for p in (pipe, loaded)]
        assert torch.equal(draws[0], draws[1])


def _config(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), model_preset="digits-mini", latent_dim=4,
                  discriminator_channels="4,8", batch_size=8, max_steps=3, checkpointing_steps=2, log_every=0)
    return DDGANTrainingConfig(**{**values, **overrides})


def _weights(pipe):
    return torch.cat([p.detach().flatten() for p in pipe.generator.parameters()])


def test_training_resumes_exactly_and_saves_a_loadable_pipeline(tmp_path):
    straight = train_ddgan(_config(tmp_path / "a"))
    train_ddgan(_config(tmp_path / "b", max_steps=2))
    resumed = train_ddgan(_config(tmp_path / "b", resume="latest"))
    assert torch.equal(_weights(straight), _weights(resumed))
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "b" / "out")
    assert torch.equal(_weights(loaded), _weights(resumed))
    with pytest.raises(ValueError, match="--latent-dim 4 -> 5"):
        train_ddgan(_config(tmp_path / "b", latent_dim=5, resume="latest"))


def test_non_finite_loss_stops_naming_the_step(tmp_path, monkeypatch):
    import diffusers_sde.ddgan.training as training

    monkeypatch.setattr(training, "generator_loss", lambda *args: torch.tensor(math.nan, requires_grad=True))
    with pytest.raises(FloatingPointError, match="generator loss is nan at step 1; stopped without saving"):
        train_ddgan(_config(tmp_path))
    assert not os.path.exists(tmp_path / "out" / "model_index.json")


def test_interrupt_names_the_last_checkpoint(tmp_path, monkeypatch):
    import diffusers_sde.ddgan.training as training

    calls = []

    def interrupting(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("SIGTERM")
        return generator_loss(*args)

    monkeypatch.setattr(training, "generator_loss", interrupting)
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 2/3; last checkpoint: .*checkpoint-2"):
        train_ddgan(_config(tmp_path))


@pytest.mark.parametrize("option, value, message", [
    ("--num-timesteps", "0", "--num-timesteps must be an integer >= 1, got 0"),
    ("--r1-gamma", "-1", "--r1-gamma must be >= 0"),
    ("--discriminator-channels", "8,x", "--discriminator-channels must be comma-separated positive integers"),
])
def test_cli_refuses_bad_options(tmp_path, option, value, message, capsys):
    args = build_parser().parse_args(["train-ddgan", "--output-dir", str(tmp_path), option, value])
    with pytest.raises(ValueError, match=message):
        args.func(args)


def test_minibatch_standard_deviation_against_its_definition():
    from diffusers_sde.ddgan.models import _minibatch_std

    hidden = torch.randn(6, 3, 2, 2)
    feature = _minibatch_std(hidden, 4)  # 4 does not divide 6: groups of 3, {0, 2, 4} and {1, 3, 5}
    for members in ([0, 2, 4], [1, 3, 5]):
        expected = hidden[members].std(0, unbiased=False).mean()
        for index in members:
            torch.testing.assert_close(feature[index], expected.expand(1, 2, 2))
