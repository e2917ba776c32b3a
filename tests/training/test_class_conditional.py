"""Class-conditional training for classifier-free guidance: `train --num-classes K --label-dropout p`."""

import pytest
import torch
from PIL import Image

from diffusers_sde.training import TrainingConfig, train
from diffusers_sde.training.trainer import _drop_labels


def _config(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), max_steps=2, batch_size=8, warmup_steps=1, checkpointing_steps=0,
                  log_every=0, model_preset="digits-mini")
    values.update(overrides)
    return TrainingConfig(**values)


def test_trains_a_class_conditional_unet_with_an_unconditional_label(tmp_path):
    pipe = train(_config(tmp_path, num_classes=10, sample_every=2, num_samples=4))
    assert pipe.unet.config.num_class_embeds == 11  # classes 0..9 and the unconditional label 10
    assert (tmp_path / "out" / "samples" / "step-2.png").exists()  # the training grid samples unconditionally
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, class_labels=[3, 7], guidance_scale=2.0, output_type="np").images
    assert images.shape == (2, 8, 8, 1)


def test_label_dropout_replaces_labels_by_the_unconditional_one_at_its_rate():
    labels = torch.arange(20000) % 10
    dropped = _drop_labels(labels, 10, 0.3, torch.Generator().manual_seed(0))
    replaced = dropped == 10
    assert abs(replaced.double().mean().item() - 0.3) < 0.015  # binomial std 0.0032
    assert torch.equal(dropped[~replaced], labels[~replaced])
    assert torch.equal(_drop_labels(labels, 10, 0.0, torch.Generator().manual_seed(0)), labels)


@pytest.mark.parametrize("overrides, message", [
    (dict(label_dropout=0.2), "--label-dropout 0.2 needs --num-classes"),
    (dict(num_classes=10, label_dropout=1.0), r"--label-dropout must be in \[0, 1\), got 1.0"),
    (dict(num_classes=0), "--num-classes must be an integer >= 1"),
    (dict(num_classes=5), r"--num-classes 5 allows labels 0..4, but --data 'digits' has labels 0..9; pass --num-classes 10"),
])
def test_bad_class_options_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train(_config(tmp_path, **overrides))


def test_a_plain_image_folder_has_no_labels(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        Image.new("L", (8, 8), 40 * index).save(folder / f"{index}.png")
    with pytest.raises(ValueError, match="--num-classes needs class labels, but --data .* is a plain image folder"):
        train(_config(tmp_path, data=str(folder), num_classes=2))
