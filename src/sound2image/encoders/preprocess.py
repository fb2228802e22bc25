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

Channels: our default (``ImageBindAudioConfig.channel = "mean"``) is the down-mix, the mean of the
channels, taken before resampling (see :mod:`sound2image.audio.channels`), the same policy as every other
entry point; ``channel="first"`` reads channel 0 as the reference does (exact parity on stereo files).

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
Rates whose gcd with 16 kHz is small (44,101 or 47,999 Hz) would need a kernel of 16,000 phases x
~48,000 taps (3 GB); above :data:`MAX_KERNEL_ELEMENTS` the same filter is evaluated directly instead, only
where it is non-zero (bounded time and memory at every rate, equal to the kernel to float32 rounding).

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

from sound2image.audio.channels import DEFAULT_CHANNEL, ChannelPolicy, select_channel
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


def load_mono(
    item: Any, sample_rate: int = 16000, resampler: str = "sinc", channel: ChannelPolicy = DEFAULT_CHANNEL
) -> np.ndarray:
    """The signal the channel policy selects from an input, resampled to ``sample_rate``, float32 ``(n,)``.

    Args:
        item: a path, bytes, file object, ``AudioClip`` or ``(samples, rate)`` with samples ``(n,)`` or
            ``(channels, n)``.
        sample_rate: output rate in Hz.
        resampler: ``"sinc"`` (torchaudio-compatible) or ``"polyphase"`` (the audio layer's).
        channel: ``"mean"`` (down-mix, default), ``"first"`` (channel 0, as ImageBind) or an index; the
            channel is chosen at the input's own rate, before resampling.
    Raises:
        AudioError: the input cannot be decoded, is empty, holds non-finite samples, or lacks the channel.
    Warns:
        SilentChannelWarning: the selected signal is silent while another channel is not.
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
    if samples.ndim not in (1, 2):
        raise AudioError(f"{name}: expected samples of shape (n,) or (channels, n), got {samples.shape}")
    if samples.shape[-1] == 0:
        raise AudioError(f"{name}: no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: samples contain NaN or infinity")
    samples = select_channel(samples, channel, name)  # (n,)
    if int(rate) != sample_rate and resampler == "polyphase":
        from sound2image.audio.resample import resample

        samples = resample(samples, int(rate), sample_rate)
    elif int(rate) != sample_rate:
        samples = sinc_resample(torch.from_numpy(samples), int(rate), sample_rate).numpy()
    return samples


def load_channel0(item: Any, sample_rate: int = 16000, resampler: str = "sinc") -> np.ndarray:
    """Channel 0 of an input, resampled (ImageBind's reference): ``load_mono(..., channel="first")``."""
    return load_mono(item, sample_rate, resampler, channel="first")


# --- resampling (torchaudio-compatible) -------------------------------------------------------------


#: Largest polyphase kernel (phases x taps, float32 elements) built whole; 2**20 elements are 4 MiB. Every
#: common rate -> 16 kHz is far below it (11,025 Hz: 640 x 455 = 0.29 M; 44.1 kHz: 160 x 475 = 0.08 M);
#: a rate with a small gcd (47,999 or 44,101 Hz: 16,000 phases x ~48,000 taps, 3 GB) uses
#: :func:`_sinc_resample_direct` instead, which evaluates the same filter only where it is non-zero.
MAX_KERNEL_ELEMENTS = 1 << 20
#: Per chunk of :func:`_sinc_resample_direct`: at most 2**22 gathered input values (channels x phases x
#: blocks x taps, 16 MiB) and 2**20 weights (phases x taps, 4 MiB per temporary). Few, large chunks: each
#: torch op has a fixed cost (thread start-up), which dominates small ones on a busy machine.
DIRECT_CHUNK_ELEMENTS = 1 << 22
DIRECT_CHUNK_WEIGHTS = 1 << 20


def _sinc_weights(
    offsets: torch.Tensor, phases: torch.Tensor, orig: int, new: int, width_zero_crossings: int, base: float
) -> torch.Tensor:
    """torchaudio's windowed-sinc weights at input offsets ``offsets`` (samples from the block start,
    float32 integers) for output phases ``phases`` (float32 integers in [0, new)), broadcast together.

    The float32 operations are torchaudio's own, in its order (``_get_sinc_resample_kernel``,
    "sinc_interp_hann"), so the exact kernel and the direct evaluation compute the same weights.
    """
    t = (-phases) / new + offsets / orig
    t = (t * base).clamp(-width_zero_crossings, width_zero_crossings)
    window = torch.cos(t * math.pi / width_zero_crossings / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0), t.sin() / t)
    return kernel * window * (base / orig)


def _sinc_geometry(orig: int, new: int, width_zero_crossings: int, rolloff: float) -> tuple[float, int]:
    """(cut-off ``base`` in units of the reduced rates, half-width in input samples), as torchaudio."""
    base = min(orig, new) * rolloff
    return base, math.ceil(width_zero_crossings * orig / base)


@lru_cache(maxsize=16)
def _sinc_kernel(
    orig: int, new: int, width_zero_crossings: int = 6, rolloff: float = 0.99
) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc kernel ``(new, 1, taps)`` float32 and its half-width in input samples.

    Adapted from torchaudio's ``_get_sinc_resample_kernel`` ("sinc_interp_hann"), computed in float32
    as torchaudio does for float32 audio so the output matches it to float rounding. Only called for
    kernels of at most :data:`MAX_KERNEL_ELEMENTS` (so the cache holds at most 16 x 4 MiB).
    """
    base, width = _sinc_geometry(orig, new, width_zero_crossings, rolloff)
    idx = torch.arange(-width, width + orig, dtype=torch.float32)[None, None]  # (1, 1, taps)
    phases = torch.arange(0, new, dtype=torch.float32)[:, None, None]  # (new, 1, 1)
    return _sinc_weights(idx, phases, orig, new, width_zero_crossings, base), width


def _sinc_resample_direct(
    x: torch.Tensor, orig: int, new: int, width_zero_crossings: int = 6, rolloff: float = 0.99
) -> torch.Tensor:
    """:func:`sinc_resample` without building the kernel: ``(C, n) -> (C, ceil(n * new / orig))``.

    Output ``j = b * new + i`` (phase ``i`` of block ``b``) is the sum over input samples
    ``m = b * orig + k`` of ``x[m] * w(k, i)``, with the same weights ``w`` as the kernel. ``w`` is zero
    (up to float rounding of the clamped tails: below 1e-20) unless ``|k - i * orig / new| < width``, so only
    the ``2 * width + 1`` offsets ``k`` from ``floor(i * orig / new) - width`` on are evaluated. Phases are
    taken in chunks, each for every block (its weights computed once, broadcast over the blocks): time
    O(outputs x width), memory O(:data:`DIRECT_CHUNK_ELEMENTS`) beyond the (padded) input and output.
    """
    base, width = _sinc_geometry(orig, new, width_zero_crossings, rolloff)
    channels, n = x.shape
    target = math.ceil(new * n / orig)
    blocks = -(-target // new)
    if target == 0 or channels == 0:
        return x.new_zeros(channels, target, dtype=torch.float32)
    taps = 2 * width + 1
    # Input sample b * orig + k (k >= -width) sits at b * orig + k + width in ``padded``; the last one read,
    # (blocks - 1) * orig + (orig - 1) + 2 * width <= n + 2 * orig + 2 * width, is inside.
    padded = torch.nn.functional.pad(x.float(), (width, width + 2 * orig + 1)).contiguous()  # (C, length)
    # windows[c, s, b, k] = padded[c, s + b * orig + k]: a view, nothing copied.
    windows = padded.as_strided((channels, orig, blocks, taps), (padded.shape[1], 1, orig, 1))
    step = max(1, min(DIRECT_CHUNK_WEIGHTS // taps, DIRECT_CHUNK_ELEMENTS // (taps * channels * blocks)))
    tap = torch.arange(taps, dtype=torch.float32)  # (T,)
    out = torch.empty(channels, blocks, new, dtype=torch.float32)
    for first in range(0, new, step):
        phase = torch.arange(first, min(first + step, new), dtype=torch.int64)  # (P,)
        start = (phase * orig) // new  # (P,) = floor(i * orig / new): offset -width sits at start in padded
        offsets = (start - width).to(torch.float32)[:, None] + tap  # (P, T) in [-width, orig + width)
        weights = _sinc_weights(
            offsets, phase.to(torch.float32)[:, None], orig, new, width_zero_crossings, base
        )  # (P, T)
        values = windows[:, start]  # (C, P, B, T): advanced indexing reads the view in place
        out[:, :, first : first + phase.shape[0]] = (values @ weights[:, :, None]).squeeze(-1).transpose(1, 2)
    return out.reshape(channels, blocks * new)[:, :target]


def sinc_resample(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """torchaudio's ``functional.resample`` (Hann-windowed sinc, 6 zero crossings, roll-off 0.99).

    ``(..., n) -> (..., ceil(n * new_sr / orig_sr))``, float32. Bounded for every pair of rates: when the
    polyphase kernel would exceed :data:`MAX_KERNEL_ELEMENTS` (a small gcd, e.g. 44,101 -> 16,000 Hz) the
    same filter is evaluated directly (:func:`_sinc_resample_direct`); the two agree to float32 rounding.
    """
    if orig_sr == new_sr:
        return waveform
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    lead, n = waveform.shape[:-1], waveform.shape[-1]
    if n == 0 or waveform.numel() == 0:
        return torch.zeros(*lead, 0 if n == 0 else math.ceil(new * n / orig), dtype=torch.float32)
    _, width = _sinc_geometry(orig, new, 6, 0.99)
    if new * (2 * width + orig) > MAX_KERNEL_ELEMENTS:
        return _sinc_resample_direct(waveform.reshape(-1, n).float(), orig, new).reshape(*lead, -1)
    kernel, width = _sinc_kernel(orig, new)
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


def too_short_message(samples: int, sample_rate: int) -> str:
    """``too short: 399 samples (24.9 ms) at 16000 Hz; the encoder needs at least 400 samples (25 ms)``.

    Counts in samples, so the two numbers differ even when their durations round alike.
    """
    needed = min_samples(sample_rate)
    return (
        f"too short: {samples} samples ({_ms(samples, sample_rate)} ms) at {sample_rate} Hz; "
        f"the encoder needs at least {needed} samples ({_ms(needed, sample_rate)} ms)"
    )


def min_samples(sample_rate: int) -> int:
    """The fewest samples that give one fbank frame, one 25 ms window (:func:`num_frames`): 400 at 16 kHz."""
    return int(sample_rate * 25.0 * 0.001)


def _ms(samples: int, sample_rate: int) -> str:
    """Milliseconds with one decimal, without a trailing ``.0`` (``24.9``, ``25``)."""
    return f"{1000 * samples / sample_rate:.1f}".removesuffix(".0")


def preprocess_audio(item: Any, config: ImageBindAudioConfig) -> torch.Tensor:
    """One input -> ``(config.clips_per_file, 1, num_mel_bins, target_length)`` float32 features.

    The channels are chosen by ``config.channel`` (default: their mean; see :func:`load_mono`).

    Raises:
        AudioError: the input cannot be decoded, or is shorter than one 25 ms fbank frame.
    """
    waveform = torch.from_numpy(load_mono(item, config.sample_rate, config.resampler, config.channel))
    if num_frames(waveform.shape[0], config.sample_rate) == 0:
        raise AudioError(f"{input_name(item)}: {too_short_message(waveform.shape[0], config.sample_rate)}")
    bounds = clip_bounds(
        waveform.shape[0], config.sample_rate, config.clip_duration, config.clips_per_file, config.clip_layout
    )
    return clips_to_features(waveform, bounds, config)


def audio_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted): the one folder-scan rule of
    :func:`sound2image.audio.files.scan_audio_folder` (the loader's suffixes, hidden files left out)."""
    from sound2image.audio.files import scan_audio_folder

    return scan_audio_folder(folder).files
