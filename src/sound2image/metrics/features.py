"""Image feature extractors for FID and KID (pluggable).

- :func:`inception_features` — Inception-v3 pool features (2048-D), the standard FID/KID space, through
  torchmetrics' extractor with torch-fidelity's weights (``pt_inception-2015-12-05-6726825d.pth``). Needs
  the ``torch-fidelity`` package (which needs torchvision) and the weights file.
- :func:`encoder_features` — any image encoder, e.g. the SounDiff pipeline's own CLIP image encoder
  (``clip``); works offline with the pipeline's weights.
- :func:`classifier_features` — the penultimate features of a :class:`~sound2image.metrics.SmallCNN`
  trained on the dataset's own images (``classifier:DIR``), the right space for 32×32 digits.

Each returns an :class:`ImageFeatures`: ``features(images) -> (N, D)`` float64 on the CPU, with a
``name`` recorded in the report.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from sound2image.errors import UsageError, WeightsError
from sound2image.metrics.classifier import ImageClassifier

#: The Inception-v3 FID weights file (TensorFlow's 2015-12-05 graph, ported by pytorch-fid / torch-fidelity).
INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
#: The name newer torch-fidelity releases download the same weights under.
INCEPTION_WEIGHTS_ALIASES = (INCEPTION_WEIGHTS, "weights-inception-2015-12-05-6726825d.pth")
_OFFLINE = "features=clip or features=classifier:DIR work offline"


@runtime_checkable
class ImageFeatures(Protocol):
    """An image feature extractor for FID/KID.

    Attributes:
        name: recorded in the report: ``"inception"``, ``"clip"``, ``"classifier:<dir>"``, ….
        num_features: D, the feature dimension.
    """

    name: str
    num_features: int

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images (any size and mode) -> (N, D) float64 features on the CPU."""
        ...


class _Extractor:
    """An :class:`ImageFeatures` made of a function (images -> (N, D) tensor)."""

    def __init__(
        self, name: str, num_features: int, function: Callable[[Sequence[Image.Image]], torch.Tensor]
    ):
        self.name = name
        self.num_features = int(num_features)
        self._function = function

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        images = list(images)
        if not images:
            return torch.zeros((0, self.num_features), dtype=torch.float64)
        out = torch.as_tensor(self._function(images)).detach().to("cpu", torch.float64)
        if tuple(out.shape) != (len(images), self.num_features):
            expected = (len(images), self.num_features)
            raise UsageError(f"{self.name} features: expected shape {expected}, got {tuple(out.shape)}")
        return out

    def __repr__(self) -> str:
        return f"ImageFeatures({self.name!r}, num_features={self.num_features})"


def default_inception_dir() -> Path:
    """Where torch (and torch-fidelity) keep downloaded checkpoints: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def inception_features(weights: str | None = None, batch_size: int = 32) -> ImageFeatures:
    """Inception-v3 pool features (2048-D), through torchmetrics' ``NoTrainInceptionV3``.

    Images are converted to RGB uint8; the extractor resizes them to 299×299 itself (bilinear, as
    TensorFlow 1.x did). Nothing is downloaded: the weights file must be present.

    Args:
        weights: the weights file; default
            ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (or torch-fidelity's name
            for it, ``weights-inception-2015-12-05-6726825d.pth``).
        batch_size: images per forward pass.

    Raises:
        WeightsError: one line, when the ``torch-fidelity`` package is missing or the weights file is missing
            or unreadable; it says what to install or where to put the file, and that ``features=clip`` or
            ``features=classifier:DIR`` work offline.
    """
    try:
        importlib.import_module("torch_fidelity")
    except ImportError:
        raise WeightsError(
            "the Inception-v3 feature extractor needs the torch-fidelity package (pip install "
            f"torch-fidelity, which needs torchvision); {_OFFLINE}",
            parameters=("features",),
        ) from None
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(
                f"{path}: Inception-v3 checkpoint not found (get {INCEPTION_WEIGHTS} with network access); "
                f"{_OFFLINE}",
                parameters=("features",),
            )
    else:
        folder = default_inception_dir()
        found = [folder / name for name in INCEPTION_WEIGHTS_ALIASES if (folder / name).is_file()]
        if not found:
            raise WeightsError(
                f"Inception-v3 checkpoint not found: put {INCEPTION_WEIGHTS} in {folder} (offline), or pass "
                f"weights=FILE; {_OFFLINE}",
                parameters=("weights", "features"),
            )
        path = found[0]
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        network = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        )
    except Exception as error:  # torch.load / load_state_dict of a bad file: many exception types
        raise WeightsError(
            f"{path}: cannot load the Inception-v3 checkpoint ({type(error).__name__})"
        ) from None

    @torch.no_grad()
    def encode(images: Sequence[Image.Image]) -> torch.Tensor:
        out = torch.zeros((len(images), 2048), dtype=torch.float64)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(image.size, []).append(index)
        for indices in by_size.values():  # one batch shape per image size
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                pixels = np.stack([np.asarray(images[i].convert("RGB"), dtype=np.uint8) for i in chunk])
                batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W) uint8
                out[chunk] = network(batch).double()
        return out

    return _Extractor("inception", 2048, encode)


def encoder_features(
    encode: Callable[[Sequence[Image.Image]], torch.Tensor], name: str, num_features: int
) -> ImageFeatures:
    """Wrap an image encoder (PIL images -> (N, D) tensor), e.g. the SounDiff pipeline's CLIP image encoder.

    Args:
        encode: the encoder; it does its own resizing and normalisation.
        name: recorded in the report (``"clip"``).
        num_features: D; a call that returns another shape raises :class:`~sound2image.errors.UsageError`.
    """
    if not (isinstance(num_features, int) and num_features >= 1):
        raise UsageError(
            f"num_features must be an integer >= 1, got {num_features!r}", parameters=("num_features",)
        )
    return _Extractor(name, num_features, encode)


def classifier_features(classifier: ImageClassifier, name: str) -> ImageFeatures:
    """Penultimate features of a trained classifier (:meth:`SmallCNN.features`, 4·width dimensions).

    Each image is prepared exactly as the classifier's training images were
    (:func:`sound2image.data.prepare_image`: grayscale; smaller images centred on black, larger ones
    centre-cropped and area-resized to ``config.image_size``).

    Args:
        classifier: a trained :class:`ImageClassifier`.
        name: recorded in the report (``"classifier:<dir>"``).
    """
    from sound2image.data import prepare_image

    size = classifier.config.image_size

    def encode(images: Sequence[Image.Image]) -> torch.Tensor:
        return classifier.features(np.stack([prepare_image(image, size) for image in images]))

    return _Extractor(name, 4 * classifier.config.width, encode)
