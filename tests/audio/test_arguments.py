"""load_audio / probe_audio refuse non-finite and out-of-range numbers with one line naming the parameter."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound2image.audio import load_audio, probe_audio
from sound2image.errors import UsageError


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(800, dtype=np.float32), 8000)
    return path


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0.0])
@pytest.mark.parametrize("parameter", ["sample_rate", "duration", "max_duration"])
def test_load_audio_names_the_bad_parameter(wav: Path, parameter: str, value: float) -> None:
    with pytest.raises(UsageError) as caught:
        load_audio(wav, **{parameter: value})
    message = str(caught.value)
    assert message.startswith(f"{parameter} must be") and "\n" not in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0.0])
def test_probe_audio_names_a_bad_max_duration(wav: Path, value: float) -> None:
    with pytest.raises(UsageError, match=r"^max_duration must be"):
        probe_audio(wav, max_duration=value)


def test_good_values_still_work(wav: Path) -> None:
    clip = load_audio(wav, 16000.0, duration=0.2, max_duration=1.0)  # an integral float rate is fine
    assert clip.sample_rate == 16000 and clip.samples.shape == (3200,)
    assert probe_audio(wav, max_duration=None).frames == 800
