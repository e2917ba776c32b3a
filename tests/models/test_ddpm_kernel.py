"""Discrete-time VP models (stock google/ddpm-* repos, score_sde's DDPM configs) sampled with their own kernel.

Truth: diffusers' own ``DDPMScheduler.alphas_cumprod`` and the exact network of a Gaussian mixture on that kernel.
"""

import pytest
import torch
from diffusers import DDPMScheduler

from diffusers_sde import GaussianMixtureModel, Parameterization, PredictorCorrectorScheduler, VPSDE

# diffusers' betas (1e-4 .. 0.02, N = 1000; a float32 linspace), accumulated in float64.
ALPHAS_CUMPROD = torch.cumprod(1 - DDPMScheduler().betas.double(), dim=0)
RTOL = 1e-6  # the float32 rounding of diffusers' betas
N = len(ALPHAS_CUMPROD)


def test_kernel_is_ddpm_alphas_cumprod_at_every_index():
    t = torch.arange(N, dtype=torch.float64) / (N - 1)
    a, s = Parameterization(VPSDE(0.1, 20.0), "epsilon", "ddpm", N).marginal(t)
    torch.testing.assert_close(a, ALPHAS_CUMPROD.sqrt(), rtol=RTOL, atol=0)
    torch.testing.assert_close(s, (1 - ALPHAS_CUMPROD).sqrt(), rtol=RTOL, atol=0)
    # What the continuous kernel would have used instead (REFERENCE.md: 29% off in s at i = 1, 4.6% at i = 10).
    _, s_continuous = VPSDE(0.1, 20.0).marginal(t)
    relative = s_continuous / (1 - ALPHAS_CUMPROD).sqrt() - 1
    assert relative[1].item() == pytest.approx(-0.29, abs=0.01) and relative[10].item() == pytest.approx(-0.046, abs=0.002)


def test_kernel_between_indices_interpolates_log_alphas_cumprod_linearly():
    parameterization = Parameterization(VPSDE(0.1, 20.0), "epsilon", "ddpm", N)
    a, _ = parameterization.marginal(torch.tensor([10.25 / (N - 1)], dtype=torch.float64))
    expected = 0.5 * (0.75 * ALPHAS_CUMPROD[10].log() + 0.25 * ALPHAS_CUMPROD[11].log())
    torch.testing.assert_close(a.log(), expected.reshape(1), rtol=RTOL, atol=0)


def test_stock_ddpm_config_selects_the_ddpm_kernel():
    scheduler = PredictorCorrectorScheduler.from_config(DDPMScheduler().config)
    assert scheduler.config.timestep_type == "ddpm"
    scheduler.set_timesteps(10)
    assert scheduler.timesteps[0].item() == pytest.approx(N - 1)  # still fed the DDPM index t (N - 1)


def test_ddpm_timestep_type_needs_a_vp_sde():
    with pytest.raises(ValueError, match="timestep_type='ddpm'.*needs a VP SDE, got SubVPSDE"):
        PredictorCorrectorScheduler(sde_type="subvp", timestep_type="ddpm")


def _variance_ratio(mixture, network, timestep_type, predictor, batch=2000):
    scheduler = PredictorCorrectorScheduler.from_config(DDPMScheduler().config, timestep_type=timestep_type,
                                                        predictor=predictor)
    scheduler.set_timesteps(timesteps=list(range(N - 1, 0, -1)))  # DDPM's own indices 999 .. 1
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, mixture.means.shape[1], generator=generator, dtype=torch.float64)
    for timestep in scheduler.timesteps:
        x = scheduler.step(network(x, int(round(timestep.item()))), timestep, x, generator=generator).prev_sample
    return mixture.fidelity(x)["variance_ratio"]


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
def test_sampling_a_ddpm_network_with_its_own_kernel(mixture, predictor):
    # The exact epsilon network of the mixture on DDPM's kernel, and, as the reference, on the continuous VP kernel.
    def ddpm_network(x, index):
        a, s = ALPHAS_CUMPROD[index].sqrt(), (1 - ALPHAS_CUMPROD[index]).sqrt()
        return -s * mixture.score(x, a, s)

    def continuous_network(x, index):
        a, s = VPSDE(0.1, 20.0).marginal(torch.tensor(index / (N - 1), dtype=torch.float64))
        return -s * mixture.score(x, a, s)

    # On the same noise, the DDPM network sampled with its kernel matches a continuous network sampled with its own
    # (the samplers' discretization error is the same), while the continuous kernel shifts the variance ratio by
    # -0.01 (-0.02 with Euler-Maruyama): measured 1.0076 / 1.0091 / 0.9972 (reverse diffusion), 1.0058 / 1.0072 /
    # 0.9953 (ancestral), batch 4000.
    reference = _variance_ratio(mixture, continuous_network, "discrete", predictor)
    right = _variance_ratio(mixture, ddpm_network, "ddpm", predictor)
    wrong = _variance_ratio(mixture, ddpm_network, "discrete", predictor)
    assert abs(right - reference) < 0.003, (right, reference)
    assert wrong - reference < -0.008, (wrong, reference)


def test_mixture_model_on_the_ddpm_kernel_is_the_exact_network(mixture):
    model = GaussianMixtureModel.from_mixture(mixture, 1, 4, sde_type="vp", prediction_type="epsilon",
                                              timestep_type="ddpm")
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    index = 7
    a, s = ALPHAS_CUMPROD[index].sqrt(), (1 - ALPHAS_CUMPROD[index]).sqrt()
    expected = (-s * mixture.score(x.flatten(1), a, s)).view_as(x)
    torch.testing.assert_close(model(x, float(index)).sample, expected, rtol=RTOL, atol=1e-9)


def test_add_noise_of_a_stock_ddpm_config_is_ddpm_add_noise():
    ddpm = DDPMScheduler()
    scheduler = PredictorCorrectorScheduler.from_config(ddpm.config)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64)
    noise = torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64)
    timesteps = torch.tensor([0, 1, 10, 999])
    # diffusers keeps alphas_cumprod in float32: sqrt(1 - abar_0) = 0.01 is good to ~3e-4 relative.
    torch.testing.assert_close(scheduler.add_noise(x0, noise, timesteps), ddpm.add_noise(x0, noise, timesteps),
                               rtol=1e-5, atol=1e-5)
