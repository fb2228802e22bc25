"""Scores and judges for evaluating generated images.

- :mod:`~sound2image.metrics.classifier`: a small image classifier (the AIC judge); fitting it is in
  :mod:`sound2image.training.classifier`.
- :mod:`~sound2image.metrics.bootstrap`: :class:`Estimate` (value, 95 % interval, N) and :func:`bootstrap`,
  the percentile bootstrap over clips.
- :mod:`~sound2image.metrics.consistency`: :func:`win_rates` (AIS / IIS as win-rates) and
  :func:`top_k_hits` (AIC, AIC@k).
- :mod:`~sound2image.metrics.fidelity`: :func:`frechet_distance` (FID) and :func:`kernel_distance` (KID) of
  precomputed features, computed by torchmetrics.
- :mod:`~sound2image.metrics.features`: image feature extractors for FID / KID (:class:`ImageFeatures`):
  :func:`inception_features`, :func:`encoder_features` (e.g. the pipeline's CLIP image encoder),
  :func:`classifier_features`.

Scoring a whole evaluation set is :func:`sound2image.evaluation.scoring.score`.
"""

from sound2image.metrics.bootstrap import Estimate, bootstrap, resample_indices
from sound2image.metrics.classifier import (
    ClassifierConfig,
    ImageClassifier,
    SmallCNN,
    audio_image_consistency,
    load_labelled_images,
)
from sound2image.metrics.consistency import owned_win_rates, top_k_hits, win_rates
from sound2image.metrics.features import (
    INCEPTION_WEIGHTS,
    ImageFeatures,
    classifier_features,
    encoder_features,
    inception_features,
)
from sound2image.metrics.fidelity import frechet_distance, kernel_distance, project_to_span

__all__ = [
    "INCEPTION_WEIGHTS",
    "ClassifierConfig",
    "Estimate",
    "ImageClassifier",
    "ImageFeatures",
    "SmallCNN",
    "audio_image_consistency",
    "bootstrap",
    "classifier_features",
    "encoder_features",
    "frechet_distance",
    "inception_features",
    "kernel_distance",
    "load_labelled_images",
    "owned_win_rates",
    "project_to_span",
    "resample_indices",
    "top_k_hits",
    "win_rates",
]
