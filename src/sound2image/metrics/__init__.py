"""Scores and judges: a small image classifier and AIC (audio-image consistency)."""

from sound2image.metrics.classifier import (
    ClassifierConfig,
    ImageClassifier,
    SmallCNN,
    audio_image_consistency,
    load_labelled_images,
    train_classifier,
)

__all__ = [
    "ClassifierConfig",
    "ImageClassifier",
    "SmallCNN",
    "audio_image_consistency",
    "load_labelled_images",
    "train_classifier",
]
