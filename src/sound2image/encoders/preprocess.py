"""ImageBind's audio preprocessing: any audio input -> normalised log-mel clips ``(clips, 1, 128, 204)``.

The protocol of ImageBind's ``load_and_transform_audio_data``:

1. channel 0 of the decoded audio (ImageBind's fbank reads channel 0; it does not down-mix);
2. resample to 16 kHz;
3. clip sampler: 3 windows of 2 s starting at i * (duration - 2) / 3 (pytorchvideo's
   ``ConstantClipsPerVideoSampler``; exact rational arithmetic, sample index truncated); a file shorter
   than 2 s is used whole, three times;
4. per window: subtract its mean, Kaldi fbank (:func:`sound2image.audio.fbank.fbank`, Hann window,
   128 bins) -> transpose to (128, frames) -> right-pad with zeros or crop to 204 frames;
5. ``(x - (-4.268)) / 9.138``.

``clips_per_file`` / ``clip_layout="cover"`` (see ``ImageBindAudioConfig``) spread more windows from
the start to the end of the file instead: ImageBind's sampler never looks at the last
(duration - 2) / 3 seconds (2.7 s of a 10 s clip); 5 "cover" windows tile a 10 s clip exactly.

Resampling: ImageBind resamples with torchaudio's windowed-sinc resampler (Hann window, 6 zero
crossings, roll-off 0.99). Our general-purpose :func:`sound2image.audio.resample` (Kaiser polyphase,
cut-off 0.95 x Nyquist, 80 dB) removes more of the top band (7.2-8 kHz), which the top mel bins see:
on the golden 22.05 kHz clip its features differ from the reference by up to 0.62 (mean 0.004) after
normalisation, against 2.4e-5 (mean 1e-7) for :func:`sinc_resample`, a re-implementation of
torchaudio's kernel (adapted from ``torchaudio.functional.functional._get_sinc_resample_kernel``,
BSD-2-Clause). The default (``resampler="sinc"``) is therefore the torchaudio-compatible one, so that
embeddings are those of the real ImageBind; ``resampler="polyphase"`` uses the audio layer's.

Checked against torchaudio 2.11 itself (on the device machine): :func:`sound2image.audio.fbank.fbank`
is bit-identical to ``kaldi.fbank``, :func:`sinc_resample` within 9e-8 of ``functional.resample``, and
:func:`preprocess_audio` within 1.6e-4 of ImageBind's ``load_and_transform_audio_data`` (transcribed,
with torchaudio) on 12 real 22.05 kHz ADVANCE-layout clips, 20 spoken digits at 8 kHz and noise at
16-96 kHz - except for the difference below.

Known difference: the reference subtracts each clip's mean (over *all* channels) *in place* from the
shared waveform, so where windows overlap (files shorter than 8 s) a later window sees a small step
where the earlier one ended. We subtract each window's own mean only: the features differ by up to
1e-2 to 9e-2 in a few low-energy bins of one frame (the golden 3.1 s stereo clip: 0.088, and 1.2e-5
when the quirk is reproduced, see the tests); its embedding's cosine to the reference is 1.0000.
"""

from __future__ import annotations

import io
import math
import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sound2image.audio.fbank import fbank, num_frames
from sound2image.errors import AudioError

if TYPE_CHECKING:
    from sound2image.encoders.imagebind import ImageBindAudioConfig


# --- inputs -----------------------------------------------------------------------------------------


def _is_array_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], (np.ndarray, torch.Tensor))
        and isinstance(item[1], (int, np.integer))
    )


def _is_single(item: Any) -> bool:
    return (
        isinstance(item, (str, os.PathLike, bytes, bytearray, io.IOBase))
        or _is_array_pair(item)
        or (hasattr(item, "samples") and hasattr(item, "sample_rate"))
        or hasattr(item, "read")
    )


def as_input_list(inputs: Any) -> list[Any]:
    """One input (path, bytes, file object, AudioClip, ``(samples, rate)``) or a sequence of them -> list."""
    if _is_single(inputs):
        return [inputs]
    try:
        return list(inputs)
    except TypeError:
        raise TypeError(f"cannot embed an object of type {type(inputs).__name__}") from None


def input_name(item: Any, index: int | None = None) -> str:
    """A short name for messages: the file name, the clip's name, or ``input #i``."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if _is_array_pair(item):
        return "array input" if index is None else f"array input #{index}"
    name = getattr(item, "name", None)
    if isinstance(name, str) and name:
        return name
    return f"input #{index}" if index is not None else f"<{type(item).__name__}>"


def load_channel0(item: Any, sample_rate: int = 16000, resampler: str = "sinc") -> np.ndarray:
    """Channel 0 of an input, resampled to ``sample_rate``, as a float32 ``(n,)`` array.

    Raises:
        AudioError: the input cannot be decoded, is empty or holds non-finite samples.
    """
    if _is_array_pair(item):
        samples, rate = item
        name = "array input"
        samples = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    elif hasattr(item, "samples") and hasattr(item, "sample_rate"):  # an AudioClip
        samples, rate, name = np.asarray(item.samples), item.sample_rate, input_name(item)
    else:
        from sound2image.audio import load_audio

        clip = load_audio(item, None, mono=False)
        samples, rate, name = clip.samples, clip.sample_rate, clip.name
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2 and samples.shape[0] > samples.shape[1]:
        # soundfile's (frames, channels) layout: refuse rather than guess which axis is time.
        raise AudioError(
            f"{name}: samples of shape {samples.shape} look like (frames, channels); pass (channels, n)"
        )
    if samples.ndim == 2:
        samples = samples[0]  # channel 0, as ImageBind
    if samples.ndim != 1:
        raise AudioError(f"{name}: expected samples of shape (n,) or (channels, n), got {samples.shape}")
    if samples.size == 0:
        raise AudioError(f"{name}: no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: samples contain NaN or infinity")
    if int(rate) != sample_rate and resampler == "polyphase":
        from sound2image.audio.resample import resample

        samples = resample(samples, int(rate), sample_rate)
    elif int(rate) != sample_rate:
        samples = sinc_resample(torch.from_numpy(samples), int(rate), sample_rate).numpy()
    return samples


# --- resampling (torchaudio-compatible) -------------------------------------------------------------


@lru_cache(maxsize=16)
def _sinc_kernel(
    orig: int, new: int, width_zero_crossings: int = 6, rolloff: float = 0.99
) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc kernel ``(new, 1, taps)`` float32 and its half-width in input samples.

    Adapted from torchaudio's ``_get_sinc_resample_kernel`` ("sinc_interp_hann"), computed in float32
    as torchaudio does for float32 audio so the output matches it to float rounding.
    """
    base = min(orig, new) * rolloff
    width = math.ceil(width_zero_crossings * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig  # (1, 1, taps)
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx  # (new, 1, taps)
    t = (t * base).clamp(-width_zero_crossings, width_zero_crossings)
    window = torch.cos(t * math.pi / width_zero_crossings / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0), t.sin() / t)
    return kernel * window * (base / orig), width


def sinc_resample(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """torchaudio's ``functional.resample`` (Hann-windowed sinc, 6 zero crossings, roll-off 0.99).

    ``(..., n) -> (..., ceil(n * new_sr / orig_sr))``, float32.
    """
    if orig_sr == new_sr:
        return waveform
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, width = _sinc_kernel(orig, new)
    lead, n = waveform.shape[:-1], waveform.shape[-1]
    x = torch.nn.functional.pad(waveform.reshape(-1, 1, n).float(), (width, width + orig))  # (C, 1, padded)
    y = torch.nn.functional.conv1d(x, kernel, stride=orig)  # (C, new, n // orig + 1)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # (C, phases interleaved)
    target = math.ceil(new * n / orig)
    return y[:, :target].reshape(*lead, -1)


# --- clips and features -----------------------------------------------------------------------------


def clip_bounds(
    num_samples: int, sample_rate: int, clip_duration: float, clips: int, layout: str = "imagebind"
) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of the clips of a file (end clamped to the file).

    "imagebind": starts at i * max(duration - clip, 0) / clips, truncated to a sample index, with the
    arithmetic of pytorchvideo's ``ConstantClipsPerVideoSampler`` as ImageBind calls it (a float
    duration minus the clip, then exact fractions), so boundaries agree to the sample. "cover": starts
    spread evenly so the first clip starts at 0 and the last ends at the end of the file.
    """
    clip = Fraction(clip_duration)
    if layout == "imagebind":
        slack = Fraction(max(num_samples / sample_rate - clip, 0))  # float - Fraction is a float, as there
        starts = [slack / clips * i for i in range(clips)]
    elif layout == "cover":
        slack = max(Fraction(num_samples, sample_rate) - clip, Fraction(0))
        starts = [slack * i / (clips - 1) if clips > 1 else Fraction(0) for i in range(clips)]
    else:
        raise ValueError(f"clip layout must be 'imagebind' or 'cover', got {layout!r}")
    return [
        (int(start * sample_rate), min(int((start + clip) * sample_rate), num_samples)) for start in starts
    ]


def clips_to_features(
    waveform: torch.Tensor, bounds: list[tuple[int, int]], config: ImageBindAudioConfig
) -> torch.Tensor:
    """Cut, fbank, pad/crop and normalise: ``(n,)`` 16 kHz waveform -> ``(clips, 1, mel, target_length)``."""
    length = max(end - start for start, end in bounds)
    if all(end - start == length for start, end in bounds):
        # The usual case: equal-length clips go through the fbank as one batch.
        clips = torch.stack([waveform[start:end] for start, end in bounds])  # (clips, length)
        clips = clips - clips.mean(dim=-1, keepdim=True)
        mel = fbank(clips, config.sample_rate, config.num_mel_bins)  # (clips, frames, mel)
    else:
        mels = []
        for start, end in bounds:
            clip = waveform[start:end]
            mels.append(fbank(clip - clip.mean(), config.sample_rate, config.num_mel_bins))
        frames = max(m.shape[0] for m in mels)
        mel = torch.stack([torch.nn.functional.pad(m, (0, 0, 0, frames - m.shape[0])) for m in mels])
    mel = mel.transpose(1, 2)  # (clips, mel, frames)
    pad = config.target_length - mel.shape[-1]
    # Zero-pad (before normalisation, as ImageBind) or crop to target_length frames.
    mel = torch.nn.functional.pad(mel, (0, pad)) if pad > 0 else mel[..., : config.target_length]
    mel = (mel - config.mean) / config.std
    return mel.unsqueeze(1)  # (clips, 1, mel, target_length)


def preprocess_audio(item: Any, config: ImageBindAudioConfig) -> torch.Tensor:
    """One input -> ``(config.clips_per_file, 1, num_mel_bins, target_length)`` float32 features.

    Raises:
        AudioError: the input cannot be decoded, or is shorter than one 25 ms fbank frame.
    """
    waveform = torch.from_numpy(load_channel0(item, config.sample_rate, config.resampler))
    if num_frames(waveform.shape[0], config.sample_rate) == 0:
        seconds = waveform.shape[0] / config.sample_rate
        raise AudioError(
            f"{input_name(item)}: too short ({seconds:.3f} s); the encoder needs at least 0.025 s"
        )
    bounds = clip_bounds(
        waveform.shape[0], config.sample_rate, config.clip_duration, config.clips_per_file, config.clip_layout
    )
    return clips_to_features(waveform, bounds, config)


def audio_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted), by extension; hidden files are skipped."""
    suffixes = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".webm", ".aiff", ".aif"}
    root = Path(folder)
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in suffixes
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
