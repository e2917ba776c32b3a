"""Class guidance on the digits: does the judge recognise the requested class, and how close is each class to the real one?

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_guidance.py [--per-class 100] [--steps 20] [--quick] [--grid-dir D]

Two guided models, both embedded and trained by our commands (docs/controllable.md):
- classifier guidance: the embedded unconditional `digits-vp` model with the `digits-vp-classifier` noise-conditional
  classifier (``diffusers-sde train-classifier``);
- classifier-free guidance: the class-conditional `digits-vp-cfg` model (``diffusers-sde train --num-classes 10``).

For each guidance scale, ``--per-class`` samples of every class 0..9 (exponential integrator, ``--steps`` steps, seed
fixed) are judged by the digits classifier of ``diffusers_sde.evaluation.DigitsQuality`` (fit on the held-out split, which
no generative model or guidance classifier saw). Reported: accuracy (share recognised as the requested class; worst
class), and the Frechet distance in the judge's feature space between each class's samples and the train split's digits
of that class (mean and worst over classes). The floor row scores the held-out digits of each class the same way.
Prints a markdown table (the one in docs/controllable.md).
"""

import argparse
import os
import time

import numpy as np
import torch

from diffusers_sde import ExponentialIntegratorScheduler, NoiseConditionalClassifier, ScoreSDEPipeline
from diffusers_sde.image_grid import save_image_grid
from diffusers_sde.evaluation import NUM_CLASSES, DigitsQuality, frechet_distance
from diffusers_sde.pretrained_models import pretrained_model_path
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split


class PerClassJudge:
    """Accuracy and per-class Frechet distance of class-labelled digit samples in [0, 1]."""

    def __init__(self):
        self.quality = DigitsQuality()
        images, labels = digits_split("train")
        features = self.quality.features(images / DIGITS_GREY_LEVELS)
        self.reference = [(features[labels == k].mean(0), np.cov(features[labels == k], rowvar=False))
                          for k in range(NUM_CLASSES)]

    def evaluate(self, images, labels):
        flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        predicted = self.quality.classifier.predict(flat)
        features = self.quality.features(flat)
        accuracy = [(predicted[labels == k] == k).mean() for k in range(NUM_CLASSES)]
        distances = [frechet_distance(features[labels == k].mean(0), np.cov(features[labels == k], rowvar=False),
                                      *self.reference[k]) for k in range(NUM_CLASSES)]
        return {"accuracy": float((predicted == labels).mean()), "worst_accuracy": float(min(accuracy)),
                "frechet_mean": float(np.mean(distances)), "frechet_worst": float(max(distances)),
                "frechet_per_class": distances}


def _row(name, scale, result, nfe="-", seconds=None):
    timing = "" if seconds is None else f"{seconds:.0f}"
    print(f"| {name:<34} | {scale:>5} | {result['accuracy']:.3f} | {result['worst_accuracy']:.3f} |"
          f" {result['frechet_mean']:6.2f} | {result['frechet_worst']:6.2f} | {nfe:>4} | {timing:>4} |", flush=True)


def _sample(pipe, labels, scale, steps, seed):
    generator = [torch.Generator().manual_seed(seed + i) for i in range(len(labels))]
    output = pipe(batch_size=len(labels), num_inference_steps=steps, class_labels=torch.as_tensor(labels),
                  guidance_scale=scale, generator=generator, output_type="np")
    return output.images[..., 0], output.nfe


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", dest="per_class", type=int, default=100, help="samples per class")
    parser.add_argument("--steps", type=int, default=20, help="exponential integrator steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier-scales", default="0,1,2,4", help="classifier guidance scales")
    parser.add_argument("--cfg-scales", default="1,2,3", help="classifier-free guidance scales")
    parser.add_argument("--quick", action="store_true", help="30 samples per class")
    parser.add_argument("--grid-dir", dest="grid_dir",
                        help="also write a 10 x 10 grid per model and scale (row k: the first 10 samples of class k)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_class = 30 if args.quick else args.per_class

    judge = PerClassJudge()
    print(f"{per_class} samples per class, exponential integrator {args.steps} steps, seed {args.seed}")
    print("| model | scale | accuracy | worst class | Frechet (mean of classes) | Frechet (worst class) | NFE | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    heldout, heldout_labels = digits_split("heldout")
    _row("real held-out digits (~50 per class)", "-", judge.evaluate(heldout / DIGITS_GREY_LEVELS, heldout_labels))

    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    guided = ScoreSDEPipeline.from_pretrained(pretrained_model_path("digits-vp"))
    guided.register_modules(classifier=NoiseConditionalClassifier.from_pretrained(
        pretrained_model_path("digits-vp-classifier"), subfolder="classifier"))
    free = ScoreSDEPipeline.from_pretrained(pretrained_model_path("digits-vp-cfg"))
    runs = [("classifier guidance (digits-vp)", guided, args.classifier_scales),
            ("classifier-free (digits-vp-cfg)", free, args.cfg_scales)]
    for name, pipe, scales in runs:
        pipe.scheduler = ExponentialIntegratorScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        for scale in (float(value) for value in scales.split(",")):
            start = time.perf_counter()
            images, nfe = _sample(pipe, labels, scale, args.steps, args.seed)
            result = judge.evaluate(images, labels)
            _row(name, f"{scale:g}", result, nfe, time.perf_counter() - start)
            if args.grid_dir:
                first_ten = np.concatenate([images[labels == k][:10] for k in range(NUM_CLASSES)])
                kind = "classifier" if pipe is guided else "cfg"
                save_image_grid(pipe.numpy_to_pil(first_ten[..., None]),
                                os.path.join(args.grid_dir, f"guidance_{kind}_scale{scale:g}.png"))
            print("  per-class Frechet: " + " ".join(f"{k}:{d:.2f}" for k, d in enumerate(result["frechet_per_class"])))


if __name__ == "__main__":
    main()
