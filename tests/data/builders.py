"""Small real files written into pytest's tmp_path: WAVs through soundfile, images through PIL."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image


def write_wav(path: Path, seconds: float = 0.05, sample_rate: int = 8000, channels: int = 1) -> Path:
    """A short 440 Hz tone (not silence, so no warnings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    soundfile.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, sample_rate)
    return path


def write_image(path: Path, size: tuple[int, int] = (8, 6), mode: str = "RGB") -> Path:
    """A small image with a gradient, format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    pixels = (np.arange(width * height * 3).reshape(height, width, 3) % 256).astype(np.uint8)
    Image.fromarray(pixels, "RGB").convert(mode).save(path)
    return path


def truncated_jpeg(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    """A JPEG whose header is intact but whose data stops half-way (only decoding notices)."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buffer, "JPEG")
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def advance_tree(
    root: Path,
    items: dict[str, list[str]],
    vision: str = "vision",
    sound: str = "sound",
) -> Path:
    """``{class: [id, ...]}`` → ``root/vision/<class>/<id>.jpg`` + ``root/sound/<class>/<id>.wav``."""
    for label, ids in items.items():
        for item_id in ids:
            write_image(root / vision / label / f"{item_id}.jpg")
            write_wav(root / sound / label / f"{item_id}.wav")
    return root
