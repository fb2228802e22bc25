"""The library's reference-image entry point: the image and the record entry every image records."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from sound2image.diffusion.record import describe_audio, describe_file, load_reference_image
from sound2image.errors import ImageError


def test_load_reference_image_gives_the_pixels_and_the_file_record(tmp_path) -> None:
    pixels = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    path = tmp_path / "ref.png"
    Image.fromarray(pixels).save(path)
    picture, entry = load_reference_image(path, 0.3)
    assert np.array_equal(np.asarray(picture.convert("RGB")), pixels)
    assert entry == {
        "file": "ref.png",
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "weight": 0.3,
    }
    assert list(entry) == ["file", "path", "sha256", "weight"]  # the order the PNG metadata keeps
    assert load_reference_image(str(path))[1]["weight"] == 0.5  # the library's default image_weight


def test_a_file_entry_is_the_same_for_a_sound_and_an_image(tmp_path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    expected = {
        "file": "a.bin",
        "path": str(path),
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "weight": 2.0,
    }
    assert describe_file(path, 2.0) == expected == describe_audio(path, 2.0)


def test_a_missing_or_unreadable_reference_image_is_an_image_error(tmp_path) -> None:
    with pytest.raises(ImageError, match="nope.png"):
        load_reference_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.png"):
        load_reference_image(bad)
