"""FIR resampling against its definition (the original's fused up-convolution cannot run: it slices with a negative
step, so there is no reference output for it)."""

import torch
import torch.nn.functional as F

from diffusers_sde.models.layers import fir_upsample, fir_upsample_conv

KERNEL = [1, 3, 3, 1]


def test_fused_fir_upsample_conv_is_upsample_then_conv_away_from_the_border():
    # StyleGAN2's fused op pads once instead of twice, so only the border differs from the unfused composition; an
    # asymmetric random weight makes the test sensitive to the kernel flip inside the transposed convolution.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 3, 3, 3, generator=generator, dtype=torch.float64)
    fused = fir_upsample_conv(x, weight, KERNEL)
    unfused = F.conv2d(fir_upsample(x, KERNEL), weight, padding=1)
    assert fused.shape == unfused.shape == (2, 5, 16, 16)
    torch.testing.assert_close(fused[..., 2:-2, 2:-2], unfused[..., 2:-2, 2:-2])


def test_fir_upsample_keeps_a_constant_image_constant():
    # The filter is normalized to gain factor**2 over the zero-inserted image: a constant stays constant inside.
    up = fir_upsample(torch.full((1, 1, 6, 6), 2.0, dtype=torch.float64), KERNEL)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full((1, 1, 8, 8), 2.0, dtype=torch.float64))
