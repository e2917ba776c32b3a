"""Training data: the embedded scikit-learn digits (8x8, grey levels 0..16), image folders and Hugging Face ``datasets``
image datasets on local disk (a folder written by ``Dataset.save_to_disk``, or ``imagefolder:<path>``; needs the optional
``datasets`` library).

Images come out as float32 tensors (N, C, H, W) in the model's data range: [0, 1], or [-1, 1] when ``data_centered``.
"""

import os

import numpy as np
import torch

DIGITS_GREY_LEVELS = 16  # sklearn digits hold integers 0..16
DIGITS_HELDOUT_SIZE = 500  # kept away from the generative model; the quality classifier is fit on it
DIGITS_SPLITS = ("train", "heldout", "all")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGEFOLDER_PREFIX = "imagefolder:"
SAVED_DATASET_MARKERS = ("state.json", "dataset_dict.json")  # written by Dataset / DatasetDict.save_to_disk


def digits_split(split="train"):
    """The sklearn digits as (images (N, 8, 8) float64 in 0..16, labels (N,)), split by a fixed permutation.

    Args:
        split (`str`): ``"train"`` (1297 images, what the demo model learns), ``"heldout"`` (the other 500) or ``"all"``.
    """
    if split not in DIGITS_SPLITS:
        raise ValueError(f"split must be one of {DIGITS_SPLITS}, got {split!r}.")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("--data digits needs scikit-learn (pip install scikit-learn), or pass --data <image folder>.") from error

    digits = load_digits()
    images, labels = digits.images, digits.target
    if split == "all":
        return images, labels
    order = np.random.RandomState(0).permutation(len(images))
    chosen = order[DIGITS_HELDOUT_SIZE:] if split == "train" else order[:DIGITS_HELDOUT_SIZE]
    return images[chosen], labels[chosen]


def to_model_range(unit_images, data_centered):
    """Map images in [0, 1] to the model's data range."""
    return unit_images * 2 - 1 if data_centered else unit_images


def load_digits_dataset(data_centered=True, split="train", with_labels=False):
    """sklearn digits as a (N, 1, 8, 8) float32 tensor in the model's data range (and their (N,) int64 labels 0..9
    with ``with_labels``)."""
    images, labels = digits_split(split)
    unit = torch.from_numpy(images / DIGITS_GREY_LEVELS).to(torch.float32)[:, None]
    images = to_model_range(unit, data_centered)
    return (images, torch.from_numpy(labels).to(torch.int64)) if with_labels else images


def tint_digits(images, seed=0):
    """Grey digits (N, H, W) in [0, 1] tinted with one random colour each: (N, 3, H, W), channel c = grey x colour_c,
    colours uniform in [0.2, 1]^3 (a fixed generator: the same colours at every call). The colorization demo's data."""
    generator = torch.Generator().manual_seed(seed)
    colours = 0.2 + 0.8 * torch.rand(len(images), 3, 1, 1, generator=generator, dtype=torch.float64)
    return torch.as_tensor(images, dtype=torch.float64)[:, None] * colours


def load_tinted_digits_dataset(data_centered=True, split="train"):
    """The sklearn digits tinted with random colours (:func:`tint_digits`), a (N, 3, 8, 8) float32 tensor in the
    model's data range: ``--data digits-tinted``, for a colour model that ``diffusers-sde colorize`` can use."""
    images, _ = digits_split(split)
    return to_model_range(tint_digits(images / DIGITS_GREY_LEVELS).to(torch.float32), data_centered)


def load_image_folder(path, data_centered=True):
    """Every image file directly in ``path`` as a (N, C, H, W) float32 tensor in the model's data range.

    Images are read as greyscale (C = 1) when all of them are greyscale, else as RGB (C = 3). All must share one size.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isdir(path):
        raise ValueError(f"--data {path!r} is neither 'digits' nor an existing folder of images.")
    names = sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f"--data folder {path!r} holds no image files (allowed extensions: {', '.join(IMAGE_EXTENSIONS)}).")
    images = []
    for name in names:
        try:
            with Image.open(os.path.join(path, name)) as image:
                image.load()
                images.append((name, image.copy()))
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"--data folder {path!r}: cannot read image {name!r}: {error}") from error
    return _stack_images(images, f"folder {path!r}", data_centered)


def _stack_images(images, source, data_centered):
    """(name, PIL image) pairs of one size as (N, C, H, W): greyscale (C = 1) when all are greyscale, else RGB."""
    first_name, first = images[0]
    for name, image in images[1:]:
        if image.size != first.size:
            raise ValueError(
                f"--data {source} mixes image sizes: {first_name!r} is {first.size[0]}x{first.size[1]} but {name!r}"
                f" is {image.size[0]}x{image.size[1]}; all images must share one size (resize them first)."
            )
    grey = all(image.mode in ("L", "1", "I;16", "I") for _, image in images)
    mode = "L" if grey else "RGB"
    arrays = [np.asarray(image.convert(mode), dtype=np.float32) / 255.0 for _, image in images]
    stacked = torch.from_numpy(np.stack(arrays))
    stacked = stacked[:, None] if grey else stacked.permute(0, 3, 1, 2)
    return to_model_range(stacked.contiguous(), data_centered)


def load_hf_dataset(path, data_centered=True, split="train", image_column=None, imagefolder=False, with_labels=False):
    """The images of a Hugging Face ``datasets`` dataset on local disk as a (N, C, H, W) float32 tensor.

    Args:
        path (`str`): a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``, or, with
            ``imagefolder=True``, a folder read by the ``imagefolder`` builder (images, optionally in class subfolders).
        data_centered (`bool`): [-1, 1] instead of [0, 1].
        split (`str`): the split of a ``DatasetDict`` or of the image folder.
        image_column (`str`, *optional*): the column holding the images; default: the first column of type ``Image``.
        imagefolder (`bool`): read ``path`` with the ``imagefolder`` builder instead of ``load_from_disk``.
        with_labels (`bool`): also return the (N,) int64 class labels of its first ``ClassLabel`` column (the class
            subfolders of an image folder).
    """
    try:
        import datasets
    except ImportError as error:
        raise ImportError(f"--data {path!r} is a Hugging Face dataset; reading it needs the optional datasets library"
                          " (pip install datasets), or pass a plain folder of images.") from error
    if not os.path.isdir(path):
        raise ValueError(f"--data {path!r}: no such folder.")
    if imagefolder:
        dataset = datasets.load_dataset("imagefolder", data_dir=path, split=split)
    else:
        dataset = datasets.load_from_disk(path)
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise ValueError(f"--data {path!r} has no split {split!r}; it has {sorted(dataset)}.")
            dataset = dataset[split]
    image_columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    column = image_column or (image_columns[0] if image_columns else None)
    if column not in image_columns:
        raise ValueError(f"--data {path!r} needs a column of type datasets.Image (image_column={column!r}); its"
                         f" features are {dict(dataset.features)}.")
    if len(dataset) == 0:
        raise ValueError(f"--data {path!r}: the {split!r} split is empty.")
    images = [(f"row {index}", image) for index, image in enumerate(dataset[column])]
    stacked = _stack_images(images, f"dataset {path!r}", data_centered)
    if not with_labels:
        return stacked
    label_columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.ClassLabel)]
    if not label_columns:
        raise ValueError(f"--num-classes needs class labels, but --data {path!r} has no column of type"
                         f" datasets.ClassLabel (its features are {dict(dataset.features)}); an image folder gets one"
                         " from class subfolders.")
    return stacked, torch.as_tensor(dataset[label_columns[0]], dtype=torch.int64)


def random_horizontal_flip(images, generator=None):
    """Mirror each image left-right with probability 1/2 (drawn on the generator's device, so seeding is exact)."""
    flip = torch.rand(len(images), generator=generator, device=generator.device if generator else None) < 0.5
    return torch.where(flip.to(images.device).reshape(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)


def load_dataset(data, data_centered=True, with_labels=False):
    """``data`` is ``"digits"`` (the embedded sklearn digits, train split), ``"digits-tinted"`` (the same, each tinted with
    a random colour: 3 channels), ``imagefolder:<path>``, a folder written by
    ``datasets``' ``save_to_disk`` (both need the ``datasets`` library), or a folder of image files.

    With ``with_labels`` returns ``(images, labels)``, the labels (N,) int64: the digits' 0..9, or a ``datasets``
    ``ClassLabel`` column; a plain image folder has none and is refused.
    """
    if data == "digits":
        return load_digits_dataset(data_centered, with_labels=with_labels)
    if data == "digits-tinted" and not with_labels:
        return load_tinted_digits_dataset(data_centered)
    if data.startswith(IMAGEFOLDER_PREFIX):
        return load_hf_dataset(data[len(IMAGEFOLDER_PREFIX):], data_centered, imagefolder=True, with_labels=with_labels)
    if any(os.path.isfile(os.path.join(data, marker)) for marker in SAVED_DATASET_MARKERS):
        return load_hf_dataset(data, data_centered, with_labels=with_labels)
    if with_labels:
        raise ValueError(f"--num-classes needs class labels, but --data {data!r} is a plain image folder, which has"
                         f" none; pass 'digits', or imagefolder:<path> with one subfolder per class.")
    return load_image_folder(data, data_centered)


def load_autoencoder(path):
    """The ``AutoencoderKL`` of ``--vae``: a folder written by ``diffusers-sde train-vae`` (or any ``AutoencoderKL``
    folder), or a pipeline folder holding one in ``vae/``."""
    from diffusers import AutoencoderKL

    subfolder = "vae" if os.path.isfile(os.path.join(path, "vae", "config.json")) else None
    try:
        return AutoencoderKL.from_pretrained(path, subfolder=subfolder).eval()
    except (OSError, ValueError) as error:
        raise ValueError(f"--vae {path!r} is not an AutoencoderKL folder (from diffusers-sde train-vae) nor a pipeline"
                         f" folder with vae/: {error}") from error


@torch.no_grad()
def encode_dataset(vae, images, batch_size=256):
    """The score model's data under ``--vae``: the scaled posterior modes ``scaling_factor * E(x)`` of ``images`` (in
    [-1, 1], as diffusers' VAEs take them), (N, latent_channels, h, w) float32, computed once before training."""
    latents = [vae.encode(images[i:i + batch_size].to(vae.dtype)).latent_dist.mode()
               for i in range(0, len(images), batch_size)]
    return torch.cat(latents).to(torch.float32) * vae.config.scaling_factor
