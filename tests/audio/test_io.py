"""Decoding good input: real files, every format and rate, bytes and file objects, channels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from sound2image.audio import AudioClip, LengthPolicy, load_audio, probe_audio
from tests.audio.synth import av_bytes, peak_frequency, sf_bytes, tone, write
from tests.paths import AV_DIGITS, PSEUDO_ADVANCE

ADVANCE_CLIP = PSEUDO_ADVANCE / "sound" / "beach" / "00017.wav"


def test_advance_clip_loads_10s_at_22050(shared_data) -> None:
    clip = load_audio(ADVANCE_CLIP)
    # Dataset facts (data/README.md): 22,050 Hz mono PCM-16, exactly 10.0 s.
    assert clip.sample_rate == 22050 and clip.samples.shape == (220_500,)
    assert clip.samples.dtype == np.float32 and clip.original_channels == 1
    assert clip.original_duration == 10.0 and clip.length_action == "none"
    # PCM-16 decodes to k/32768: scaling back gives integers.
    scaled = clip.samples.astype(np.float64) * 32768
    np.testing.assert_array_equal(scaled, np.round(scaled))
    assert np.abs(clip.samples).max() <= 1.0


def test_advance_clip_resampled_to_16k_keeps_10s(shared_data) -> None:
    clip = load_audio(ADVANCE_CLIP, 16000)
    assert clip.samples.shape == (160_000,) and clip.sample_rate == 16000
    assert clip.original_sample_rate == 22050 and clip.duration == 10.0


def test_real_8k_digit_matches_header(shared_data) -> None:
    path = AV_DIGITS / "audio" / "0_george_0.wav"
    with sf.SoundFile(path) as reference:  # the header read independently
        frames, rate = reference.frames, reference.samplerate
    clip = load_audio(path)
    assert rate == 8000 and clip.sample_rate == 8000 and clip.samples.shape == (frames,)


def test_3s_8k_wav_loads_to_right_length(tmp_path) -> None:
    path = write(tmp_path / "voice.wav", sf_bytes(tone(440, 8000, 3.0), 8000, "WAV", "PCM_16"))
    clip = load_audio(path)
    assert clip.sample_rate == 8000 and clip.samples.shape == (24_000,) and clip.duration == 3.0
    up = load_audio(path, 22050)
    assert up.samples.shape == (66_150,) and abs(peak_frequency(up.samples, 22050) - 440) < 0.5


def test_48k_stereo_flac_mono_is_channel_mean_and_stereo_keeps_channels(tmp_path) -> None:
    left, right = tone(1000, 48000, 2.0, 0.5), tone(3000, 48000, 2.0, 0.25)
    path = write(tmp_path / "stereo.flac", sf_bytes(np.stack([left, right], axis=1), 48000, "FLAC", "PCM_16"))
    stereo = load_audio(path, mono=False)
    assert stereo.samples.shape == (2, 96_000) and stereo.sample_rate == 48000
    assert stereo.original_channels == 2
    # 16-bit quantisation: each sample within half a step (plus float rounding) of the original.
    np.testing.assert_allclose(stereo.samples[0], left, atol=1 / 32768)
    np.testing.assert_allclose(stereo.samples[1], right, atol=1 / 32768)
    mono = load_audio(path)
    assert mono.samples.shape == (96_000,)
    np.testing.assert_allclose(mono.samples, (left + right) / 2, atol=1 / 32768)
    at16k = load_audio(path, 16000, mono=False)
    assert at16k.samples.shape == (2, 32_000)
    assert abs(peak_frequency(at16k.samples[1], 16000) - 3000) < 1


def test_mono_false_on_mono_file_gives_one_channel(tmp_path) -> None:
    path = write(tmp_path / "m.wav", sf_bytes(tone(440, 16000, 0.5), 16000, "WAV"))
    assert load_audio(path, mono=False).samples.shape == (1, 8000)


@pytest.mark.parametrize(
    ("subtype", "step"),
    # One quantisation step (encoders round or truncate); FLOAT rounds float64 to float32: <= eps / 2 * 0.9.
    [("PCM_U8", 1 / 128), ("PCM_16", 1 / 32768), ("PCM_24", 2.0**-23), ("PCM_32", 2.0**-31), ("FLOAT", 1e-7)],
)
def test_wav_bit_depths_decode_to_float_within_one_step(tmp_path, subtype: str, step: float) -> None:
    signal = tone(440, 11025, 0.5, 0.9)
    path = write(tmp_path / f"{subtype}.wav", sf_bytes(signal, 11025, "WAV", subtype))
    clip = load_audio(path)
    assert clip.samples.dtype == np.float32 and clip.samples.shape == (5512,)
    np.testing.assert_allclose(clip.samples, signal, atol=step)
    assert probe_audio(path).codec == subtype


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "suffix"),
    [
        ("FLAC", "PCM_24", 96000, ".flac"),
        ("OGG", "VORBIS", 44100, ".ogg"),
        ("OGG", "OPUS", 48000, ".opus"),
        ("MP3", "MPEG_LAYER_III", 44100, ".mp3"),
        ("AIFF", "PCM_16", 32000, ".aiff"),
    ],
)
def test_soundfile_formats_keep_rate_length_and_pitch(tmp_path, fmt, subtype, rate, suffix) -> None:
    path = write(tmp_path / f"a{suffix}", sf_bytes(tone(880, rate, 1.0), rate, fmt, subtype))
    info = probe_audio(path)
    assert (info.format, info.sample_rate, info.channels, info.backend) == (fmt, rate, 1, "soundfile")
    clip = load_audio(path)
    assert clip.sample_rate == rate
    # Lossy codecs may add or drop a codec frame at the ends.
    assert abs(clip.samples.shape[0] - rate) <= (0 if fmt in ("FLAC", "AIFF") else 2400)
    assert abs(peak_frequency(clip.samples, rate) - 880) < 2


@pytest.mark.parametrize(
    ("container", "codec", "rate", "suffix", "video"),
    [
        ("mp4", "aac", 44100, ".m4a", False),
        ("webm", "libopus", 48000, ".webm", False),
        ("mp4", "aac", 22050, ".mp4", True),
    ],
)
def test_pyav_containers_decode(tmp_path, container, codec, rate, suffix, video) -> None:
    path = write(tmp_path / f"a{suffix}", av_bytes(tone(660, rate, 1.0), rate, container, codec, video=video))
    info = probe_audio(path)
    assert info.backend == "av" and info.sample_rate == rate and info.channels == 1
    clip = load_audio(path, 16000)
    assert clip.sample_rate == 16000 and clip.original_sample_rate == rate
    assert abs(clip.original_duration - 1.0) < 0.05
    assert abs(peak_frequency(clip.samples, 16000) - 660) < 2


def test_wav_holding_mp3_is_not_mistaken_for_truncated(tmp_path) -> None:
    # A WAV may carry a compressed codec; its frame count is then an estimate, not a promise.
    path = write(tmp_path / "mp3.wav", av_bytes(tone(440, 44100, 1.0), 44100, "wav", "libmp3lame"))
    clip = load_audio(path)
    assert probe_audio(path).codec == "MPEG_LAYER_III"
    assert abs(clip.duration - 1.0) < 0.1 and abs(peak_frequency(clip.samples, 44100) - 440) < 2


def test_bytes_file_object_and_path_give_the_same_samples(tmp_path) -> None:
    data = sf_bytes(tone(500, 22050, 0.7), 22050, "FLAC", "PCM_16")
    path = write(tmp_path / "x.flac", data)
    from_path = load_audio(path)
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data), path.open("rb")):
        clip = load_audio(source, name="upload.flac")
        assert clip.name == "upload.flac"
        np.testing.assert_array_equal(clip.samples, from_path.samples)
    assert load_audio(data).name == "<bytes>"
    assert load_audio(io.BytesIO(data)).name == "<stream>"


def test_non_seekable_stream_is_read(tmp_path) -> None:
    data = sf_bytes(tone(500, 8000, 0.5), 8000, "WAV")

    class Pipe(io.RawIOBase):
        """A non-seekable stream that hands out at most 100 bytes per read."""

        def __init__(self) -> None:
            self.rest = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            piece, self.rest = self.rest[:100], self.rest[100:]
            return piece

    assert load_audio(Pipe(), name="pipe").samples.shape == (4000,)


def test_duration_and_policy_through_load_audio(tmp_path) -> None:
    signal = np.arange(8, dtype=np.float64) / 16  # 8 samples, exactly representable in PCM-16
    path = write(tmp_path / "s.wav", sf_bytes(signal, 8, "WAV"))  # an 8 Hz file keeps the sums small
    looped = load_audio(path, duration=2.5)
    assert looped.length_action == "looped"
    np.testing.assert_array_equal(looped.samples, np.concatenate([signal, signal, signal[:4]]))
    padded = load_audio(path, duration=1.5, policy=LengthPolicy(short="pad"))
    assert padded.length_action == "padded"
    np.testing.assert_array_equal(padded.samples, np.concatenate([signal, np.zeros(4)]))
    cropped = load_audio(path, duration=0.5, policy=LengthPolicy(crop="centre"))
    assert cropped.length_action == "cropped"
    np.testing.assert_array_equal(cropped.samples, signal[2:6])
    assert load_audio(path).length_action == "none"


def test_audioclip_duration_property() -> None:
    clip = AudioClip(np.zeros((2, 300), np.float32), 100, "x", 100, 2, 3.0)
    assert clip.duration == 3.0 and clip.channels == 2
