"""Images in and out of the model's data space, in one place for every pipeline (sampling, likelihood, and the
coming inpainting / colorization inputs).

The rule for inputs: integer images (PIL, uint8 numpy or tensor) are pixels, validated strictly and mapped to the model's
data range; a floating tensor is data already in the model's space and is taken as it is (latent or non-image data
is valid input), with at most a warning when it falls outside the image range, the usual sign of 0..255 floats.
"""

import warnings

import numpy as np
import PIL.Image
import torch
from diffusers.utils.pil_utils import numpy_to_pil

from ..validation import check_integer

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def data_range(data_centered):
    """(low, high) of the model's image data: [-1, 1] if ``data_centered`` else [0, 1]."""
    return (-1.0, 1.0) if data_centered else (0.0, 1.0)


def sample_shape(unet):
    """(C, H, W) of the model's samples, from its config (``in_channels``, ``sample_size``)."""
    config = unet.config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return config.in_channels, height, width


def parse_images(images, shape):
    """Validate ``images`` against the model's sample ``shape`` (C, H, W).

    Returns ``(pixels, data)``: integer images as a uint8 tensor (B, C, H, W) and ``data=None``, or ``pixels=None`` and a
    floating tensor (B, C, H, W). PIL images keep their own mode: a colour image is not silently turned grey (or back).
    A (B, H, W) or (H, W) uint8 array is read as grey images for a 1-channel model.
    """
    channels = shape[0]
    if isinstance(images, PIL.Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, PIL.Image.Image) for i in images):
        images = np.stack([_pil_array(image, channels) for image in images])
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        if channels == 1 and images.ndim in (2, 3) and images.shape[-2:] == shape[1:]:
            images = images.reshape(-1, *shape[1:], 1)  # grey images without a channel axis
        if images.ndim in (3, 4):
            images = images[None] if images.ndim == 3 else images
            images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not (images.dtype == torch.uint8
                                                                          or images.is_floating_point()):
        description = type(images).__name__ + (f" of dtype {images.dtype}, shape {tuple(images.shape)}"
                                               if hasattr(images, "dtype") else "")
        raise ValueError(
            "images must be PIL images, a uint8 numpy array (B, H, W, C) or (H, W, C) (also (B, H, W) for a 1-channel"
            f" model), a uint8 tensor (B, C, H, W), or a floating tensor (B, C, H, W) in the model's data space; got"
            f" {description}."
        )
    if tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(
            f"images have shape (C, H, W) = {tuple(images.shape[1:])} per sample, the model expects {tuple(shape)}"
            " (unet in_channels, sample_size)."
        )
    if images.dtype == torch.uint8:
        return images, None
    return None, images


def _pil_array(image, channels):
    array = np.asarray(image)
    array = array[..., None] if array.ndim == 2 else array
    if array.shape[-1] != channels:
        target = "L" if channels == 1 else "RGB"
        raise ValueError(
            f"a PIL image of mode {image.mode!r} has {array.shape[-1]} channel(s), the model takes {channels}; convert"
            f" it first (image.convert({target!r})) if that is what you mean."
        )
    return array


def check_data_range(data, data_centered, name="images"):
    """Warn (never refuse) when a floating input lies far outside the image range (by more than the range's width):
    likely 0..255 floats by mistake. Latent or other non-image data near the range passes silently."""
    low, high = data_range(data_centered)
    smallest, largest = data.min().item(), data.max().item()
    width = high - low
    if smallest < low - width or largest > high + width:
        warnings.warn(
            f"{name} (a floating tensor) holds values in [{smallest:.4g}, {largest:.4g}], outside the image range"
            f" [{low:g}, {high:g}] of this model (data_centered={data_centered}). It is used as data in the model's"
            " space as it is; if these are 0..255 pixel values, pass uint8 images instead.",
            stacklevel=3,
        )


def check_num_levels(num_levels, pixels):
    """``num_levels`` (None -> 256) must be an integer >= 2 above every pixel value; returns it.

    Warns when the images use far fewer levels than that (e.g. the 0..16 digits scored as 8-bit), since bits/dim then
    measure the wrong quantization.
    """
    if pixels is None:
        if num_levels is not None:
            raise ValueError(f"num_levels={num_levels!r} only applies to integer images; a floating tensor is taken as"
                             " data in the model's space. Pass the integer values (uint8) to have them mapped.")
        return None
    num_levels = 256 if num_levels is None else check_integer("num_levels (the number of integer values, 0..num_levels-1)",
                                                              num_levels, minimum=2)
    largest = pixels.max().item()
    if largest >= num_levels:
        raise ValueError(f"num_levels={num_levels} allows integer values 0..{num_levels - 1}, but the images hold a"
                         f" maximum value of {largest}; raise num_levels to at least {largest + 1}.")
    if largest < num_levels // 4:
        warnings.warn(
            f"the images' largest value is {largest}, far below num_levels={num_levels} (values 0..{num_levels - 1});"
            f" if they only take values 0..{largest}, pass num_levels={largest + 1} (--levels on the command line).",
            stacklevel=3,
        )
    return num_levels


def pixels_to_data(pixels, num_levels, data_centered, noise=None):
    """Map integer pixels of ``num_levels`` levels to the model's data range, (pixels + noise) / num_levels stretched
    onto [low, high]; ``noise`` in [0, 1) dequantizes, ``None`` takes the pixel values themselves (pixels / (k - 1))."""
    low, high = data_range(data_centered)
    values = pixels.to(torch.float64)
    unit = values / (num_levels - 1) if noise is None else (values + noise) / num_levels
    return low + (high - low) * unit


def images_to_data(images, shape, data_centered, num_levels=None, name="images"):
    """An image argument as data in the model's space (B, C, H, W), float32 or better: integer images of ``num_levels``
    levels (default 256) mapped as pixels / (num_levels - 1), a floating tensor taken as it is (see the module rule)."""
    pixels, data = parse_images(images, shape)
    num_levels = check_num_levels(num_levels, pixels)
    if data is None:
        return pixels_to_data(pixels, num_levels, data_centered).to(torch.float32)
    check_data_range(data, data_centered, name)
    return data


def postprocess(sample, output_type, data_centered):
    """The final sample as ``pil`` / ``np`` / ``pt`` images in [0, 1], or as it is (``latent``)."""
    if output_type == "latent":
        return sample
    low, high = data_range(data_centered)
    images = ((sample - low) / (high - low)).clamp(0, 1)
    if output_type == "pt":
        return images
    images = images.cpu().permute(0, 2, 3, 1).float().numpy()
    return numpy_to_pil(images) if output_type == "pil" else images


def check_output_type(output_type, channels):
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    if output_type == "pil" and channels not in (1, 3, 4):
        raise ValueError(
            f"output_type='pil' needs 1, 3 or 4 channels, the model has {channels}; use output_type='np' or 'pt'."
        )
