import numpy as np
import pytest

from diffusers_sde.evaluation import frechet_distance


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    # For commuting (here diagonal) covariances, tr((C1^1/2 C2 C1^1/2)^1/2) = sum sqrt(c1 c2), so the distance is
    # ||m1 - m2||^2 + sum (sqrt(c1) - sqrt(c2))^2.
    rng = np.random.RandomState(0)
    mean1, mean2 = rng.randn(5), rng.randn(5)
    var1, var2 = rng.rand(5) + 0.1, rng.rand(5) + 0.1
    expected = ((mean1 - mean2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mean1, np.diag(var1), mean2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_is_invariant_to_a_shared_rotation():
    rng = np.random.RandomState(1)
    a, b = rng.randn(4, 4), rng.randn(4, 4)
    cov1, cov2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    rotation, _ = np.linalg.qr(rng.randn(4, 4))
    mean1, mean2 = rng.randn(4), rng.randn(4)
    original = frechet_distance(mean1, cov1, mean2, cov2)
    rotated = frechet_distance(rotation @ mean1, rotation @ cov1 @ rotation.T, rotation @ mean2, rotation @ cov2 @ rotation.T)
    assert rotated == pytest.approx(original, rel=1e-8)
    assert frechet_distance(mean1, cov1, mean1, cov1) == pytest.approx(0, abs=1e-8)
