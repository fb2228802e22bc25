"""`sound2image audio info`: one line per file, every file reported, exit code 2 when any is bad."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sound2image.cli.main import main
from tests.audio.synth import av_bytes, sf_bytes, tone, write
from tests.paths import PSEUDO_ADVANCE


def test_info_describes_a_real_advance_clip(shared_data, capsys) -> None:
    path = sorted((PSEUDO_ADVANCE / "sound" / "lake").glob("*.wav"))[0]
    assert main(["audio", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(f"{path}: WAV PCM_16, 22050 Hz, 1 ch, 10.000 s, peak ")


def test_info_peak_level_and_stereo(tmp_path, capsys) -> None:
    # A half-scale sine peaks at 20·log10(0.5) = -6.0 dBFS.
    stereo = np.stack([tone(1000, 48000, 0.5, 0.5), tone(500, 48000, 0.5, 0.25)], axis=1)
    path = write(tmp_path / "s.flac", sf_bytes(stereo, 48000, "FLAC", "PCM_24"))
    assert main(["audio", "info", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: FLAC PCM_24, 48000 Hz, 2 ch, 0.500 s, peak -6.0 dBFS\n"


def test_info_reports_every_file_and_exits_2_when_any_is_bad(tmp_path, capsys) -> None:
    good = write(tmp_path / "good.wav", sf_bytes(tone(440, 8000, 1.0), 8000, "WAV"))
    empty = write(tmp_path / "empty.wav", b"")
    text = write(tmp_path / "text.wav", b"not a sound at all\n")
    data = sf_bytes(tone(440, 8000, 1.0), 8000, "WAV")
    cut = write(tmp_path / "cut.wav", data[:3000])
    silent = write(tmp_path / "silent.wav", sf_bytes(np.zeros(800), 8000, "WAV"))
    missing = tmp_path / "missing.wav"
    files = [good, empty, text, missing, cut, silent]
    assert main(["audio", "info", *map(str, files)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(files)
    assert lines[0].startswith(f"{good}: WAV PCM_16, 8000 Hz, 1 ch, 1.000 s")
    assert lines[1] == f"{empty}: error: file is empty (0 bytes)"
    assert lines[2].startswith(f"{text}: error: not a recognised audio format")
    assert lines[3] == f"{missing}: error: file not found"
    assert lines[4].startswith(f"{cut}: error: truncated")
    # Silence is a warning on a good line, not an error.
    assert lines[5].startswith(f"{silent}: WAV PCM_16")
    assert "peak -inf dBFS; warning: the clip is silent" in lines[5]


def test_info_exit_0_when_all_good_and_silence_alone_is_not_bad(tmp_path, capsys) -> None:
    silent = write(tmp_path / "silent.wav", sf_bytes(np.zeros(800), 8000, "WAV"))
    assert main(["audio", "info", str(silent)]) == 0
    assert capsys.readouterr().err == ""  # the warning is on the line, not repeated on stderr


def test_info_max_duration_option(tmp_path, capsys) -> None:
    path = write(tmp_path / "two.wav", sf_bytes(tone(440, 8000, 2.0), 8000, "WAV"))
    assert main(["audio", "info", "--max-duration", "1", str(path)]) == 2
    assert "more than the 1 s limit" in capsys.readouterr().out
    assert main(["audio", "info", "--max-duration", "0", str(path)]) == 0


def test_info_exit_1_when_a_file_needs_the_missing_av_extra(tmp_path, capsys, monkeypatch) -> None:
    path = write(tmp_path / "phone.m4a", av_bytes(tone(440, 44100, 0.3), 44100, "mp4", "aac"))
    assert main(["audio", "info", str(path)]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    assert main(["audio", "info", str(path)]) == 1  # a missing extra is a failure, not a bad file
    assert 'pip install "sound2image[av]"' in capsys.readouterr().out


def test_info_help_has_an_example(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["audio", "info", "--help"])
    assert exited.value.code == 0
    assert "sound2image audio info examples/waves.flac" in capsys.readouterr().out


def test_info_without_files_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["audio", "info"])
    assert exited.value.code == 2
