"""Every kind of bad input raises its own AudioError subclass, one line naming the file; nothing hangs."""

from __future__ import annotations

import io
import os
import struct
import sys
import warnings

import numpy as np
import pytest

import sound2image.audio.io as audio_io
from sound2image.audio import SilentAudioWarning, load_audio, probe_audio
from sound2image.errors import (
    AudioError,
    AudioFileNotFoundError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioFileError,
    MissingExtraError,
    NonFiniteAudioError,
    NoSamplesError,
    NotAudioError,
    UsageError,
)
from tests.audio.synth import av_bytes, sf_bytes, tone, write
from tests.paths import PSEUDO_ADVANCE


def _raises(error_type: type[AudioError], source, shown: str, **kwargs) -> str:
    """Load ``source``; assert the exact error type and a one-line message that names the file."""
    with pytest.raises(error_type) as caught:
        load_audio(source, **kwargs)
    assert type(caught.value) is error_type
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{shown}: ")
    assert caught.value.exit_code == 2
    return message


def _wav(seconds: float = 1.0, rate: int = 8000, subtype: str = "PCM_16") -> bytes:
    return sf_bytes(tone(440, rate, seconds), rate, "WAV", subtype)


def test_missing_file(tmp_path) -> None:
    path = tmp_path / "nowhere.wav"
    _raises(AudioFileNotFoundError, path, str(path))
    _raises(AudioFileNotFoundError, tmp_path, str(tmp_path))  # a directory is not a sound file


def test_empty_file_bytes_and_stream(tmp_path) -> None:
    path = write(tmp_path / "empty.wav", b"")
    assert "0 bytes" in _raises(EmptyAudioFileError, path, str(path))
    _raises(EmptyAudioFileError, b"", "<bytes>")
    _raises(EmptyAudioFileError, io.BytesIO(), "up.wav", name="up.wav")


def test_file_object_that_fails_to_read_is_an_audio_error() -> None:
    class Broken:
        name = "upload"

        def read(self, size: int = -1) -> bytes:
            raise OSError("connection reset")

    assert "connection reset" in _raises(AudioError, Broken(), "upload")


def test_named_pipe_is_refused_without_blocking(tmp_path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    _raises(AudioFileNotFoundError, fifo, str(fifo))


def test_playlist_is_not_followed(tmp_path, monkeypatch) -> None:
    # FFmpeg may open the files an HLS/concat playlist names: text must never reach it.
    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("text was handed to FFmpeg")

    monkeypatch.setattr(audio_io, "_open_av", no_ffmpeg)
    write(tmp_path / "real.wav", _wav())
    playlist = tmp_path / "list.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nreal.wav\n#EXT-X-ENDLIST\n")
    assert "text" in _raises(NotAudioError, playlist, str(playlist))


def test_file_object_that_returns_nothing_does_not_hang() -> None:
    class Silent:
        name = "socket"

        def read(self, size: int = -1) -> None:
            return None  # a non-blocking stream with no data yet

    _raises(EmptyAudioFileError, Silent(), "socket")


def test_text_and_png_renamed_wav_are_not_audio(tmp_path) -> None:
    text = write(tmp_path / "notes.wav", b"these are my field notes\n" * 20)
    assert "text" in _raises(NotAudioError, text, str(text))
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de")
    fake = write(tmp_path / "picture.wav", png + bytes(64))
    _raises(NotAudioError, fake, str(fake))


def test_not_audio_without_pyav(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` fail as if the extra were missing
    fake = write(tmp_path / "picture.wav", b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert "PNG" in _raises(NotAudioError, fake, str(fake))


def test_m4a_without_pyav_names_the_extra(tmp_path, monkeypatch) -> None:
    path = write(tmp_path / "phone.m4a", av_bytes(tone(440, 44100, 0.3), 44100, "mp4", "aac"))
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingExtraError) as caught:
        load_audio(path)
    assert str(caught.value).startswith(str(path)) and 'pip install "sound2image[av]"' in str(caught.value)


def test_wav_cut_in_its_data_chunk_is_truncated(tmp_path) -> None:
    data = _wav(2.0)
    path = write(tmp_path / "cut.wav", data[: len(data) // 2])
    message = _raises(CorruptAudioError, path, str(path))
    assert "truncated" in message and "2.000 s" in message  # the header's claim is named
    with pytest.raises(CorruptAudioError):
        probe_audio(path)  # visible from the header alone


def test_real_advance_clip_cut_short_is_truncated(shared_data) -> None:
    path = sorted((PSEUDO_ADVANCE / "sound" / "forest").glob("*.wav"))[0]
    _raises(CorruptAudioError, path.read_bytes()[:100_000], "forest.wav", name="forest.wav")


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("AIFF", "PCM_16"), ("AU", "PCM_24"), ("W64", "PCM_16"), ("RF64", "FLOAT")]
)
def test_other_pcm_containers_cut_short_are_truncated(fmt: str, subtype: str) -> None:
    # libsndfile silently clamps these to what is present; only its header log tells.
    data = sf_bytes(tone(440, 8000, 2.0), 8000, fmt, subtype)
    assert load_audio(data).samples.shape == (16000,)
    assert "truncated" in _raises(CorruptAudioError, data[: len(data) // 2], "<bytes>")


def test_wav_header_claiming_gigabytes_is_truncated_not_allocated() -> None:
    data = bytearray(_wav(0.1))
    offset = data.index(b"data")
    data[offset + 4 : offset + 8] = struct.pack("<I", 0x7FFFFFF0)  # ~2 GB of claimed samples
    _raises(CorruptAudioError, bytes(data), "<bytes>")


def test_wav_with_damaged_format_chunk_is_corrupt() -> None:
    data = bytearray(_wav(0.5))
    offset = data.index(b"fmt ")
    data[offset + 8 : offset + 24] = b"\xff" * 16  # format tag, channels, rate … all garbage
    message = _raises(CorruptAudioError, bytes(data), "<bytes>")
    assert "WAV" in message


def test_flac_with_garbage_after_header_is_corrupt() -> None:
    data = bytearray(sf_bytes(tone(440, 16000, 1.0), 16000, "FLAC", "PCM_16"))
    rng = np.random.default_rng(0)
    data[42:] = rng.integers(0, 256, len(data) - 42, dtype=np.uint8).tobytes()  # after STREAMINFO
    _raises(CorruptAudioError, bytes(data), "<bytes>")


def test_truncated_flac_is_corrupt() -> None:
    data = sf_bytes(tone(440, 16000, 2.0), 16000, "FLAC", "PCM_16")
    _raises(CorruptAudioError, data[: len(data) * 2 // 3], "<bytes>")


def test_flac_header_claiming_years_is_too_long_and_without_limit_truncated() -> None:
    data = bytearray(sf_bytes(tone(440, 8000, 0.5), 8000, "FLAC", "PCM_16"))
    # STREAMINFO starts at byte 8; its 36-bit total-samples field is the low nibble of byte 21 + bytes 22-25.
    data[21] |= 0x0F
    data[22:26] = b"\xff\xff\xff\xff"
    _raises(AudioTooLongError, bytes(data), "<bytes>")
    _raises(CorruptAudioError, bytes(data), "<bytes>", max_duration=None)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_ogg_vorbis_is_corrupt(fraction: float) -> None:
    data = sf_bytes(tone(440, 16000, 2.0), 16000, "OGG", "VORBIS")
    _raises(CorruptAudioError, data[: int(len(data) * fraction)], "<bytes>")


def test_truncated_mp3_with_xing_frame_count_is_corrupt() -> None:
    data = sf_bytes(tone(440, 44100, 2.0), 44100, "MP3", "MPEG_LAYER_III")
    assert b"Xing" in data[:200]  # libsndfile (LAME) writes the frame count this check relies on
    assert load_audio(data).samples.shape == (88200,)  # the whole file decodes to the exact length
    _raises(CorruptAudioError, data[: int(len(data) * 0.8)], "<bytes>")


def test_empty_ogg_stream_is_no_samples() -> None:
    _raises(NoSamplesError, sf_bytes(np.zeros(0), 16000, "OGG", "VORBIS"), "<bytes>")


def test_zero_frames_is_no_samples(tmp_path) -> None:
    path = write(tmp_path / "nothing.wav", sf_bytes(np.zeros(0), 16000, "WAV", "PCM_16"))
    _raises(NoSamplesError, path, str(path))
    aiff = write(tmp_path / "nothing.aiff", sf_bytes(np.zeros((0, 2)), 44100, "AIFF", "PCM_24"))
    _raises(NoSamplesError, aiff, str(aiff))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_wav_with_nan_or_inf(bad: float) -> None:
    signal = tone(440, 8000, 1.0).astype(np.float32)
    signal[4000] = bad
    message = _raises(NonFiniteAudioError, sf_bytes(signal, 8000, "WAV", "FLOAT"), "f.wav", name="f.wav")
    assert "0.500 s" in message  # where the first bad sample is


def test_too_long_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch) -> None:
    # 601 s at 1 kHz, 8-bit: longer than the default 10-minute limit, yet only 601 kB.
    path = write(tmp_path / "long.wav", sf_bytes(np.zeros(601_000), 1000, "WAV", "PCM_U8"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before checking the duration")

    monkeypatch.setattr(audio_io, "_decode_soundfile", no_decoding)
    message = _raises(AudioTooLongError, path, str(path))
    assert "601.0 s" in message and "600 s" in message


def test_duration_limit_is_configurable() -> None:
    data = _wav(2.0)
    _raises(AudioTooLongError, data, "<bytes>", max_duration=1.5)
    assert load_audio(data, max_duration=2.5).samples.shape == (16000,)
    assert load_audio(data, max_duration=None).samples.shape == (16000,)


def test_silent_clip_is_a_warning_not_an_error() -> None:
    data = sf_bytes(np.zeros(8000), 8000, "WAV", "PCM_16")
    with pytest.warns(SilentAudioWarning, match="silent"):
        clip = load_audio(data, name="quiet.wav")
    assert clip.samples.shape == (8000,) and len(clip.warnings) == 1
    assert clip.warnings[0].startswith("quiet.wav: ")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clip with sound must not warn
        assert load_audio(_wav()).warnings == ()


def test_bad_arguments_are_usage_errors() -> None:
    for kwargs in ({"sample_rate": 0}, {"sample_rate": 16000.5}, {"max_duration": 0}, {"duration": -1.0}):
        with pytest.raises(UsageError):
            load_audio(_wav(), **kwargs)
    with pytest.raises(UsageError):
        load_audio(12345)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="text mode"):
        load_audio(io.StringIO("RIFF"))
