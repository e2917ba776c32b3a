"""Class guidance against closed-form truth: a Gaussian mixture whose components are the classes.

With the exact component posterior log p_t(k | x) as the classifier, score + grad log p_t(k | x) is the score of
component k alone, so classifier guidance at scale 1 must sample N(mu_k, diag(v_k)) exactly; so must classifier-free
guidance at scale 1 with the exact conditional network. At scale w both give (1 - w) score_mixture + w score_k.
"""

import math

import pytest
import torch
from testing_utils import MIXTURE_SHAPE

from diffusers_sde import (
    ConditionalGaussianMixtureModel,
    EDMHeunScheduler,
    ExponentialIntegratorScheduler,
    GaussianMixtureClassifier,
    GaussianMixtureModel,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    ScoreSDEPipeline,
)

SDE_TYPES = ("ve", "vp", "subvp")
SCHEDULERS = {  # three scheduler families, at step counts where the unguided mixture is reproduced within 5%
    "exponential_integrator": (ExponentialIntegratorScheduler, 30),
    "edm_heun": (EDMHeunScheduler, 61),
    "predictor_corrector": (PredictorCorrectorScheduler, 200),  # the paper's per-SDE predictor and corrector
}


def _scheduler(kind, sde_type, **overrides):
    return kind.from_config(PredictorCorrectorScheduler(sde_type=sde_type).config, **overrides)


def _pipelines(mixture, scheduler):
    """(classifier-guided pipeline over the exact unconditional network, CFG pipeline over the exact conditional one)."""
    size = MIXTURE_SHAPE[1]
    guided = ScoreSDEPipeline(unet=GaussianMixtureModel.for_scheduler(mixture, scheduler, 1, size), scheduler=scheduler,
                              classifier=GaussianMixtureClassifier.for_scheduler(mixture, scheduler, 1, size))
    free = ScoreSDEPipeline(unet=ConditionalGaussianMixtureModel.for_scheduler(mixture, scheduler, 1, size),
                            scheduler=scheduler)
    for pipe in (guided, free):
        pipe.set_progress_bar_config(disable=True)
    return guided, free


def _component_check(mixture, samples, labels):
    """Every sample lies in its requested component, with that component's variance: (x - mu_k)^2 / v_k averages 1."""
    flat = samples.flatten(1).to(torch.float64)
    assert torch.equal(mixture.classify(flat), labels), "a sample left its requested component"
    ratio = ((flat - mixture.means[labels]) ** 2 / mixture.variances[labels]).mean().item()
    assert abs(ratio - 1) < 0.05, ratio  # 400 x 16 terms: sampling noise ~0.02


@pytest.mark.parametrize("sde_type", SDE_TYPES)
@pytest.mark.parametrize("family", SCHEDULERS)
def test_scale_one_samples_the_requested_component(mixture, sde_type, family):
    kind, steps = SCHEDULERS[family]
    guided, free = _pipelines(mixture, _scheduler(kind, sde_type))
    labels = torch.arange(400) % 3  # every component, per-sample labels
    for pipe in (guided, free):
        out = pipe(batch_size=400, num_inference_steps=steps, class_labels=labels, guidance_scale=1.0,
                   generator=torch.Generator().manual_seed(0), output_type="latent")
        _component_check(mixture, out.images, labels)


@pytest.mark.parametrize("sampler, options", [("adaptive_ode", {}), ("torchsde", {"num_inference_steps": 300}),
                                              ("gotta_go_fast", {})])
def test_solvers_sample_the_requested_component(mixture, sampler, options):
    guided, free = _pipelines(mixture, _scheduler(PredictorCorrectorScheduler, "vp"))
    for pipe in (guided, free):
        out = pipe(batch_size=200, class_labels=2, sampler=sampler, generator=torch.Generator().manual_seed(0),
                   output_type="latent", **options)
        flat = out.images.flatten(1).to(torch.float64)
        assert bool((mixture.classify(flat) == 2).all())
        ratio = ((flat - mixture.means[2]) ** 2 / mixture.variances[2]).mean().item()
        # adaptive ODE (RK45 1e-5) is near exact; the SDE solvers carry their own discretization bias (5-10% here,
        # as unguided: Euler-Maruyama at 300 steps, gotta_go_fast at its default tolerances).
        assert abs(ratio - 1) < (0.03 if sampler == "adaptive_ode" else 0.12), (sampler, ratio)


@pytest.mark.parametrize("prediction_type", ["score", "epsilon", "sample", "v_prediction"])
def test_guided_output_is_the_mixed_score_in_every_parameterization(mixture, prediction_type):
    # One guided step of each kind against (1 - w) score_mixture + w score_k, computed here from the mixture itself.
    scheduler = _scheduler(ExponentialIntegratorScheduler, "vp", prediction_type=prediction_type,
                           timestep_type="continuous")
    scheduler.set_timesteps(5)
    guided, free = _pipelines(mixture, scheduler)
    x = torch.randn(6, *MIXTURE_SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels, scale, level, t = torch.tensor([0, 1, 2, 0, 1, 2]), 2.5, scheduler.sample_level, scheduler.timesteps[0]
    flat = x.flatten(1)
    expected_score = (1 - scale) * mixture.score(flat, level.a, level.s) + scale * mixture.component_score(
        flat, labels, level.a, level.s)
    from diffusers_sde.guidance import resolve_guidance

    outputs = []
    for pipe in (guided, free):
        guidance = resolve_guidance(pipe.unet, pipe.classifier, labels, scale, batch_size=6)
        output = guidance.model(x, t.double()).sample
        output = guidance.guide_output(output, x, t.double(), scheduler.parameterization, level)
        outputs.append(output)
        score = scheduler.parameterization.score(output, x, level.a, level.s).flatten(1)
        torch.testing.assert_close(score, expected_score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-9, atol=1e-9)


def test_scale_zero_and_unconditional_labels_reproduce_the_mixture(mixture):
    guided, free = _pipelines(mixture, _scheduler(ExponentialIntegratorScheduler, "ve"))
    runs = [guided(batch_size=600, num_inference_steps=30, class_labels=0, guidance_scale=0.0,
                   generator=torch.Generator().manual_seed(1), output_type="latent"),
            free(batch_size=600, num_inference_steps=30, generator=torch.Generator().manual_seed(1),
                 output_type="latent")]  # no class_labels: the unconditional label
    for out in runs:
        fidelity = mixture.fidelity(out.images.flatten(1))
        assert abs(fidelity["variance_ratio"] - 1) < 0.05, fidelity
        assert fidelity["mode_weight_error"] < 0.06, fidelity  # weights 1/6, 2/6, 3/6: all components present


@pytest.mark.filterwarnings("ignore:images .a floating tensor. holds values")  # mixture data spread past [-1, 1]
def test_likelihood_of_a_class_conditional_model_is_the_marginal_density(mixture):
    # log_likelihood / encode of a class-conditional network use its unconditional label: the mixture's own density.
    scheduler = ProbabilityFlowScheduler(sde_type="vp")
    free = ScoreSDEPipeline(unet=ConditionalGaussianMixtureModel.for_scheduler(mixture, scheduler, 1, MIXTURE_SHAPE[1]),
                            scheduler=scheduler)
    free.set_progress_bar_config(disable=True)
    x, _ = mixture.sample(6, torch.Generator().manual_seed(3))
    out = free.log_likelihood(x.view(-1, *MIXTURE_SHAPE), divergence="exact", eps=1e-5, rtol=1e-6, atol=1e-6)
    a, s = scheduler.sde.marginal(torch.tensor(1e-5, dtype=torch.float64))
    truth = -mixture.log_prob(x, a, s)
    assert (out.nll - truth).abs().max() / (16 * math.log(2)) < 0.01  # bits/dim
    assert free.encode(x.view(-1, *MIXTURE_SHAPE).float(), rtol=1e-3, atol=1e-3).latents.shape == (6, *MIXTURE_SHAPE)
