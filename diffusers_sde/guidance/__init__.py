"""Class guidance: a noise-conditional classifier, its training command, and the guidance applied by the pipeline."""

from .classifier import NoiseConditionalClassifier, NoiseConditionalClassifierOutput
from .guidance import ClassifierFreeGuidance, Guidance, class_label_gradient, check_class_labels, resolve_guidance
from .training import ClassifierTrainingConfig, train_classifier

__all__ = [
    "NoiseConditionalClassifier", "NoiseConditionalClassifierOutput", "ClassifierFreeGuidance", "Guidance",
    "class_label_gradient", "check_class_labels", "resolve_guidance", "ClassifierTrainingConfig", "train_classifier",
]
