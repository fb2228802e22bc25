"""Messages that compare two amounts give numbers that differ (issue 11, B7).

In seconds rounded to 1 ms, a file one frame too long or one frame short reads "1.000 s ... 1.000 s";
the frame counts make the difference visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound2image.audio import load_audio, probe_audio
from sound2image.errors import AudioTooLongError, CorruptAudioError


def _wav(path: Path, frames: int, rate: int = 16000) -> Path:
    sf.write(path, np.full(frames, 0.25, np.float32), rate, subtype="PCM_16")  # 2 bytes per frame
    return path


def test_one_frame_over_the_duration_limit(tmp_path: Path) -> None:
    path = _wav(tmp_path / "long.wav", 16001)
    with pytest.raises(AudioTooLongError) as caught:
        probe_audio(path, max_duration=1.0)
    assert str(caught.value) == (
        f"{path}: 1.0 s long (16001 frames at 16000 Hz), more than the 1 s limit (16000 frames; max_duration)"
    )


def test_one_frame_missing_from_a_wav(tmp_path: Path) -> None:
    path = _wav(tmp_path / "cut.wav", 16001)
    path.write_bytes(path.read_bytes()[:-2])  # the last 16-bit frame
    with pytest.raises(CorruptAudioError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: truncated: the header declares 1.000 s (16001 frames)")
    assert "1.000 s (16000 frames)" in message
