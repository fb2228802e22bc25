"""The Image Transformer's `generate` follows the channel policy too (issue 11, B1).

A stereo file with a silent left channel and a tone on the right: by default the model hears the down-mix,
exactly ``right / 2``, so its image is the image of a mono file holding ``right / 2``; with
``--channel first`` it is the image of silence, and the PNG records the policy used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sound2image.audio import SilentAudioWarning
from sound2image.audio.channels import SilentChannelWarning
from sound2image.cli.main import main
from sound2image.outputs import read_png_metadata
from tests.transformer.test_settings_effect import amplified
from tests.transformer.test_training import FEATURES
from tests.transformer.tiny import tiny_model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("channels")
    model = amplified(tiny_model(seed=5, audio_sections=8, audio_bins=64))
    model.save_pretrained(root / "model", {"features": FEATURES.to_dict(), "classes": ["0"]})
    rate = FEATURES.sample_rate
    t = np.arange(int(0.2 * rate)) / rate
    right = (0.5 * np.sin(2 * np.pi * 900 * t)).astype(np.float32)
    left = np.zeros_like(right)
    paths = {"model": root / "model"}
    for name, data in (
        ("stereo", np.stack([left, right], axis=1)),
        ("half", right * np.float32(0.5)),  # the exact down-mix of (0, right)
        ("silence", left),
    ):
        paths[name] = root / f"{name}.wav"
        sf.write(paths[name], data, rate, subtype="FLOAT")
    return paths


def _image(files: dict[str, Path], audio: str, out: Path, *extra: str) -> tuple[np.ndarray, dict]:
    args = ["generate", str(files[audio]), "--model", f"transformer:{files['model']}", "--seed", "4"]
    assert main([*args, "--out", str(out), *extra]) == 0
    png = out / f"{audio}_seed4.png"
    return np.asarray(Image.open(png)), read_png_metadata(png)


def test_transformer_generate_downmixes_and_honours_channel_first(files, tmp_path) -> None:
    stereo, meta = _image(files, "stereo", tmp_path / "mean")
    half, _ = _image(files, "half", tmp_path / "half")
    assert meta["model"]["features"]["channel"] == "mean"
    assert np.array_equal(stereo, half)
    with pytest.warns(SilentChannelWarning, match="stereo.wav: channel 0 is silent"):
        first, meta = _image(files, "stereo", tmp_path / "first", "--channel", "first")
    with pytest.warns(SilentAudioWarning):
        silence, _ = _image(files, "silence", tmp_path / "silence")
    assert meta["model"]["features"]["channel"] == "first"
    assert np.array_equal(first, silence)
    assert not np.array_equal(first, stereo)  # the model's image does depend on the sound here
