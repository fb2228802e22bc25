"""A small CNN image classifier trained on a dataset's own images, and AIC computed with it.

AIC (audio-image consistency, as in AudioToken): the fraction of generated images that the classifier
assigns to the class of the audio they were generated from. The judge is trained on the *real training
images* of the same split, never on generated ones, and its accuracy on held-out real images is
reported beside every AIC so the judge itself can be judged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sound2image.errors import Sound2ImageError, UsageError
from sound2image.persistence import CONFIG_NAME, config_from_dict, load_model_dir, save_model_dir

FORMAT = "sound2image-image-classifier"
WHAT = "image classifier"


class _PooledStages(nn.Sequential):
    """Conv stages followed by global average pooling: (B, 1, S, S) -> (B, channels of the last stage)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x).mean(dim=(2, 3))  # (B, C, S/8, S/8) -> (B, C)


class SmallCNN(nn.Module):
    """Three conv stages (32, 64, 128 channels) with batch norm and max-pooling, global average pooling,
    then a linear head.

    Input (B, 1, S, S) grayscale scaled to [0, 1]; output (B, num_classes) logits. ``features(x)`` gives
    the penultimate features, (B, 4·width): the pooled output of the last stage that the head reads
    (before its dropout). ``features`` is also the module holding the stages (``features[0]`` is the
    first), so saved state dicts keep their keys.
    """

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = _PooledStages(stage(1, width), stage(width, 2 * width), stage(2 * width, 4 * width))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 4w) pooled features -> (B, classes)


@dataclass
class ClassifierConfig:
    """Training settings; saved with the classifier."""

    classes: list[str] = field(default_factory=list)
    image_size: int = 32
    width: int = 32
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 2
    seed: int = 42


class ImageClassifier:
    """A trained :class:`SmallCNN` together with its class names."""

    def __init__(self, model: SmallCNN, config: ClassifierConfig) -> None:
        self.model = model.eval()
        self.config = config
        #: The whole config.json when loaded with from_pretrained (extra keys included), else empty.
        self.saved_metadata: dict[str, Any] = {}

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> list[str]:
        """(N, S, S) uint8 grayscale -> N class names."""
        indices = self.predict_indices(images, batch_size)
        return [self.config.classes[i] for i in indices]

    @torch.no_grad()
    def predict_indices(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> list[int]:
        """(N, S, S) uint8 grayscale -> N class indices."""
        images = torch.as_tensor(np.asarray(images))
        size = self.config.image_size
        if images.ndim != 3 or tuple(images.shape[1:]) != (size, size):
            raise UsageError(f"classifier expects (N, {size}, {size}) images, got {tuple(images.shape)}")
        self.model.eval()
        out: list[int] = []
        for start in range(0, images.shape[0], batch_size):
            batch = _to_input(images[start : start + batch_size])
            out.extend(self.model(batch).argmax(dim=1).tolist())
        return out

    @torch.no_grad()
    def logits(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N, S, S) uint8 grayscale -> (N, classes) float32 logits (columns in ``config.classes`` order)."""
        return self._run(images, batch_size, penultimate=False)

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N, S, S) uint8 grayscale -> (N, 4·width) float32 penultimate features
        (:meth:`SmallCNN.features`)."""
        return self._run(images, batch_size, penultimate=True)

    def _run(self, images: np.ndarray | torch.Tensor, batch_size: int, penultimate: bool) -> torch.Tensor:
        images = self._check(images)
        self.model.eval()
        function = self.model.features if penultimate else self.model
        width = 4 * self.config.width if penultimate else len(self.config.classes)
        out = [
            function(_to_input(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros((0, width))

    def _check(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(np.asarray(images))
        size = self.config.image_size
        if images.ndim != 3 or tuple(images.shape[1:]) != (size, size):
            raise UsageError(f"classifier expects (N, {size}, {size}) images, got {tuple(images.shape)}")
        return images

    def accuracy(self, images: np.ndarray | torch.Tensor, labels: Sequence[str]) -> float:
        """Fraction of ``images`` classified as their ``labels``."""
        predicted = self.predict(images)
        return (
            float(np.mean([p == str(t) for p, t in zip(predicted, labels, strict=True)]))
            if labels
            else math.nan
        )

    # --- persistence ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The CNN's tensors (what ``model.safetensors`` holds)."""
        return self.model.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> Any:
        """Load the CNN's tensors."""
        return self.model.load_state_dict(state, strict=strict)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` (the :class:`ClassifierConfig`, class names included) and
        ``model.safetensors`` (see :mod:`sound2image.persistence`)."""
        return save_model_dir(directory, self, self.config, FORMAT)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> ImageClassifier:
        """Load a saved classifier (CPU, eval mode); the whole config.json is its ``saved_metadata``.

        Raises:
            WeightsError: one line naming the file and the problem (see :mod:`sound2image.persistence`).
        """
        source = str(Path(directory) / CONFIG_NAME)

        def build(values: dict[str, Any]) -> ImageClassifier:
            config = config_from_dict(ClassifierConfig, values, source)
            return cls(SmallCNN(len(config.classes), config.width), config)

        classifier = load_model_dir(directory, FORMAT, build, WHAT)
        classifier.model.eval()
        return classifier


def _to_input(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255.0).unsqueeze(1)  # (B, 1, S, S) in [0, 1]


def load_labelled_images(pairs: Sequence[Any], image_size: int) -> tuple[np.ndarray, list[str], list[str]]:
    """The images of labelled pairs as (N, S, S) uint8 (see ``prepare_image``), their labels, problems."""
    from sound2image.data import load_image, prepare_image

    images, labels, problems = [], [], []
    for pair in pairs:
        if pair.label is None:
            problems.append(f"{pair.image}: no label")
            continue
        try:
            images.append(prepare_image(load_image(pair.image, mode="L"), image_size))
        except Sound2ImageError as error:
            problems.append(str(error))
            continue
        labels.append(str(pair.label))
    array = np.stack(images) if images else np.zeros((0, image_size, image_size), dtype=np.uint8)
    return array, labels, problems


def audio_image_consistency(predicted: Sequence[str], audio_labels: Sequence[str]) -> float:
    """AIC: the fraction of generated images whose predicted class equals their audio's label."""
    if len(predicted) != len(audio_labels):
        raise ValueError(f"{len(predicted)} predictions for {len(audio_labels)} labels")
    if not predicted:
        return math.nan
    return sum(p == str(t) for p, t in zip(predicted, audio_labels, strict=True)) / len(predicted)
