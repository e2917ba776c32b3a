"""What log_likelihood and encode accept: grey arrays, levels, generator lists, and numbers of any kind."""

import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from likelihood_helpers import exact_pipeline

from diffusers_sde import slerp

FAST = dict(rtol=1e-3, atol=1e-3)


def _digits_like(batch=3, seed=0):
    """(B, 2, 2) uint8 grey images with values 0..16, like the sklearn digits."""
    return np.random.default_rng(seed).integers(0, 17, size=(batch, 2, 2), dtype=np.uint8)


def test_grey_arrays_without_a_channel_axis_are_read_as_grey_images():
    pipe, _ = exact_pipeline("vp", channels=1)
    grey = _digits_like()
    as_bhw = pipe.log_likelihood(grey, generator=torch.Generator().manual_seed(0), num_levels=17, **FAST)
    as_bhwc = pipe.log_likelihood(grey[..., None], generator=torch.Generator().manual_seed(0), num_levels=17, **FAST)
    torch.testing.assert_close(as_bhw.nll, as_bhwc.nll)
    assert as_bhw.nll.shape == (3,)


def test_colour_pil_images_for_a_grey_model_are_refused_not_converted():
    pipe, _ = exact_pipeline("vp", channels=1)
    rgb = PIL.Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"mode 'RGB' has 3 channel\(s\), the model takes 1.*convert\('L'\)"):
        pipe.log_likelihood(rgb, **FAST)


def test_few_levels_at_the_default_of_256_warn():
    pipe, _ = exact_pipeline("vp", channels=1)
    with pytest.warns(UserWarning, match="largest value is 16, far below num_levels=256.*num_levels=17"):
        pipe.log_likelihood(np.full((1, 2, 2), 16, dtype=np.uint8), **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.log_likelihood(np.full((1, 2, 2), 16, dtype=np.uint8), num_levels=17, **FAST)


def test_generator_lists_make_each_images_likelihood_independent_of_its_batch():
    pipe, _ = exact_pipeline("vp", channels=1)
    images = _digits_like(batch=3, seed=1)
    generators = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    batch = pipe.log_likelihood(images, generator=generators, num_levels=17, num_probes=2, **FAST)
    alone = pipe.log_likelihood(images[1:2], generator=[torch.Generator().manual_seed(11)], num_levels=17,
                                num_probes=2, **FAST)
    torch.testing.assert_close(alone.nll[0], batch.nll[1], rtol=1e-4, atol=1e-4)  # only the solver's steps differ
    with pytest.raises(ValueError, match="generator is a list of 2 generators but the batch has 3"):
        pipe.log_likelihood(images, generator=generators[:2], num_levels=17, **FAST)


def test_encode_maps_integer_images_by_their_number_of_levels():
    pipe, _ = exact_pipeline("vp", channels=1)
    digits = _digits_like()
    from_pixels = pipe.encode(digits, num_levels=17, **FAST).latents
    as_data = torch.from_numpy(digits).double()[:, None] / 16 * 2 - 1  # 0..16 -> [-1, 1], the VP model's range
    from_data = pipe.encode(as_data.float(), **FAST).latents
    torch.testing.assert_close(from_pixels, from_data)


def test_numbers_may_be_numpy_scalars_or_zero_dim_tensors():
    a, b = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    expected = slerp(a, b, 0.5)
    torch.testing.assert_close(slerp(a, b, np.float32(0.5)), expected)
    torch.testing.assert_close(slerp(a, b, torch.tensor(0.5)), expected)
    with pytest.raises(ValueError, match=r"weight must be a finite number >= 0 and <= 1, got 1.5"):
        slerp(a, b, 1.5)
    pipe, _ = exact_pipeline("vp", channels=1)
    out = pipe.log_likelihood(_digits_like(), num_levels=np.int64(17), num_repeats=np.int32(1), **FAST)
    assert out.nll.shape == (3,)
