"""Reading images with one-line errors: :func:`load_image` (decode) and :func:`probe_image` (header only)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sound2image.errors import ImageError


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says, read without decoding the pixels."""

    path: Path
    format: str
    width: int
    height: int
    mode: str

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, as PIL reports it."""
        return self.width, self.height


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageError(f"{path}: image file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a file (is it a folder?)")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty image file (0 bytes)")


def _open(path: Path) -> Image.Image:
    """``Image.open`` with PIL's exceptions turned into ImageError one-liners."""
    try:
        # A decompression-bomb warning would otherwise go to stderr once per file; make it an error.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{path}: image too large to open safely ({error})") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot read image ({error.strerror or error})") from None


def probe_image(path: str | os.PathLike[str]) -> ImageInfo:
    """Format, size and mode from the image header (fast: pixels are not decoded).

    Raises:
        ImageError: missing, empty, not an image, or an unreadable header.
    """
    path = Path(path)
    _check_file(path)
    with _open(path) as image:
        if image.width <= 0 or image.height <= 0:
            raise ImageError(f"{path}: image has no pixels ({image.width}x{image.height})")
        return ImageInfo(
            path=path, format=image.format or "?", width=image.width, height=image.height, mode=image.mode
        )


def load_image(path: str | os.PathLike[str], mode: str | None = "RGB") -> Image.Image:
    """Decode an image fully and convert it to ``mode`` (``None`` keeps the file's own mode).

    The returned image is detached from the file (the file is closed).

    Raises:
        ImageError: missing, empty, not an image, truncated or corrupt, or not convertible to ``mode``.
    """
    path = Path(path)
    _check_file(path)
    with _open(path) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            # PIL reports truncated/damaged data as OSError ("image file is truncated") or SyntaxError.
            raise ImageError(f"{path}: corrupt or truncated image ({error})") from None
        if image.width <= 0 or image.height <= 0:
            raise ImageError(f"{path}: image has no pixels ({image.width}x{image.height})")
        if mode is None or image.mode == mode:
            return image.copy()
        try:
            return image.convert(mode)
        except ValueError as error:
            raise ImageError(f"{path}: cannot convert {image.mode} image to {mode} ({error})") from None


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    """Grayscale (size, size) uint8: smaller images are centred on black (28×28 digits -> 32×32 with a
    2-pixel border), larger ones centre-cropped to a square and resized with area averaging."""
    image = image.convert("L")
    width, height = image.size
    if width <= size and height <= size:
        canvas = Image.new("L", (size, size), 0)
        canvas.paste(image, ((size - width) // 2, (size - height) // 2))
        return np.asarray(canvas, dtype=np.uint8)
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)
