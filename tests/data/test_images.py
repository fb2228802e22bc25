"""load_image / probe_image: each bad file gets its own one-line ImageError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sound2image.data import load_image, probe_image
from sound2image.errors import DataError, ImageError
from tests.data.builders import truncated_jpeg, write_image
from tests.paths import AV_DIGITS, PSEUDO_ADVANCE


def test_real_images_load_with_their_documented_sizes() -> None:
    jpeg = load_image(PSEUDO_ADVANCE / "vision" / "airport" / "00001.jpg")
    assert (jpeg.mode, jpeg.size) == ("RGB", (512, 512))
    digit = load_image(AV_DIGITS / "images" / "mnist_0095.png", mode=None)
    assert (digit.mode, digit.size) == ("L", (28, 28))
    info = probe_image(AV_DIGITS / "images" / "mnist_0095.png")
    assert (info.format, info.size, info.mode) == ("PNG", (28, 28), "L")


def test_pixels_survive_and_mode_converts(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    pixels = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    Image.fromarray(pixels, "L").save(path)
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (2, 2, 3)
    assert (rgb[..., 0] == pixels).all() and (rgb[..., 2] == pixels).all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "image file not found"),
        (lambda p: p.write_bytes(b""), r"empty image file \(0 bytes\)"),
        (
            lambda p: p.write_bytes(b"RIFF....WAVEfmt not an image at all"),
            r"not an image \(unrecognised format\)",
        ),
        (lambda p: p.mkdir(), "not a file"),
    ],
    ids=["missing", "empty", "not-an-image", "folder"],
)
def test_bad_files_have_their_own_message(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.jpg"
    make(path)
    for reader in (load_image, probe_image):
        with pytest.raises(ImageError, match=rf"^{path}: {message}") as caught:
            reader(path)
        assert "\n" not in str(caught.value)
        assert isinstance(caught.value, DataError) and caught.value.exit_code == 2


def test_truncated_jpeg_header_reads_but_decode_fails(tmp_path: Path) -> None:
    path = truncated_jpeg(tmp_path / "cut.jpg")
    assert probe_image(path).size == (64, 64)  # the header alone looks fine
    with pytest.raises(ImageError, match=rf"^{path}: corrupt or truncated image"):
        load_image(path)


def test_returned_image_is_detached_from_the_file(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png")
    image = load_image(path)
    path.unlink()  # would fail on Windows, and later pixel access would break, if the file stayed open
    assert image.getpixel((0, 0)) == (0, 1, 2)
