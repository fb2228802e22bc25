"""Scores and judges: a small image classifier and AIC (audio-image consistency).

Fitting the classifier is in :mod:`sound2image.training.classifier`."""

from sound2image.metrics.classifier import (
    ClassifierConfig,
    ImageClassifier,
    SmallCNN,
    audio_image_consistency,
    load_labelled_images,
)

__all__ = [
    "ClassifierConfig",
    "ImageClassifier",
    "SmallCNN",
    "audio_image_consistency",
    "load_labelled_images",
]
