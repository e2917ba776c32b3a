"""Cold Diffusion (Bansal et al. 2022): degradations, the two sampling algorithms against closed-form truth, the
scheduler contract and the pipeline's save/load."""

import json

import pytest
import torch
from diffusers import DiffusionPipeline, ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from diffusers_sde import (
    fit_channel_mean_mixture,
    BlurDegradation,
    ColdDiffusionPipeline,
    ColdDiffusionScheduler,
    ComposedDegradation,
    Degradation,
    DownsampleDegradation,
    FadeDegradation,
    MaskDegradation,
)

SHAPE = (2, 2, 8, 8)  # tiny images: every test runs in milliseconds


def images(seed=0, shape=SHAPE):
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def small_degradations():
    """One of each kind, small enough for 8x8 images; all linear (fade to 0)."""
    return {
        "blur": BlurDegradation(num_steps=6, kernel_size=5, kernel_std=0.5, kernel_std_rate=0.3),
        "mask": MaskDegradation(num_steps=5, mask_std=1.0, mask_std_growth=0.5),
        "downsample": DownsampleDegradation(num_steps=3),
        "fade": FadeDegradation(num_steps=5, value=0.0),
        "composed": ComposedDegradation([BlurDegradation(num_steps=3, kernel_size=3), DownsampleDegradation(num_steps=3)]),
    }


DEGRADATIONS = list(small_degradations())


def high_frequency_energy(x):
    """Sum of squared differences of neighbouring pixels."""
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).sum()


# --- degradations ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DEGRADATIONS)
def test_level_zero_is_the_identity(name):
    degradation = small_degradations()[name]
    x0 = images()
    assert torch.equal(degradation(x0, 0), x0)


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_per_sample_levels_match_one_level_calls(name):
    degradation = small_degradations()[name]
    x0 = images()
    levels = torch.tensor([degradation.num_steps, 1])
    together = degradation(x0, levels)
    for i, level in enumerate(levels.tolist()):
        assert torch.allclose(together[i:i + 1], degradation(x0[i:i + 1], level), atol=1e-12)


def test_blur_removes_high_frequencies_step_by_step_and_keeps_constants():
    blur = small_degradations()["blur"]
    x0 = images()
    energies = [high_frequency_energy(blur(x0, t)).item() for t in range(blur.num_steps + 1)]
    assert all(later < earlier for earlier, later in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.05 * energies[0]
    constant = torch.full(SHAPE, 0.7, dtype=torch.float64)  # reflect padding and normalized kernels keep constants
    assert torch.allclose(blur(constant, blur.num_steps), constant, atol=1e-12)


def test_blur_one_step_is_the_gaussian_kernel():
    blur = BlurDegradation(num_steps=1, kernel_size=3, kernel_stds=[0.8])
    x0 = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x0[0, 0, 2, 2] = 1.0  # an impulse away from the border: the output is the 3x3 kernel itself
    weights = torch.exp(-torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64) / (2 * 0.8 ** 2))
    weights = weights / weights.sum()
    expected = torch.zeros(5, 5, dtype=torch.float64)
    expected[1:4, 1:4] = weights[:, None] * weights[None]
    assert torch.allclose(blur(x0, 1)[0, 0], expected, atol=1e-12)


def test_paper_blur_defaults():
    blur = BlurDegradation()
    assert (blur.num_steps, blur.kernel_size) == (300, 27)
    assert blur.kernel_stds[0] == pytest.approx(1.0) and blur.kernel_stds[-1] == pytest.approx(torch.e ** 2.99)


def test_mask_hides_a_growing_centered_region():
    mask = small_degradations()["mask"]
    cumulative = torch.stack([mask.mask(t, 8, 9, dtype=torch.float64) for t in range(mask.num_steps + 1)])
    assert torch.equal(cumulative[0], torch.ones(8, 9, dtype=torch.float64))
    assert bool((cumulative[1:] <= cumulative[:-1]).all()) and bool((cumulative[1:] < cumulative[:-1]).any())
    assert cumulative[-1, 3:5, 4].max() < 0.05 and cumulative[-1, 0, 0] > cumulative[-1, 3, 4]  # centre hidden first
    x0 = images(shape=(2, 2, 8, 9))
    assert torch.allclose(mask(x0, 2), x0 * cumulative[2], atol=1e-12)


def test_downsample_averages_blocks_and_upsamples_by_repetition():
    downsample = small_degradations()["downsample"]
    x0 = images()
    for t in range(1, downsample.num_steps + 1):
        size = 2 ** t
        blocks = x0.reshape(2, 2, 8 // size, size, 8 // size, size).mean(dim=(3, 5))
        expected = blocks.repeat_interleave(size, dim=2).repeat_interleave(size, dim=3)
        assert torch.allclose(downsample(x0, t), expected, atol=1e-12)


def test_fade_is_the_convex_combination_with_the_constant():
    fade = FadeDegradation(num_steps=4, value=-0.5)
    x0 = images()
    for t in range(5):
        assert torch.allclose(fade(x0, t), (1 - t / 4) * x0 + (t / 4) * -0.5, atol=1e-12)
    assert not fade.is_linear and FadeDegradation(num_steps=4).is_linear


def test_composition_applies_each_degradation_at_the_same_level():
    blur, downsample = BlurDegradation(num_steps=3, kernel_size=3), DownsampleDegradation(num_steps=3)
    composed = ComposedDegradation([blur, downsample.to_config()])
    x0 = images()
    for t in range(4):
        assert torch.allclose(composed(x0, t), downsample(blur(x0, t), t), atol=1e-12)


@pytest.mark.parametrize("name", DEGRADATIONS + ["explicit_schedules"])
def test_config_round_trip_through_json(name):
    if name == "explicit_schedules":
        degradation = ComposedDegradation([BlurDegradation(num_steps=2, kernel_size=3, kernel_stds=[0.5, 0.9]),
                                           MaskDegradation(num_steps=2, mask_stds=[1.0, 1.5])])
    else:
        degradation = small_degradations()[name]
    config = json.loads(json.dumps(degradation.config))
    rebuilt = Degradation.from_config(config)
    assert type(rebuilt) is type(degradation) and rebuilt.to_config() == degradation.to_config()
    x0 = images()
    assert torch.equal(rebuilt(x0, 2), degradation(x0, 2))


# --- bad input -----------------------------------------------------------------------------------------------------
BAD_CONSTRUCTIONS = [
    (lambda: BlurDegradation(num_steps=3, kernel_size=3, kernel_stds=[1.0, 0.5, 2.0]),
     r"kernel_stds must be non-decreasing.*kernel_stds\[1\]=0.5"),
    (lambda: BlurDegradation(num_steps=3, kernel_size=3, kernel_stds=[1.0, 2.0]), "kernel_stds must hold one value per step"),
    (lambda: BlurDegradation(kernel_std_rate=-0.1), "kernel_std_rate must be a finite number >= 0, got -0.1"),
    (lambda: BlurDegradation(kernel_size=4), "kernel_size must be an odd integer"),
    (lambda: MaskDegradation(num_steps=2, mask_stds=[2.0, 1.0]), "mask_stds must be non-decreasing"),
    (lambda: MaskDegradation(mask_std_growth=-1), "mask_std_growth must be a finite number >= 0"),
    (lambda: FadeDegradation(num_steps=0),
     r"num_steps \(T, the number of degradation steps\) must be an integer >= 1, got 0"),
    (lambda: ComposedDegradation([FadeDegradation(num_steps=3), DownsampleDegradation(num_steps=2)]),
     r"share num_steps.*\[3, 2\]"),
    (lambda: Degradation.from_config({"type": "Sharpen"}), "'type' one of"),
]


@pytest.mark.parametrize("build, message", BAD_CONSTRUCTIONS)
def test_bad_construction_is_refused_naming_the_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_degradation_whose_level_zero_is_not_the_identity_is_refused():
    class Shifted(Degradation):
        def _degrade(self, x0, t):
            return x0 + 0.1  # wrong at t = 0 as well

    with pytest.raises(ValueError, match=r"Shifted: D\(x0, 0\) must be x0"):
        Shifted(num_steps=3)


@pytest.mark.parametrize("t", [-1, 6, 1.5, "2", torch.tensor([1, 2, 3]), torch.tensor([0, 7]), torch.tensor([0.5, 1.0])])
def test_levels_outside_zero_to_T_are_refused(t):
    with pytest.raises(ValueError, match=r"t must be an integer in 0\.\.5"):
        DownsampleDegradation(num_steps=5)(images(), t)  # discrete: real levels are refused too


def test_the_fade_takes_real_levels_in_closed_form():
    fade, x0 = FadeDegradation(num_steps=4, value=0.5), images()
    assert torch.allclose(fade(x0, 2.5), (1 - 2.5 / 4) * x0 + 2.5 / 4 * 0.5)
    levels = torch.tensor([0.25, 3.0])
    expected = torch.stack([(1 - level / 4) * image + level / 4 * 0.5 for level, image in zip(levels.tolist(), x0)])
    assert torch.allclose(fade(x0, levels), expected)
    for t in (-0.5, 4.5, torch.tensor([0.5, 4.5])):
        with pytest.raises(ValueError, match=r"t must be a number in \[0, 4\]"):
            fade(x0, t)
    assert fade.continuous_time and not DownsampleDegradation(num_steps=2).continuous_time


def test_blur_at_real_t_adds_that_fraction_of_the_next_steps_variance():
    """Closed form: Gaussian blurs add variances, so an impulse far from the borders spreads to per-axis variance
    sigma_1^2 + ... + sigma_n^2 + f sigma_{n+1}^2 at t = n + f (sampled kernels of std >= 1 match it to 1e-6)."""
    blur = BlurDegradation(num_steps=3, kernel_size=31, kernel_stds=[1.5, 2.0, 2.5])
    impulse = torch.zeros(1, 1, 81, 81, dtype=torch.float64)
    impulse[0, 0, 40, 40] = 1
    offsets = torch.arange(81, dtype=torch.float64) - 40
    for t, variance in ((1, 2.25), (1.5, 2.25 + 2.0), (2.25, 2.25 + 4.0 + 0.25 * 6.25), (3, 2.25 + 4.0 + 6.25)):
        blurred = blur(impulse, t)[0, 0]
        assert blurred.sum().item() == pytest.approx(1, abs=1e-12)
        assert (blurred.sum(dim=1) * offsets**2).sum().item() == pytest.approx(variance, abs=1e-6)
        assert (blurred.sum(dim=0) * offsets**2).sum().item() == pytest.approx(variance, abs=1e-6)


def test_mask_at_real_t_raises_the_next_factor_to_that_fraction():
    mask, x0 = MaskDegradation(num_steps=3, mask_stds=[1.0, 1.5, 2.0]), images()
    offsets = torch.arange(8, dtype=torch.float64) - 3.5
    squared_distance = offsets[:, None] ** 2 + offsets[None] ** 2

    def factor(beta):  # m_s = 1 - exp(-d^2 / (2 beta_s^2))
        return 1 - torch.exp(-squared_distance / (2 * beta**2))

    assert torch.allclose(mask(x0, 1.3), x0 * factor(1.0) * factor(1.5) ** 0.3, atol=1e-12)
    assert torch.allclose(mask(x0, 0.5), x0 * factor(1.0) ** 0.5, atol=1e-12)


@pytest.mark.parametrize("kind", ["blur", "mask"])
def test_real_levels_are_continuous_and_per_sample(kind):
    degradation, x0 = small_degradations()[kind], images()
    for step in range(degradation.num_steps):  # D(x0, t) runs from D(x0, n) to D(x0, n + 1) across a step
        assert torch.allclose(degradation(x0, step + 1e-9), degradation(x0, step), atol=1e-6)
        assert torch.allclose(degradation(x0, step + 1 - 1e-9), degradation(x0, step + 1), atol=1e-6)
    levels = torch.tensor([0.5, 2.75], dtype=torch.float64)
    expected = torch.cat([degradation(x0[i : i + 1], levels[i].item()) for i in range(2)])
    assert torch.allclose(degradation(x0, levels), expected, atol=1e-12)


def test_images_too_small_or_not_divisible_are_refused():
    with pytest.raises(ValueError, match="too small for kernel_size=27"):
        BlurDegradation(num_steps=2)(images(), 1)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*t = 16, got 8x8"):
        DownsampleDegradation(num_steps=4)(images(), 4)


# --- the paper's property: Algorithm 2 against Algorithm 1 ----------------------------------------------------------
def run_chain(scheduler, restore, sample, begin_index=0):
    """Run the scheduler from ``sample`` at ``timesteps[begin_index]``; returns {level: sample} along the way."""
    scheduler.set_begin_index(begin_index)
    visited = {int(scheduler.timesteps[begin_index]): sample}
    for t in scheduler.timesteps[begin_index:]:
        output = scheduler.step(restore(sample, t), t, sample)
        sample = output.prev_sample
        visited[output.prev_timestep] = sample
    return visited


LINEAR = ["blur", "mask", "downsample", "fade", "composed"]


@pytest.mark.parametrize("algorithm", ["improved", "naive"])
@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("num_inference_steps", [None, 2])
def test_exact_restoration_reproduces_every_degraded_level(name, algorithm, num_inference_steps):
    degradation = small_degradations()[name]
    scheduler = ColdDiffusionScheduler(degradation=degradation, algorithm=algorithm)
    scheduler.set_timesteps(num_inference_steps)
    x0 = images()
    visited = run_chain(scheduler, lambda sample, t: x0, degradation(x0, degradation.num_steps))
    assert 0 in visited and len(visited) == len(scheduler.timesteps) + 1
    for level, sample in visited.items():  # x_s = D(x0, s) for every visited s, down to x0 itself
        assert torch.allclose(sample, degradation(x0, level), atol=1e-10), level


@pytest.mark.parametrize("name", LINEAR)
def test_restoration_off_by_delta_follows_the_closed_form_of_each_algorithm(name):
    """R(x_t, t) = x0 + delta. By linearity, Alg. 2 telescopes to x_s = D(x0, s) + D(delta, s) - D(delta, T) and
    Alg. 1 gives x_s = D(x0, s) + D(delta, s): Alg. 2 ends at x0 + (I - D_T) delta, Alg. 1 at x0 + delta."""
    degradation = small_degradations()[name]
    total = degradation.num_steps
    x0, delta = images(0), 0.01 * images(1)
    start = degradation(x0, total)
    finals = {}
    for algorithm in ("improved", "naive"):
        scheduler = ColdDiffusionScheduler(degradation=degradation, algorithm=algorithm)
        scheduler.set_timesteps()
        visited = run_chain(scheduler, lambda sample, t: x0 + delta, start)
        for s in range(total):
            expected = degradation(x0, s) + degradation(delta, s)
            if algorithm == "improved":
                expected = expected - degradation(delta, total)
            assert torch.allclose(visited[s], expected, atol=1e-12), (algorithm, s)
        finals[algorithm] = (visited[0] - x0).norm() / delta.norm()
    assert finals["naive"] == pytest.approx(1.0)  # Alg. 1 ends exactly delta away
    assert finals["improved"] <= 1.05  # Alg. 2 ends O(delta) away: measured ||(I - D_T) delta|| / ||delta|| <= 1


@pytest.mark.parametrize("name", ["blur", "downsample", "composed"])
def test_improved_cancels_errors_the_degradation_keeps_and_naive_does_not(name):
    """The characteristic cancellation of Alg. 2: an error of R in what D(., s) keeps intact (here a per-channel
    constant, kept by blur with reflect padding and by block averaging) cancels at every step, so Alg. 2 reproduces
    x_s = D(x0, s) exactly despite the biased R; Alg. 1 carries the full error to the end."""
    degradation = small_degradations()[name]
    x0 = images()
    delta = torch.tensor([0.05, -0.03], dtype=torch.float64)[None, :, None, None].expand_as(x0)
    deviations = {}
    for algorithm in ("improved", "naive"):
        scheduler = ColdDiffusionScheduler(degradation=degradation, algorithm=algorithm)
        scheduler.set_timesteps()
        visited = run_chain(scheduler, lambda sample, t: x0 + delta, degradation(x0, degradation.num_steps))
        deviations[algorithm] = max((sample - degradation(x0, s)).abs().max().item() for s, sample in visited.items())
        final = (visited[0] - x0).abs().max().item()
        assert final < 1e-12 if algorithm == "improved" else final == pytest.approx(0.05)
    assert deviations["improved"] < 1e-12 and deviations["naive"] == pytest.approx(0.05)


def test_naive_needs_an_exact_restoration_where_improved_tolerates_a_state_dependent_one():
    """The paper's argument for Alg. 2 (Sec. 3.3): for D(x, s) = x + s e (here a constant shift e = 0.1), the step
    x_{s-1} = x_s - D(R, s) + D(R, s - 1) = x_s - e does not depend on R, so Alg. 2 is exact for any R, even one that is
    wrong everywhere; Alg. 1 is exact only when R is."""

    class Shift(Degradation):
        def _degrade(self, x0, t):
            return x0 + 0.1 * t

    shift = Shift(num_steps=4)
    x0 = images()
    biased = lambda sample, t: 0.5 * sample  # noqa: E731  a restoration that is wrong everywhere
    results = {}
    for algorithm in ("improved", "naive"):
        scheduler = ColdDiffusionScheduler(degradation=shift, algorithm=algorithm)
        scheduler.set_timesteps()
        results[algorithm] = run_chain(scheduler, biased, shift(x0, 4))[0]
    assert torch.allclose(results["improved"], x0, atol=1e-12)
    assert (results["naive"] - x0).abs().max() > 0.1


# --- scheduler contract ----------------------------------------------------------------------------------------------
def test_timesteps_are_descending_integers_from_T_to_1():
    scheduler = ColdDiffusionScheduler(degradation=FadeDegradation(num_steps=10))
    scheduler.set_timesteps()
    assert scheduler.timesteps.tolist() == list(range(10, 0, -1)) and scheduler.order == 1 and len(scheduler) == 10
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [10, 7, 4, 1] and not scheduler.timesteps.is_floating_point()
    for bad in (0, 11, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps must be"):
            scheduler.set_timesteps(bad)


def test_step_contract_and_mid_schedule_start():
    degradation = small_degradations()["blur"]
    scheduler = ColdDiffusionScheduler(degradation=degradation)
    scheduler.set_timesteps()
    x0 = images()
    sample = degradation(x0, 6)
    output = scheduler.step(x0, scheduler.timesteps[0], sample)  # finds its position from the timestep
    assert output.prev_sample.shape == sample.shape and output.prev_timestep == 5 and scheduler.step_index == 1
    assert isinstance(scheduler.step(x0, 5, output.prev_sample, return_dict=False), tuple)

    k = 3  # restore an image degraded to level timesteps[k] = 3, diffusers' img2img way
    scheduler.set_timesteps()
    assert int(scheduler.timesteps[k]) == 3 and scheduler.index_for_timestep(3) == k
    visited = run_chain(scheduler, lambda sample, t: x0, degradation(x0, 3), begin_index=k)
    assert sorted(visited) == [0, 1, 2, 3] and torch.allclose(visited[0], x0, atol=1e-10)
    with pytest.raises(RuntimeError, match="after the last"):
        scheduler.step(x0, 1, visited[0])
    scheduler.set_timesteps()  # without set_begin_index the first timestep handed in sets the position
    sample = degradation(x0, 2)
    for t in scheduler.timesteps[4:]:
        sample = scheduler.step(x0, t, sample).prev_sample
    assert torch.allclose(sample, x0, atol=1e-10)


def test_scheduler_bad_input():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        ColdDiffusionScheduler(degradation=FadeDegradation(), algorithm="fast")
    scheduler = ColdDiffusionScheduler(degradation=FadeDegradation(num_steps=5))
    with pytest.raises(RuntimeError, match="set_timesteps"):
        scheduler.step(images(), 5, images())
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="timestep 3 is not in scheduler.timesteps"):
        scheduler.step(images(), 3, images())
    with pytest.raises(ValueError, match="begin_index must be in 0..1"):
        scheduler.set_begin_index(2)


def test_scheduler_config_round_trip(tmp_path):
    scheduler = ColdDiffusionScheduler(degradation=small_degradations()["composed"], algorithm="naive", data_centered=False)
    scheduler.save_config(tmp_path)
    loaded = ColdDiffusionScheduler.from_pretrained(tmp_path)
    assert loaded.degradation.to_config() == scheduler.degradation.to_config()
    assert (loaded.config.algorithm, loaded.config.data_centered) == ("naive", False)


# --- pipeline ----------------------------------------------------------------------------------------------------------
class ExactRestoration(ModelMixin, ConfigMixin):
    """A 'network' that knows the clean images: R(x_t, t) = x0 (a buffer), in the UNet2DModel interface."""

    @register_to_config
    def __init__(self, in_channels=2, sample_size=8):
        super().__init__()
        self.register_buffer("x0", torch.zeros(1, in_channels, sample_size, sample_size))
        self.probe = torch.nn.Linear(1, 1)  # gives the model a dtype and device

    def forward(self, sample, timestep):
        assert timestep.shape == (sample.shape[0],) and not timestep.is_floating_point()  # the integer level t
        return UNet2DOutput(sample=self.x0.expand_as(sample))


def exact_pipeline(degradation, x0):
    model = ExactRestoration(in_channels=x0.shape[1], sample_size=x0.shape[-1])
    model.x0 = x0.float()
    pipe = ColdDiffusionPipeline(unet=model, scheduler=ColdDiffusionScheduler(degradation=degradation))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_restores_a_degraded_image_from_its_level():
    degradation = small_degradations()["blur"]
    x0 = images(shape=(1, 2, 8, 8)).float()
    pipe = exact_pipeline(degradation, x0)
    restored = pipe(image=degradation(x0, 4), degradation_level=4, output_type="latent").images
    assert torch.allclose(restored, x0, atol=1e-5)
    with pytest.raises(ValueError, match="degradation_level must be in 1..6"):
        pipe(image=x0, degradation_level=7, output_type="pt")
    with pytest.raises(ValueError, match="degradation_level=2 is not on the schedule"):
        pipe(image=x0, degradation_level=2, num_inference_steps=2, output_type="pt")


def test_pipeline_generation_start_follows_the_closed_form():
    """Fade: the start is the constant, D(x0, T) for every x0, so an exact R generates x0 itself. Blur: from a
    channel-constant start u (the channel-mean model), Alg. 2 with an exact R ends at u - D(x0, T) + x0."""
    x0 = images(shape=(1, 2, 8, 8)).float()
    fade = FadeDegradation(num_steps=5, value=0.25)
    generated = exact_pipeline(fade, x0)(symmetry_breaking_std=0.0, output_type="latent").images
    assert torch.allclose(generated, x0, atol=1e-5)

    blur = small_degradations()["blur"]
    means = torch.tensor([0.3, -0.2])
    generated = exact_pipeline(blur, x0)(initial_means=means, initial_stds=torch.zeros(2), symmetry_breaking_std=0.0,
                                         output_type="latent").images
    expected = means[None, :, None, None] - blur(x0, 6) + x0
    assert torch.allclose(generated, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"initial_means and initial_stds must both have shape \(2,\) or \(K, 2\)"):
        exact_pipeline(blur, x0)(initial_means=torch.zeros(3), output_type="pt")


def test_pipeline_save_load_round_trip_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    scheduler = ColdDiffusionScheduler(degradation=BlurDegradation(num_steps=3, kernel_size=3))
    pipe = ColdDiffusionPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    means, stds = torch.tensor([[0.1], [-0.4]]), torch.tensor([[0.2], [0.1]])  # a two-component mixture, 1 channel
    run = lambda p: p(batch_size=2, initial_means=means, initial_stds=stds,  # noqa: E731
                      generator=torch.Generator().manual_seed(3), output_type="np").images
    before = run(pipe)
    pipe.save_pretrained(tmp_path)
    for loader in (ColdDiffusionPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded) is ColdDiffusionPipeline
        assert loaded.scheduler.degradation.to_config() == scheduler.degradation.to_config()
        after = run(loaded)
        assert before.shape == (2, 8, 8, 1) and (before == after).all()


def test_pipeline_restores_uint8_images_in_the_data_space():
    """A uint8 image is mapped to [-1, 1]; with an exact R, Alg. 2 keeps the input's departure from D(x0, t) (here its
    quantization error) and ends at image - D(x0, t) + x0."""
    degradation = small_degradations()["downsample"]
    x0 = images(shape=(1, 1, 8, 8)).clamp(-1, 1).float()
    degraded = degradation(x0, 2)
    pixels = ((degraded + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # (1, 1, 8, 8)
    restored = exact_pipeline(degradation, x0)(image=pixels, degradation_level=2, output_type="latent").images
    expected = pixels.double() / 255 * 2 - 1 - degraded + x0
    assert torch.allclose(restored, expected.float(), atol=1e-5)
    assert (restored - x0).abs().max() <= 1 / 255 + 1e-5  # within half a quantization step in [-1, 1]


# --- the channel-mean mixture of generation --------------------------------------------------------------------------
def _constant_images(values):
    """Images constant per channel, with the channel means ``values`` (N, C)."""
    return values[:, :, None, None].expand(-1, -1, 4, 4).contiguous()


def test_channel_mean_mixture_recovers_a_known_two_component_mixture():
    n = 4000
    generator = torch.Generator().manual_seed(0)
    weights, means, stds = torch.tensor([0.3, 0.7]), torch.tensor([[-0.5, 0.2], [0.4, -0.1]]), torch.tensor(
        [[0.05, 0.1], [0.1, 0.05]])
    component = torch.multinomial(weights, n, replacement=True, generator=generator)
    values = means[component] + stds[component] * torch.randn(n, 2, generator=generator)
    fit = fit_channel_mean_mixture(_constant_images(values), num_components=2, seed=1)
    order = fit.means[:, 0].argsort()  # components come in no particular order
    # sampling error: sd(weight) = sqrt(0.21 / 4000) = 0.007, sd(mean) <= 0.1 / sqrt(1200) = 0.003, sd(std) ~ 0.002
    assert torch.allclose(fit.weights[order], weights, atol=0.03)
    assert torch.allclose(fit.means[order], means, atol=0.015)
    assert torch.allclose(fit.stds[order], stds, atol=0.01)


def test_one_component_is_the_sample_mean_and_std():
    values = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    images_ = values[:, :, None, None] + torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)  # same means
    fit = fit_channel_mean_mixture(images_, num_components=1)
    assert fit.weights.tolist() == [1.0]
    assert torch.allclose(fit.means[0].double(), values.mean(0), atol=1e-6)
    assert torch.allclose(fit.stds[0].double(), values.std(0, unbiased=False), atol=1e-6)
    with pytest.raises(ValueError, match="num_components must be at most the number of images, 50, got 51"):
        fit_channel_mean_mixture(images_, num_components=51)


def test_generation_starts_from_the_mixture_stored_in_the_scheduler():
    # Weights (1, 0): every start is component 0; Alg. 2 with an exact R ends at u - D(x0, T) + x0 (see above).
    x0 = images(shape=(1, 2, 8, 8)).float()
    blur = small_degradations()["blur"]
    pipe = exact_pipeline(blur, x0)
    pipe.scheduler = ColdDiffusionScheduler(degradation=blur, initial_weights=[1.0, 0.0],
                                            initial_means=[[0.3, -0.2], [5.0, 5.0]], initial_stds=[[0.0, 0.0], [1.0, 1.0]])
    generated = pipe(batch_size=3, symmetry_breaking_std=0.0, output_type="latent").images
    expected = torch.tensor([0.3, -0.2])[None, :, None, None] - blur(x0, 6) + x0
    assert torch.allclose(generated, expected.expand(3, -1, -1, -1), atol=1e-5)
    with pytest.raises(ValueError, match=r"initial_weights must hold K = 2 non-negative weights .* got \[-1.0, 2.0\]"):
        pipe(initial_weights=[-1.0, 2.0], initial_means=[[0.0, 0.0], [1.0, 1.0]], output_type="pt")


# --- mask centres ----------------------------------------------------------------------------------------------------
def test_mask_at_a_given_center_is_the_closed_form():
    mask = MaskDegradation(num_steps=3, mask_std=1.0, mask_std_growth=0.5, center=[1.0, 2.0])
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(5.0), indexing="ij")
    squared = (rows - 1.0) ** 2 + (cols - 2.0) ** 2
    expected = (1 - torch.exp(-squared / (2 * 1.0**2))) * (1 - torch.exp(-squared / (2 * 1.5**2)))
    assert torch.allclose(mask.mask(2, 6, 5, dtype=torch.float64), expected.double())
    x0 = images(shape=(1, 1, 6, 5))
    assert torch.allclose(mask(x0, 2), x0 * expected.double())
    assert MaskDegradation.from_config(mask.to_config()).center == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"center must be a \(row, column\) pair"):
        MaskDegradation(center=[1.0])


def test_random_centers_are_uniform_and_used_per_sample_in_training():
    mask = MaskDegradation(num_steps=4, mask_std=0.5, mask_std_growth=0.5, random_center=True)
    centers = mask.sample_centers(4000, 8, 6, generator=torch.Generator().manual_seed(0))
    # uniform on [0, 7] x [0, 5]: means 3.5 and 2.5 (standard errors 0.03 and 0.02), the whole range reached
    assert torch.allclose(centers.mean(0), torch.tensor([3.5, 2.5], dtype=torch.float64), atol=0.1)
    assert centers.min() >= 0 and centers[:, 0].max() <= 7 and centers[:, 1].max() <= 5
    assert centers[:, 0].max() > 6.9 and centers.min() < 0.1
    x0, levels = images(shape=(3, 2, 8, 6)), torch.tensor([4, 0, 2])
    drawn = mask.sample_centers(3, 8, 6, generator=torch.Generator().manual_seed(7))
    trained = mask.training_input(x0, levels, generator=torch.Generator().manual_seed(7))
    for i in range(3):  # each sample is masked around its own centre, at its own level
        own = MaskDegradation(num_steps=4, mask_std=0.5, mask_std_growth=0.5, center=drawn[i].tolist())
        assert torch.allclose(trained[i:i + 1], own(x0[i:i + 1], int(levels[i])))
    assert torch.equal(mask(x0, levels), MaskDegradation(num_steps=4, mask_std=0.5, mask_std_growth=0.5)(x0, levels))
