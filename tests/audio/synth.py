"""Synthesise test audio in any rate and format (never committed): tones, and files via soundfile/PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(
    freq: float, sample_rate: int, seconds: float, amplitude: float = 0.5, phase: float = 0.0
) -> np.ndarray:
    """A sine tone, float64, shape (n,)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


def peak_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the largest bin of a Hann-windowed spectrum, refined by parabolic interpolation."""
    x = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-300)
    offset = 0.5 * (a - c) / (a - 2 * b + c)  # vertex of the parabola through the 3 log magnitudes
    return (k + offset) * sample_rate / len(x)


def rms_db(samples: np.ndarray) -> float:
    """RMS level in dB relative to a full-scale sine (amplitude 1 → 0 dB)."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(samples, dtype=np.float64)))))
    return 20 * np.log10(rms / np.sqrt(0.5) + 1e-300)


def sf_bytes(samples: np.ndarray, sample_rate: int, fmt: str, subtype: str | None = None) -> bytes:
    """Encode with soundfile; ``samples`` (n,) or (n, channels)."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def av_bytes(
    samples: np.ndarray,
    sample_rate: int,
    container: str,
    codec: str,
    *,
    video: bool = False,
) -> bytes:
    """Encode mono ``samples`` (n,) with PyAV into ``container`` (e.g. "mp4"/"aac", "webm"/"libopus").

    With ``video=True`` a short black video track comes first, as in a phone recording.
    """
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        # Every stream is added before the first packet is muxed (that writes the header).
        vstream = out.add_stream("libvpx" if container == "webm" else "mpeg4", rate=10) if video else None
        astream = out.add_stream(codec, rate=sample_rate, layout="mono")
        if vstream is not None:
            vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
            for i in range(int(len(samples) / sample_rate * 10)):
                frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                frame.pts = i
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
        step = astream.codec_context.frame_size or 1024  # samples per frame the encoder wants
        data = np.asarray(samples, dtype=np.float32)
        for start in range(0, len(data), step):
            chunk = np.zeros((1, step), np.float32)
            piece = data[start : start + step]
            chunk[0, : len(piece)] = piece
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            out.mux(astream.encode(frame))
        out.mux(astream.encode(None))
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
