"""Sample quality on the sklearn digits: Frechet distance in a small classifier's feature space, and class coverage.

The classifier (a one-hidden-layer MLP) is fit on the held-out split of the digits, which the demo model never sees;
reference statistics come from the train split the model learned. Its 64 hidden ReLU units play the role Inception
features play in FID. Needs scikit-learn.
"""

import numpy as np

from .training.data import DIGITS_GREY_LEVELS, digits_split

NUM_CLASSES = 10


def frechet_distance(mean1, cov1, mean2, cov2):
    """||m1 - m2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), with symmetric square roots (no scipy needed)."""

    def sqrt_psd(matrix):
        values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
        return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T

    root1 = sqrt_psd(cov1)
    cross = np.linalg.eigvalsh(root1 @ cov2 @ root1).clip(min=0)
    return float(((mean1 - mean2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * np.sqrt(cross).sum())


class DigitsQuality:
    """Scores 8x8 digit images given in [0, 1], shape (N, 8, 8) or (N, 64) (or (N, 1, 8, 8)).

    Args:
        seed (`int`): the classifier's initialization seed.
    """

    def __init__(self, seed=0):
        from sklearn.neural_network import MLPClassifier

        images, labels = digits_split("heldout")
        self.classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, random_state=seed)
        self.classifier.fit(self._flatten(images / DIGITS_GREY_LEVELS), labels)
        train_images, _ = digits_split("train")
        features = self.features(train_images / DIGITS_GREY_LEVELS)
        self.reference = features.mean(0), np.cov(features, rowvar=False)

    @staticmethod
    def _flatten(images):
        images = np.asarray(images, dtype=np.float64)
        return images.reshape(len(images), -1)

    def features(self, images):
        """The classifier's hidden-layer activations."""
        hidden = self._flatten(images) @ self.classifier.coefs_[0] + self.classifier.intercepts_[0]
        return np.maximum(hidden, 0)

    def evaluate(self, images):
        """A dict: ``frechet_distance`` to the train split, ``class_coverage`` (share of the 10 classes predicted for at
        least half their uniform share, i.e. 5% of samples), ``class_shares`` and ``mean_confidence``."""
        features = self.features(images)
        distance = frechet_distance(features.mean(0), np.cov(features, rowvar=False), *self.reference)
        probabilities = self.classifier.predict_proba(self._flatten(images))
        shares = np.bincount(probabilities.argmax(1), minlength=NUM_CLASSES) / len(probabilities)
        return {
            "frechet_distance": distance,
            "class_coverage": float((shares >= 0.5 / NUM_CLASSES).mean()),
            "class_shares": shares.round(3).tolist(),
            "mean_confidence": float(probabilities.max(1).mean()),
        }
