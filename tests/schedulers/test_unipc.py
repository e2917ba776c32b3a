"""UniPCScheduler against diffusers' UniPCMultistepScheduler: the same steps on the same log-SNR grid.

diffusers' scheduler is discrete-time (DDPM's alphas_cumprod); ours takes its grid as custom times of a continuous VP
SDE with the same log-SNR values, so both see the same (a, s) levels and the same exact epsilon of a mixture.
"""

import math

import pytest
import torch
from diffusers import UniPCMultistepScheduler

from diffusers_sde import GaussianMixture, UniPCScheduler
from diffusers_sde.schedulers.scheduling_unipc import UNIPC_THIRD_ORDER_MAX_STEP
from diffusers_sde.schedulers.time_grids import TAIL_LOG_SNR

NUM_STEPS = 20  # >= 15: our lower_order_final leaves this grid alone; diffusers' lowers its last two steps only


def _mixture():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(2, 8, generator=generator, dtype=torch.float64)
    variances = 0.05 + 0.1 * torch.rand(2, 8, generator=generator, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), means, variances)


def _run_diffusers(mixture, solver_order, solver_type, x):
    scheduler = UniPCMultistepScheduler(solver_order=solver_order, solver_type=solver_type, lower_order_final=True)
    scheduler.set_timesteps(NUM_STEPS)
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    log_snrs, samples = [], []
    for t in scheduler.timesteps:
        a, s = alphas_cumprod[t].sqrt(), (1 - alphas_cumprod[t]).sqrt()
        log_snrs.append(math.log(a / s))
        x = scheduler.step(-s * mixture.score(x, a, s), t, x).prev_sample
        samples.append(x)
    return log_snrs, samples


def _run_ours(mixture, solver_order, solver_type, log_snrs, x):
    # beta_max 21: the continuous VP reaches the discrete schedule's lowest log-SNR (t = 999) before t = 1
    scheduler = UniPCScheduler(sde_type="vp", beta_max=21.0, solver_order=solver_order, solver_type=solver_type,
                               prediction_type="epsilon", timestep_type="continuous")
    times = scheduler.sde.time_from_log_snr(torch.tensor(log_snrs, dtype=torch.float64))
    scheduler.set_timesteps(timesteps=scheduler.parameterization.model_time(times).tolist())
    samples = []
    for t in scheduler.timesteps:
        a, s = scheduler.parameterization.marginal(scheduler.parameterization.time_from_model_time(t.double()))
        x = scheduler.step(-s * mixture.score(x, a, s), t, x).prev_sample
        samples.append(x)
    return samples


@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
@pytest.mark.parametrize("solver_order", [1, 2, 3])
def test_steps_equal_diffusers_unipc_on_the_same_grid(solver_order, solver_type):
    mixture = _mixture()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_snrs, theirs = _run_diffusers(mixture, solver_order, solver_type, x.clone())
    ours = _run_ours(mixture, solver_order, solver_type, log_snrs, x.clone())
    # diffusers lowers the order of its last two steps (lower_order_final) and its bh1 step to sigma = 0 is NaN
    # (B(h) = -inf times a zero correction); every step before them is the same algorithm.
    for index in range(NUM_STEPS - 2):
        torch.testing.assert_close(ours[index], theirs[index], rtol=1e-5, atol=1e-6, msg=f"step {index}")
    if solver_order <= 2 and solver_type == "bh2":
        torch.testing.assert_close(ours[-1], theirs[-1], rtol=1e-5, atol=1e-6)  # the denoised sample itself


def test_variants_differ_at_order_two_and_hardly_at_order_three():
    mixture = _mixture()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_snrs, _ = _run_diffusers(mixture, 1, "bh2", x.clone())
    final = {(order, variant): _run_ours(mixture, order, variant, log_snrs, x.clone())[-1]
             for order in (2, 3) for variant in ("bh1", "bh2")}
    order_two = (final[2, "bh1"] - final[2, "bh2"]).abs().max()
    order_three = (final[3, "bh1"] - final[3, "bh2"]).abs().max()
    assert order_two > 1e-4  # every step has one difference
    assert order_three < order_two / 10  # only the two warm-up steps have one


@pytest.mark.parametrize("lower_order_final", [True, False])
def test_lower_order_final_takes_the_last_step_of_a_short_grid_at_order_one(lower_order_final):
    scheduler = UniPCScheduler(sde_type="ve", lower_order_final=lower_order_final)
    scheduler.set_timesteps(14)  # log-SNR steps of 0.66 (sigma 50 -> 0.01): third order everywhere else
    assert [len(entry.predictor) for entry in scheduler._plan[2:-2]] == [2] * 10
    assert len(scheduler._plan[-2].predictor) == (0 if lower_order_final else 2)  # the step before the noise removal
    scheduler.set_timesteps(15)  # longer grids keep the full order either way
    assert len(scheduler._plan[-2].predictor) == 2


@pytest.mark.parametrize("sde_type", ["ve", "vp", "subvp"])
def test_long_log_snr_steps_are_predicted_at_order_two_outside_the_low_noise_tail(sde_type):
    scheduler = UniPCScheduler(sde_type=sde_type, lower_order_final=False)
    exempt = 0
    for num_steps in (10, 15, 20):
        scheduler.set_timesteps(num_steps)
        lams = [math.log(level.a / level.s) for level in scheduler.grid_levels]
        for index, entry in enumerate(scheduler._plan[2:-1], start=2):
            long_step = lams[index + 1] - lams[index] > UNIPC_THIRD_ORDER_MAX_STEP
            capped = long_step and lams[index] < TAIL_LOG_SNR
            exempt += long_step and not capped
            assert len(entry.predictor) == (1 if capped else 2), (num_steps, index)
    assert (exempt > 0) == (sde_type == "subvp")  # only sub-VP's grid reaches into the tail with long steps
