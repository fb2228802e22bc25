"""Content over file name, truncated PyAV containers, unfinished WAVs, and only our line on stderr."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import sound2image.audio.io as audio_io
from sound2image.audio import UnfinishedAudioWarning, load_audio, probe_audio
from sound2image.errors import CorruptAudioError, MissingExtraError, NoSamplesError, NotAudioError
from tests.audio.synth import av_bytes, peak_frequency, sf_bytes, tone, write

RATE = 16000
SECONDS = 3.0
FRAMES = int(RATE * SECONDS)  # 48,000 samples written
# AAC decodes whole 1024-sample frames and (without an edit list, as in ADTS) keeps the encoder's
# 1024 priming samples: at most two frames more than was written.
AAC_SLACK = 2 * 1024


@pytest.fixture(scope="module")
def aac_tone() -> np.ndarray:
    return tone(440, RATE, SECONDS)


def _one_line(error: BaseException, name: str) -> str:
    message = str(error)
    assert "\n" not in message and message.startswith(f"{name}: ")
    return message


# --- 4. content over file name ------------------------------------------------------------------------


def test_adts_aac_named_mp3_is_decoded_as_aac(tmp_path, aac_tone) -> None:
    path = write(tmp_path / "song.mp3", av_bytes(aac_tone, RATE, "adts", "aac"))
    clip = load_audio(path)
    assert probe_audio(path).format == "AAC"
    # libsndfile took it for MPEG Layer II and gave 0.05 s of noise; the whole 3 s decode now.
    assert FRAMES <= clip.samples.shape[0] <= FRAMES + AAC_SLACK
    assert peak_frequency(clip.samples[2048:FRAMES], RATE) == pytest.approx(440, abs=1.0)


def test_adts_aac_behind_an_id3_tag_is_still_aac(tmp_path, aac_tone) -> None:
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10)  # an empty ID3v2.4 tag: 10-byte header + 10 bytes
    path = write(tmp_path / "tagged.mp3", id3 + av_bytes(aac_tone, RATE, "adts", "aac"))
    assert audio_io._sniff_source(audio_io._resolve(path, None)) == "AAC"
    assert FRAMES <= load_audio(path).samples.shape[0] <= FRAMES + AAC_SLACK


def test_m4a_named_mp3_is_decoded_as_mp4(tmp_path, aac_tone) -> None:
    path = write(tmp_path / "voice.mp3", av_bytes(aac_tone, RATE, "ipod", "aac"))
    clip = load_audio(path)
    # MP4 has an edit list that drops the priming: at most one partial frame of padding remains.
    assert FRAMES <= clip.samples.shape[0] <= FRAMES + 1024


@pytest.mark.parametrize(
    ("container", "shown"), [("adts", "AAC audio (ADTS)"), ("ipod", "an MP4/M4A container")]
)
def test_without_pyav_the_refusal_names_the_suffix_and_the_content(
    tmp_path, monkeypatch, aac_tone, container: str, shown: str
) -> None:
    path = write(tmp_path / "clip.mp3", av_bytes(aac_tone, RATE, container, "aac"))
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` fails as if the extra were missing
    with pytest.raises(MissingExtraError) as caught:
        load_audio(path)
    message = _one_line(caught.value, str(path))
    assert message == (
        f"{path}: named .mp3 but holds {shown}; reading it needs PyAV (FFmpeg); "
        'install it with pip install "sound2image[av]"'
    )


def test_png_named_mp3_is_not_audio_without_asking_the_mpeg_decoder(tmp_path) -> None:
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de")
    path = write(tmp_path / "cover.mp3", png + bytes(5000))
    with pytest.raises(NotAudioError) as caught:
        load_audio(path)
    assert _one_line(caught.value, str(path)).endswith("(looks like a PNG image)")


# --- 4. truncated PyAV containers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "codec", "rate", "suffix"),
    [("matroska", "aac", 16000, ".mkv"), ("webm", "libopus", 48000, ".webm")],
)
def test_matroska_and_webm_cut_in_half_are_truncated(tmp_path, container, codec, rate, suffix) -> None:
    x = tone(440, rate, SECONDS)
    data = av_bytes(x, rate, container, codec)
    good = write(tmp_path / f"good{suffix}", data)
    clip = load_audio(good)
    # The whole file decodes to what was written, give or take the codec's frame padding (AAC: two
    # 1024-sample frames; Opus: its 312-sample pre-skip plus one 960-sample frame).
    slack = AAC_SLACK if codec == "aac" else 312 + 960
    assert len(x) - slack <= clip.samples.shape[0] <= len(x) + slack
    half = write(tmp_path / f"half{suffix}", data[: len(data) // 2])
    with pytest.raises(CorruptAudioError) as caught:
        load_audio(half)
    message = _one_line(caught.value, str(half))
    assert "truncated: the header declares 3.0" in message and "could be decoded" in message
    decoded = float(message.split("only ")[1].split(" s")[0])
    assert 0.5 < decoded < 2.0  # about half of the 3 s, far from the declared length


def test_m4a_cut_in_half_is_corrupt(tmp_path, aac_tone) -> None:
    data = av_bytes(aac_tone, RATE, "ipod", "aac")
    half = write(tmp_path / "half.m4a", data[: len(data) // 2])
    with pytest.raises(CorruptAudioError) as caught:
        load_audio(half)
    _one_line(caught.value, str(half))


# --- 5. unfinished WAV --------------------------------------------------------------------------------


def _wav_with_sizes(pcm: np.ndarray, rate: int, riff_size: int | None, data_size: int) -> bytes:
    """A 16-bit PCM WAV of ``pcm`` (int16, (n, channels)) whose header carries the given sizes."""
    channels = pcm.shape[1]
    body = pcm.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    riff = 4 + (8 + 16) + 8 + len(body) if riff_size is None else riff_size
    return (
        b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", data_size) + body
    )  # fmt: skip


@pytest.mark.parametrize("riff_size", [None, 0, 36])
def test_wav_with_data_size_zero_is_read_to_the_end_with_a_warning(tmp_path, riff_size) -> None:
    rng = np.random.default_rng(11)
    pcm = rng.integers(-20000, 20000, size=(8000 * 3, 2), dtype=np.int16)  # 3 s of stereo at 8 kHz
    path = write(tmp_path / "crashed.wav", _wav_with_sizes(pcm, 8000, riff_size, 0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clip = load_audio(path, mono=False)
    assert clip.samples.shape == (2, 24000)
    assert np.array_equal(clip.samples, pcm.T.astype(np.float32) / 32768)  # n / 32768, exact in float32
    expected = (
        f"{path}: the WAV data chunk's size is 0 (an unfinished recording?); "
        "read 24000 frames (3.000 s) to the end of the file"
    )
    assert clip.warnings == (expected,)
    assert [(w.category, str(w.message)) for w in caught] == [(UnfinishedAudioWarning, expected)]
    assert probe_audio(path).frames == 24000


def test_wav_with_streaming_size_marker_warns_too(tmp_path) -> None:
    pcm = np.arange(-4000, 4000, dtype=np.int16).reshape(-1, 1)
    path = write(tmp_path / "stream.wav", _wav_with_sizes(pcm, 8000, 0xFFFFFFFF, 0xFFFFFFFF))
    with pytest.warns(
        UnfinishedAudioWarning, match=r"0xFFFFFFFF, written while streaming\); read 8000 frames"
    ):
        clip = load_audio(path)
    assert np.array_equal(clip.samples, pcm[:, 0].astype(np.float32) / 32768)


def test_wav_with_an_empty_data_chunk_followed_by_a_chunk_holds_no_samples(tmp_path) -> None:
    data = (
        _wav_with_sizes(np.zeros((0, 1), np.int16), 8000, None, 0) + b"LIST" + struct.pack("<I", 4) + b"INFO"
    )
    path = write(tmp_path / "empty.wav", data)
    with pytest.raises(NoSamplesError):
        load_audio(path)


# --- 8. only our line on stderr -----------------------------------------------------------------------


def _damaged_mp3() -> bytes:
    """An MP3 with 200 garbage bytes in the middle: libmpg123 prints "Illegal Audio-MPEG-Header", resyncs."""
    data = sf_bytes(tone(440, 22050, 2.0), 22050, "MP3", "MPEG_LAYER_III")
    middle = len(data) // 2
    return data[:middle] + b"XXXX" * 50 + data[middle:]


def _html() -> str:
    return (
        "<!DOCTYPE html><html><head><title>Download</title></head><body>"
        + "<p>hi</p>" * 2000
        + "</body></html>"
    )


def test_c_library_chatter_reaches_fd_2_without_the_guard(tmp_path, capfd, monkeypatch) -> None:
    # The fact the next tests rely on: libmpg123 does print on fd 2 for this file.
    path = write(tmp_path / "glitch.mp3", _damaged_mp3())
    monkeypatch.setattr(audio_io, "_quiet_c_stderr", lambda: contextlib.nullcontext(audio_io._CapturedText()))
    load_audio(path)
    assert "Illegal Audio-MPEG-Header" in capfd.readouterr().err


def test_damaged_mp3_decodes_without_library_lines_on_stderr(tmp_path, capfd) -> None:
    path = write(tmp_path / "glitch.mp3", _damaged_mp3())
    clip = load_audio(path)
    assert clip.samples.shape[0] > 22050  # most of the 2 s survive the resync
    assert capfd.readouterr().err == ""


def test_html_named_mp3_gives_our_one_line_only(tmp_path, capfd) -> None:
    from sound2image.cli.main import main

    path = tmp_path / "page.mp3"
    path.write_text(_html())
    with pytest.raises(NotAudioError) as caught:
        load_audio(path)
    assert str(caught.value) == f"{path}: not a recognised audio format (looks like text)"
    assert capfd.readouterr().err == ""
    assert main(["audio", "info", str(path)]) == 2
    out, err = capfd.readouterr()
    assert out == f"{path}: error: not a recognised audio format (looks like text)\n"
    assert err == ""


def test_stderr_guard_restores_fd_2_passes_exceptions_and_is_shared_by_threads(tmp_path, capfd) -> None:
    before = os.fstat(2)
    with pytest.raises(ValueError, match="boom"), audio_io._quiet_c_stderr() as said:
        os.write(2, b"C library line\n")
        raise ValueError("boom")
    assert said.text == "C library line\n"  # kept for our own message, not shown
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    path = write(tmp_path / "glitch.mp3", _damaged_mp3())
    lengths: list[int] = []
    threads = [
        threading.Thread(target=lambda: lengths.append(load_audio(path).samples.shape[0])) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(lengths) == 4 and len(set(lengths)) == 1
    assert audio_io._c_stderr_users == 0 and audio_io._c_stderr_saved is None
    assert (os.fstat(2).st_dev, os.fstat(2).st_ino) == (before.st_dev, before.st_ino)
    assert capfd.readouterr().err == ""


def test_closed_pipe_ends_quietly(tmp_path) -> None:
    # `sound2image audio info … | head`: the reader is gone before we write; no "error: BrokenPipeError",
    # no "Exception ignored" at exit, exit status 1 (Python's documented recipe).
    files = [
        str(write(tmp_path / f"c{i}.wav", sf_bytes(tone(440, 8000, 0.1), 8000, "WAV", "PCM_16")))
        for i in range(3)
    ]
    for command in (["audio", "info", *files], ["data", "check", str(tmp_path)]):
        process = subprocess.Popen(
            [sys.executable, "-m", "sound2image.cli.main", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        process.stdout.close()  # the reader goes away at once
        try:
            err = process.stderr.read()
            code = process.wait(timeout=120)
        finally:
            process.kill()
        assert err == b"", err
        assert code == 1
