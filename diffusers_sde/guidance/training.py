"""``diffusers-sde train-classifier``: fit a noise-conditional classifier p_t(y | x_t) for classifier guidance.

The classifier learns on data forward-noised by the same SDE as the score model it will guide, x_t = a(t) x_0 + s(t) z,
with t drawn as in the score loss (uniform on [eps, 1]), and is fed what that model is fed (its scheduler's network time,
its data range): both are read from the score model's pipeline folder (``--model``). The loss is the cross-entropy of
the true label (Song et al. 2021, App. I.1, where a Wide ResNet is trained the same way).
"""

import dataclasses
import os

import torch

from ..command_options import add_config_parser, block_out_channels, resolve_model
from ..pretrained_models import PRETRAINED_MODELS
from ..saving import save_pretrained_atomically
from ..validation import check_integer, check_number
from .classifier import NoiseConditionalClassifier

CLASSIFIER_SUBFOLDER = "classifier"  # where the classifier is written inside --output-dir, as in a pipeline folder


@dataclasses.dataclass
class ClassifierTrainingConfig:
    """Everything a classifier training run depends on; fields mirror ``diffusers-sde train-classifier`` options.

    Args:
        output_dir (`str`): the classifier is saved to ``<output_dir>/classifier`` (``save_pretrained``).
        model (`str`): the score model's pipeline folder (or an embedded model's name): its scheduler fixes the SDE,
            the network time input and the data range.
        data (`str`): labelled data: ``"digits"`` or ``imagefolder:<path>`` with class subfolders (see
            ``training.data.load_dataset``).
        block_out_channels (`str`): comma-separated channels per resolution of the classifier.
        max_steps (`int`), batch_size (`int`), learning_rate (`float`), warmup_steps (`int`): Adam with linear warm-up.
        eps (`float`): smallest training time, as in the score loss.
        seed (`int`): seeds the initialization, the data order and the noise.
        log_every (`int`): print the mean loss and accuracy every this many steps (0: never).
    """

    output_dir: str
    model: str = "digits-vp"
    data: str = "digits"
    block_out_channels: str = "32,64"
    max_steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    eps: float = 1e-5
    seed: int = 0
    log_every: int = 500

    def validate(self):
        # Named by their command-line flags, as TrainingConfig does: the options arrive from there.
        check_integer("--max-steps", self.max_steps, minimum=1)
        check_integer("--batch-size", self.batch_size, minimum=1)
        check_integer("--warmup-steps", self.warmup_steps, minimum=0)
        check_integer("--log-every", self.log_every, minimum=0)
        check_number("--learning-rate", self.learning_rate, minimum=0)
        check_number("--eps", self.eps, minimum=0, maximum=1 - 1e-9)
        self.channels()

    def channels(self):
        return block_out_channels(self.block_out_channels)


def _score_model_scheduler(model):
    """The scheduler of the score model to guide (SDE, time input, data range)."""
    from ..schedulers import PredictorCorrectorScheduler

    path = resolve_model(model)
    try:
        return PredictorCorrectorScheduler.from_pretrained(path, subfolder="scheduler")
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {model!r} is not a score model's pipeline folder with a scheduler (or one of the"
                         f" embedded models {', '.join(PRETRAINED_MODELS)}): {error}") from error


def noisy_batch(scheduler, images, eps, generator):
    """Forward-noised images x_t = a(t) x_0 + s(t) z with t ~ U(eps, 1), as the score loss draws them, and the network
    time the score model would be fed at t."""
    from ..training.losses import sample_training_times

    t, _ = sample_training_times(scheduler.sde, len(images), eps, generator=generator)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    noisy = scheduler.sde.perturb(images, t, noise).to(images.dtype)
    return noisy, scheduler.parameterization.model_time(t).to(torch.float32)


def train_classifier(config):
    """Run a :class:`ClassifierTrainingConfig`; returns the trained classifier (saved to ``<output_dir>/classifier``)."""
    from ..training.data import load_dataset
    from ..training.trainer import linear_warmup

    config.validate()
    scheduler = _score_model_scheduler(config.model)
    images, labels = load_dataset(config.data, scheduler.config.data_centered, with_labels=True)
    num_classes = int(labels.max()) + 1
    torch.manual_seed(config.seed)
    size = images.shape[2] if images.shape[2] == images.shape[3] else tuple(images.shape[2:])
    classifier = NoiseConditionalClassifier(
        in_channels=images.shape[1], sample_size=size, num_classes=num_classes,
        block_out_channels=config.channels(), norm_num_groups=min(8, *config.channels()),
        time_embedding_type="fourier" if scheduler.config.timestep_type == "sigma" else "positional")
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.learning_rate)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup(config.warmup_steps))
    generator = torch.Generator().manual_seed(config.seed)
    order, position = torch.randperm(len(images), generator=generator), 0
    running_loss, running_correct, running_count = 0.0, 0, 0
    classifier.train()
    for step in range(1, config.max_steps + 1):
        if position + config.batch_size > len(order):
            order, position = torch.randperm(len(images), generator=generator), 0
        indices = order[position:position + config.batch_size]
        position += config.batch_size
        noisy, timestep = noisy_batch(scheduler, images[indices], config.eps, generator)
        logits = classifier(noisy, timestep).logits
        loss = torch.nn.functional.cross_entropy(logits, labels[indices])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warmup.step()
        running_loss += loss.item() * len(indices)
        running_correct += int((logits.argmax(1) == labels[indices]).sum())
        running_count += len(indices)
        if config.log_every and step % config.log_every == 0:
            print(f"step {step}/{config.max_steps} cross-entropy {running_loss / running_count:.4f} accuracy"
                  f" {running_correct / running_count:.3f} (noisy training batches, t ~ U(eps, 1))")
            running_loss, running_correct, running_count = 0.0, 0, 0
    classifier.eval()
    save_pretrained_atomically(classifier, os.path.join(config.output_dir, CLASSIFIER_SUBFOLDER))
    print(f"saved the classifier to {os.path.join(config.output_dir, CLASSIFIER_SUBFOLDER)}")
    return classifier


_HELP = {
    "output_dir": "the classifier is saved to <output-dir>/classifier (load it with sample --classifier <output-dir>)",
    "model": "the score model to guide (folder or embedded name): its SDE, time input and data range",
    "data": "labelled data: 'digits' or imagefolder:<path> with one subfolder per class",
    "block_out_channels": "classifier channels per resolution, comma-separated",
    "max_steps": "optimizer steps",
    "batch_size": "images per step",
    "learning_rate": "Adam learning rate",
    "warmup_steps": "steps of linear learning-rate warm-up",
    "eps": "smallest training time t (as in the score loss)",
    "seed": "seeds the initialization, the data order and the noise",
    "log_every": "print the mean cross-entropy and accuracy every this many steps (0: never)",
}


def add_train_classifier_parser(commands):
    """Add the ``train-classifier`` subparser: one option per :class:`ClassifierTrainingConfig` field."""
    return add_config_parser(commands, "train-classifier", "train a noise-conditional classifier for classifier guidance",
                             ClassifierTrainingConfig, _HELP, train_classifier)
