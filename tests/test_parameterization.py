import pytest
import torch

from diffusers_sde import PREDICTION_TYPES, Parameterization, VESDE, VPSDE


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sde", [VESDE(), VPSDE()], ids=["ve", "vp"])
def test_outputs_of_the_true_denoiser_give_the_true_score(sde, prediction_type):
    # For a point mass at x0, the score of p_t at x = a x0 + s z is -z / s, and every parameterization's ideal output
    # is known independently: epsilon -> z, sample -> x0, v -> a z - s x0.
    x0, z = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    a, s = sde.marginal(torch.tensor(0.4, dtype=torch.float64))
    x = a * x0 + s * z
    ideal = {"score": -z / s, "epsilon": z, "sample": x0, "v_prediction": a * z - s * x0}[prediction_type]
    p = Parameterization(sde, prediction_type, "continuous", 1000)
    torch.testing.assert_close(p.score(ideal, x, a, s), -z / s)
    torch.testing.assert_close(p.output_from_score(-z / s, x, a, s), ideal)


def test_model_time_round_trip():
    for sde, kind in [(VESDE(), "sigma"), (VPSDE(), "sigma"), (VPSDE(), "discrete"), (VPSDE(), "continuous")]:
        p = Parameterization(sde, "epsilon", kind, 1000)
        t = torch.tensor([1e-3, 0.5, 1.0], dtype=torch.float64)
        torch.testing.assert_close(p.time_from_model_time(p.model_time(t)), t)
    assert Parameterization(VPSDE(), "epsilon", "discrete", 1000).model_time(1.0) == 999


def test_bad_parameterization():
    with pytest.raises(ValueError, match="prediction_type"):
        Parameterization(VPSDE(), "eps", "discrete", 1000)
    with pytest.raises(ValueError, match="timestep_type"):
        Parameterization(VPSDE(), "epsilon", "integer", 1000)
