"""Training data sources: Hugging Face ``datasets`` folders (save_to_disk, imagefolder) and the random flip."""

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_sde.training import TrainingConfig, load_dataset, train
from diffusers_sde.training.data import random_horizontal_flip

datasets = pytest.importorskip("datasets")


def _rgb_images():
    """Two 8x8 RGB images with distinct, known channel values and a left-right asymmetry."""
    arrays = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    arrays[0, :, :, 0], arrays[0, :, :, 1], arrays[0, :, :, 2] = 255, 51, 0
    arrays[1, :, :4] = 102
    return arrays, [Image.fromarray(array) for array in arrays]


def _expected(arrays, data_centered):
    unit = torch.from_numpy(arrays.astype(np.float32) / 255).permute(0, 3, 1, 2)
    return unit * 2 - 1 if data_centered else unit


def _save(tmp_path, images, splits=None):
    features = datasets.Features({"label": datasets.Value("int64"), "image": datasets.Image()})
    dataset = datasets.Dataset.from_dict({"label": list(range(len(images))), "image": images}, features=features)
    path = str(tmp_path / "saved")
    (datasets.DatasetDict({name: dataset for name in splits}) if splits else dataset).save_to_disk(path)
    return path


@pytest.mark.parametrize("data_centered", [True, False])
def test_saved_dataset_loads_in_model_range(tmp_path, data_centered):
    arrays, images = _rgb_images()
    data = load_dataset(_save(tmp_path, images), data_centered)
    assert data.dtype == torch.float32
    assert torch.allclose(data, _expected(arrays, data_centered), atol=1e-6)


def test_saved_dataset_dict_uses_train_split(tmp_path):
    arrays, images = _rgb_images()
    path = _save(tmp_path, images, splits=("train", "test"))
    assert torch.allclose(load_dataset(path), _expected(arrays, True), atol=1e-6)
    path = _save(tmp_path / "other", images, splits=("validation",))
    with pytest.raises(ValueError, match="no split 'train'.*'validation'"):
        load_dataset(path)


def test_saved_dataset_without_image_column_is_named(tmp_path):
    path = str(tmp_path / "numbers")
    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(path)
    with pytest.raises(ValueError, match="needs a column of type datasets.Image.*'x'"):
        load_dataset(path)


def test_imagefolder_reads_class_subfolders(tmp_path):
    arrays, images = _rgb_images()
    for index, (name, image) in enumerate(zip(("cat", "dog"), images)):
        (tmp_path / name).mkdir()
        image.save(tmp_path / name / f"{index}.png")
    data = load_dataset(f"imagefolder:{tmp_path}", data_centered=False)
    assert data.shape == (2, 3, 8, 8)
    # the builder's row order is its own: compare as a set of images
    found = sorted(data.flatten(1).sum(1).tolist())
    assert np.allclose(found, sorted(_expected(arrays, False).flatten(1).sum(1).tolist()), atol=1e-4)


def test_random_horizontal_flip_mirrors_about_half():
    images = torch.arange(1000 * 4, dtype=torch.float32).reshape(1000, 1, 2, 2)
    flipped = random_horizontal_flip(images, torch.Generator().manual_seed(0))
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    kept = (flipped == images).flatten(1).all(1)
    assert bool((mirrored ^ kept).all())
    assert 430 < int(mirrored.sum()) < 570  # Binomial(1000, 1/2): 4.4 standard deviations
    again = random_horizontal_flip(images, torch.Generator().manual_seed(0))
    assert torch.equal(flipped, again)


def test_trainer_reads_saved_dataset_with_flips(tmp_path):
    _, images = _rgb_images()
    path = _save(tmp_path, images * 4)
    config = TrainingConfig(output_dir=str(tmp_path / "out"), data=path, random_flip=True, max_steps=2, batch_size=4,
                            checkpointing_steps=0, log_every=0, warmup_steps=1)
    pipeline = train(config)
    assert pipeline.unet.config.in_channels == 3 and pipeline.unet.config.sample_size == 8


def test_tinted_digits_are_one_colour_times_the_digit():
    from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split, load_dataset

    images = load_dataset("digits-tinted", data_centered=False)
    grey, _ = digits_split("train")
    assert images.shape == (len(grey), 3, 8, 8) and 0 <= images.min() and images.max() <= 1
    unit = torch.from_numpy(grey / DIGITS_GREY_LEVELS).float()
    colours = images.flatten(2).max(2).values / unit.flatten(1).max(1).values[:, None]  # the tint of each image
    torch.testing.assert_close(images, colours[:, :, None, None] * unit[:, None], rtol=1e-5, atol=1e-6)
    assert colours.min() >= 0.2 - 1e-6 and colours.max() <= 1 + 1e-6 and colours.std() > 0.1
    torch.testing.assert_close(load_dataset("digits-tinted", data_centered=False), images)  # the same colours each time
