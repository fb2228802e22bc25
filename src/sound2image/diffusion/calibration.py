"""Embedding calibration: put ImageBind audio vectors on the scale unCLIP's image embeddings have.

ImageBind's audio embeddings are L2-normalised and multiplied by a fixed 20. The unCLIP U-Net of
``stabilityai/stable-diffusion-2-1-unclip`` was trained on raw OpenCLIP ViT-H image embeddings, whose
norm is not 20, and its ``image_normalizer`` is the identity (REFERENCE.md §4), so nothing else
rescales them. We therefore map every conditioning vector to unit direction × ``target_norm``,
where ``target_norm`` is the mean norm of the pipeline's own image-encoder embeddings over a set of
real images, measured once and stored next to the model. Fine-tuning and generation read the same
stored value, so they always agree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sound2image.errors import UsageError

CALIBRATION_FILE = "sound2image_calibration.json"
IMAGEBIND_SCALE = 20.0  # ImageBind's own post-processing: unit vector × 20


@dataclass(frozen=True)
class EmbeddingCalibration:
    """Map embeddings to ``target_norm``; ``source`` records how the number was obtained."""

    target_norm: float = IMAGEBIND_SCALE
    source: str = "uncalibrated: ImageBind's own scale (x20); run calibration on real images"
    num_images: int = 0

    def __post_init__(self) -> None:
        if not (self.target_norm > 0 and torch.isfinite(torch.tensor(self.target_norm))):
            raise UsageError(
                f"calibration target_norm must be a positive finite number, got {self.target_norm}"
            )

    @property
    def is_measured(self) -> bool:
        return self.num_images > 0

    def apply(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) vectors of any norm -> same directions with norm ``target_norm``."""
        return normalize(embeds) * self.target_norm

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / CALIBRATION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> EmbeddingCalibration | None:
        """The calibration stored in ``directory``, or None when there is none."""
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise UsageError(f"{path}: not a valid calibration file ({error})") from error

    @classmethod
    def from_image_embeddings(cls, image_embeds: torch.Tensor, source: str) -> EmbeddingCalibration:
        """Measure ``target_norm`` as the mean norm of real image embeddings (N, D)."""
        if image_embeds.ndim != 2 or image_embeds.shape[0] == 0:
            raise UsageError("calibration needs at least one image embedding of shape (N, D)")
        norms = image_embeds.float().norm(dim=-1)
        return cls(target_norm=float(norms.mean()), source=source, num_images=int(image_embeds.shape[0]))


def normalize(embeds: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise along the last dimension (float32 maths, input dtype kept)."""
    norms = embeds.float().norm(dim=-1, keepdim=True).clamp_min(eps)
    return (embeds.float() / norms).to(embeds.dtype)


def blend(embeds: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Weighted mix of (K, D) embeddings in normalised space -> one unit vector (D,).

    Each vector is normalised first so that a weight is a true proportion whatever the sources'
    norms (an ImageBind vector of norm 20 and a CLIP one of another norm mix fairly).
    """
    weight = torch.as_tensor(list(weights), dtype=torch.float32)
    if embeds.ndim != 2 or weight.shape[0] != embeds.shape[0]:
        raise UsageError(f"blend: {embeds.shape[0]} embeddings but {weight.shape[0]} weights")
    if (weight < 0).any() or not torch.isfinite(weight).all() or weight.sum() <= 0:
        raise UsageError(f"blend weights must be non-negative with a positive sum, got {list(weights)}")
    mixed = (normalize(embeds.float()) * (weight / weight.sum())[:, None]).sum(dim=0)
    return normalize(mixed)
