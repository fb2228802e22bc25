"""Building the unCLIP ``image_embeds`` from sounds, weights and a reference image.

The recipe (REFERENCE.md §4, §6): every source vector is L2-normalised, mixed with weights that are
true proportions (:func:`~sound2image.diffusion.calibration.blend`), and only the final direction is
put on the calibrated scale. ImageBind audio vectors (norm 20) and CLIP image vectors (another norm)
therefore mix fairly, and the U-Net always sees the norm it was calibrated for.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sound2image.diffusion.calibration import EmbeddingCalibration, blend
from sound2image.errors import ImageError, Sound2ImageError, UsageError
from sound2image.validation import check_finite_values, check_number, check_positive_int

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageEmbeddings:
    """Embeddings of real images through the pipeline's image encoder, and the images that failed."""

    embeds: torch.Tensor  # (N, D) float32 on CPU
    names: tuple[str, ...]
    problems: tuple[str, ...]


def check_weights(weights: Sequence[float] | None, count: int, name: str = "audio_weights") -> list[float]:
    """Validate per-audio weights (default: equal); they are proportions, so only their ratios matter.

    Each weight must be finite and >= 0 (a weight of 0 leaves that sound out) and their sum positive.

    Raises:
        UsageError: one line naming ``name`` (e.g. ``audio_weights must be finite and >= 0, got nan``).
    """
    if weights is None:
        return [1.0] * count
    values = list(weights)
    if len(values) != count:
        raise UsageError(f"{name}: {count} audio inputs but {len(values)} weights; give one weight per audio")
    values = [check_number(f"{name}[{i}]", w, minimum=0.0) for i, w in enumerate(values)]
    if sum(values) <= 0:
        raise UsageError(f"{name} must have a positive sum (they are proportions), got {values}")
    return values


def check_image_weight(image_weight: float) -> float:
    """The reference image's share of the mix: a proportion in [0, 1].

    Raises:
        UsageError: ``image_weight must be finite and in [0, 1], got 1.5``.
    """
    return check_number("image_weight", image_weight, minimum=0.0, maximum=1.0)


def mix_embeddings(
    audio_embeds: torch.Tensor,
    calibration: EmbeddingCalibration,
    weights: Sequence[float] | None = None,
    image_embed: torch.Tensor | None = None,
    image_weight: float = 0.0,
) -> torch.Tensor:
    """The final conditioning vector, shape (1, D), on the calibrated scale.

    Args:
        audio_embeds (`torch.Tensor` of shape (K, D)): one embedding per audio, any norm.
        calibration (`EmbeddingCalibration`): the target norm of the result.
        weights (`Sequence[float]`, *optional*, defaults to equal weights): one per audio.
        image_embed (`torch.Tensor` of shape (D,) or (1, D), *optional*): a reference image's embedding.
        image_weight (`float`, defaults to 0.0): the image's proportion of the mix, in [0, 1]; the audio
            mix gets ``1 - image_weight``.

    Raises:
        UsageError: one line naming the parameter: a weight that is not finite or out of range, a shape
            mismatch, or an embedding holding NaN or infinity.
    """
    if audio_embeds.ndim != 2 or audio_embeds.shape[0] == 0:
        raise UsageError(f"expected audio embeddings of shape (K, D), got {tuple(audio_embeds.shape)}")
    check_finite_values("audio_embeds", audio_embeds)
    if image_embed is not None:
        check_finite_values("image_embed", image_embed.reshape(1, -1))
    audio_direction = blend(audio_embeds.float(), check_weights(weights, audio_embeds.shape[0]))  # (D,)
    direction = audio_direction
    if image_embed is not None:
        image_weight = check_image_weight(image_weight)
        pair = torch.stack([audio_direction, image_embed.float().reshape(-1)])  # (2, D)
        direction = blend(pair, [1.0 - image_weight, image_weight])
    return calibration.apply(direction[None, :])  # (1, D)


@torch.no_grad()
def encode_images(
    unclip: Any,
    images: Sequence[Any],
    batch_size: int = 8,
) -> torch.Tensor:
    """(N, D) float32 CPU embeddings of PIL images through the pipeline's own image encoder (unCLIP's,
    or the IP-Adapter's ViT-H one loaded into an SD 1.5 / SDXL pipeline).

    This is exactly what ``StableUnCLIPImg2ImgPipeline`` computes for an ``image`` argument (its
    ``feature_extractor`` then ``image_encoder(...).image_embeds``), so an image's vector is on the scale
    the U-Net was trained with.
    """
    if not images:
        raise UsageError("no images to encode")
    batch_size = check_positive_int("batch_size", batch_size)
    if getattr(unclip, "image_encoder", None) is None:
        raise UsageError(
            "this pipeline has no image encoder to embed images with (for an IP-Adapter backbone: an "
            "image_encoder/ folder beside the adapter weights, or h94/IP-Adapter's models/image_encoder)"
        )
    encoder = unclip.image_encoder
    parameter = next(encoder.parameters())
    device = getattr(unclip, "_execution_device", parameter.device)
    chunks = []
    for start in range(0, len(images), batch_size):
        pixels = unclip.feature_extractor(
            images=list(images[start : start + batch_size]), return_tensors="pt"
        )
        pixel_values = pixels.pixel_values.to(device=device, dtype=parameter.dtype)  # (B, 3, H, W)
        chunks.append(encoder(pixel_values).image_embeds.float().cpu())  # (B, D)
    return torch.cat(chunks)


def find_images(root: str | os.PathLike[str]) -> list[Path]:
    """Image files in a folder (recursively, sorted) or the one file given."""
    path = Path(root)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ImageError(f"{path}: no such image file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ImageError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return files


def embed_image_files(unclip: Any, paths: Iterable[Path], batch_size: int = 8) -> ImageEmbeddings:
    """Embed image files, skipping (and reporting) the ones that cannot be read."""
    from sound2image.data import load_image

    loaded, names, problems = [], [], []
    for path in paths:
        try:
            loaded.append(load_image(path))
            names.append(str(path))
        except Sound2ImageError as error:
            problems.append(str(error))
    if not loaded:
        raise ImageError(f"no readable images ({len(problems)} failed): {problems[0] if problems else ''}")
    return ImageEmbeddings(encode_images(unclip, loaded, batch_size), tuple(names), tuple(problems))


def measure_calibration(
    unclip: Any, root: str | os.PathLike[str], batch_size: int = 8
) -> tuple[EmbeddingCalibration, tuple[str, ...]]:
    """Measure the target norm over real images: mean norm of the pipeline's own image embeddings.

    Returns the calibration and the problems met (unreadable images are skipped, not fatal).
    """
    result = embed_image_files(unclip, find_images(root), batch_size)
    source = f"mean image-encoder embedding norm over {len(result.names)} images in {Path(root).name}"
    return EmbeddingCalibration.from_image_embeddings(result.embeds, source=source), result.problems


def embedding_to_record(embeds: torch.Tensor) -> dict[str, Any]:
    """A (N, D) embedding as a JSON-safe record (exact float32 bytes, base64) for PNG metadata."""
    array = embeds.detach().float().cpu().contiguous().numpy()
    return {
        "dtype": "float32",
        "shape": list(array.shape),
        "base64": base64.b64encode(array.tobytes()).decode(),
    }


def embedding_from_record(record: Any, source: str = "metadata") -> torch.Tensor:
    """The inverse of :func:`embedding_to_record` (bit-exact)."""
    import numpy as np

    try:
        shape = tuple(int(n) for n in record["shape"])
        array = np.frombuffer(base64.b64decode(record["base64"]), dtype=np.float32).reshape(shape)
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"{source}: stored embedding is unreadable ({error})") from error
    return torch.from_numpy(array.copy())
