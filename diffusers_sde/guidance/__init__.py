"""Class guidance: a noise-conditional classifier, its training command, and the guidance applied by the pipeline."""

from .classifier import NoiseConditionalClassifier, NoiseConditionalClassifierOutput
from .guidance import ClassifierFreeGuidance, Guidance, class_label_gradient, check_class_labels, resolve_guidance

__all__ = [
    "NoiseConditionalClassifier", "NoiseConditionalClassifierOutput", "ClassifierFreeGuidance", "Guidance",
    "class_label_gradient", "check_class_labels", "resolve_guidance",
]
