"""Writing results: PNG files that carry every setting needed to reproduce them, and grids.

Metadata is stored as PNG text chunks: one ``sound2image`` chunk holding the whole record as JSON
(what :func:`read_png_metadata` returns) plus one chunk per top-level key, so that ordinary image
viewers show the settings too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from sound2image import __version__
from sound2image.atomic import write_atomic
from sound2image.errors import OutputExistsError, UsageError

METADATA_KEY = "sound2image"


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_output_path(out_dir: str | os.PathLike[str], name: str, overwrite: bool = False) -> Path:
    """``out_dir / name``, refusing names that escape ``out_dir`` and existing files unless ``overwrite``."""
    root = Path(out_dir).resolve()
    path = (root / name).resolve()
    if root != path and root not in path.parents:
        raise UsageError(f"{name}: output name would be written outside {root}")
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path}: already exists (pass overwrite=True to replace it)", parameters=["overwrite"]
        )
    return path


def save_png(
    image: Image.Image,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write ``image`` as PNG with ``metadata`` (JSON-serialisable) in text chunks, atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path}: already exists (pass overwrite=True to replace it)", parameters=["overwrite"]
        )
    record = {"package_version": __version__, **metadata}
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, json.dumps(record, sort_keys=True))
    for key, value in record.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    # A crash never leaves a half-written PNG under the real name.
    return write_atomic(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def read_png_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata record written by :func:`save_png` (raises ``UsageError`` if there is none)."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}) or image.info
        raw = text.get(METADATA_KEY)
    if raw is None:
        raise UsageError(f"{path}: no sound2image metadata in this PNG")
    return json.loads(raw)


def make_grid(
    images: Sequence[Image.Image],
    columns: int | None = None,
    labels: Sequence[str] | None = None,
    padding: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Tile images (resized to the first one's size) into a grid; optional labels under each tile."""
    if not images:
        raise UsageError("make_grid: no images")
    columns = columns or min(len(images), max(1, round(len(images) ** 0.5 + 0.49)))
    rows = -(-len(images) // columns)
    width, height = images[0].size
    label_height = 14 if labels else 0
    sheet = Image.new(
        "RGB",
        (columns * (width + padding) + padding, rows * (height + label_height + padding) + padding),
        background,
    )
    if labels:
        from PIL import ImageDraw

        draw = ImageDraw.Draw(sheet)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        x = padding + column * (width + padding)
        y = padding + row * (height + label_height + padding)
        sheet.paste(image.convert("RGB").resize((width, height)), (x, y))
        if labels:
            draw.text((x, y + height + 1), labels[index], fill=(0, 0, 0))
    return sheet
