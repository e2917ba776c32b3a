import pytest
import torch

from diffusers_sde import slerp


def test_slerp_hits_the_end_points_and_keeps_the_norm():
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 2, 4, 4, generator=generator)
    end = torch.randn(3, 2, 4, 4, generator=generator)
    end = end / end.flatten(1).norm(dim=1)[:, None, None, None] * start.flatten(1).norm(dim=1)[:, None, None, None]
    torch.testing.assert_close(slerp(start, end, 0.0), start)
    torch.testing.assert_close(slerp(start, end, 1.0), end)
    middle = slerp(start, end, 0.3)
    torch.testing.assert_close(middle.flatten(1).norm(dim=1), start.flatten(1).norm(dim=1))
    # a straight line would shrink the norm
    assert ((0.7 * start + 0.3 * end).flatten(1).norm(dim=1) < start.flatten(1).norm(dim=1)).all()


def test_slerp_of_parallel_latents_is_the_straight_line():
    start = torch.ones(1, 4)
    torch.testing.assert_close(slerp(start, 2 * start, 0.5), 1.5 * start)


@pytest.mark.parametrize("weight", [-0.1, 1.5, "half"])
def test_slerp_rejects_weights_outside_unit_interval(weight):
    with pytest.raises(ValueError, match="weight"):
        slerp(torch.ones(1, 4), torch.zeros(1, 4) + 2, weight)
