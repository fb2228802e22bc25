"""Kaldi-compatible log-mel filter banks in plain torch (no torchaudio).

This reproduces ``torchaudio.compliance.kaldi.fbank`` (itself a port of Kaldi's ``compute-fbank-feats``)
for the options ImageBind and AST use, step for step and in the same float precision, so that the
features match the reference to float rounding. Unlike the reference it is vectorised over frames *and*
over a batch of equal-length clips: ``(..., n) -> (..., frames, num_mel_bins)``.

Per frame (25 ms, 10 ms hop, only frames that fit entirely — Kaldi's ``snip_edges``):
remove the frame's mean (DC), pre-emphasis ``x[j] -= 0.97 * x[max(j - 1, 0)]``, window (symmetric
Hann, or Kaldi's "povey" = Hann^0.85), zero-pad to a power of two (512 at 16 kHz), power spectrum,
triangular HTK-mel filters from 20 Hz to Nyquist, ``log(max(energy, float32 eps))``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

# Kaldi's floor on filter-bank energies: numeric_limits<float>::epsilon().
FLOAT_EPS = torch.finfo(torch.float32).eps

WINDOW_TYPES = ("hanning", "povey", "hamming", "rectangular")


def _mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    """HTK mel scale (Kaldi's MelScale): 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=16)
def mel_banks(
    num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> torch.Tensor:
    """Triangular mel filters, shape ``(num_bins, padded_window // 2 + 1)`` float32 (last column zero).

    ``high_freq <= 0`` is an offset from Nyquist (Kaldi's convention). The filters are computed in
    float32 exactly as torchaudio does (``get_mel_banks``), so the features agree to float rounding.
    The cached tensor is shared: callers must not modify it.
    """
    if num_bins <= 3:
        raise ValueError(f"num_mel_bins must be > 3, got {num_bins}")
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"bad mel range {low_freq}..{high_freq} Hz for Nyquist {nyquist} Hz")
    num_fft_bins = padded_window // 2
    fft_bin_width = sample_rate / padded_window
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    # num_bins + 1 intervals: the outer filters' edges sit on low_freq and high_freq.
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)  # (num_bins, 1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    mel = _mel(fft_bin_width * torch.arange(num_fft_bins, dtype=torch.float32)).unsqueeze(
        0
    )  # (1, num_fft_bins)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (num_bins, num_fft_bins)
    # The Nyquist bin gets no weight (Kaldi's filters span num_fft_bins bins only).
    return torch.nn.functional.pad(banks, (0, 1))


@lru_cache(maxsize=16)
def _window(window_type: str, size: int) -> torch.Tensor:
    """Kaldi's analysis windows (symmetric, float32). The cached tensor must not be modified."""
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False, dtype=torch.float32)
    if window_type == "povey":
        return torch.hann_window(size, periodic=False, dtype=torch.float32).pow(0.85)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float32)
    if window_type == "rectangular":
        return torch.ones(size, dtype=torch.float32)
    raise ValueError(f"window_type must be one of {WINDOW_TYPES}, got {window_type!r}")


def num_frames(
    num_samples: int,
    sample_rate: float = 16000.0,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> int:
    """Frames Kaldi's ``snip_edges`` framing yields for ``num_samples`` (0 when shorter than one frame)."""
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    return 0 if num_samples < size else 1 + (num_samples - size) // shift


def fbank(
    waveform: torch.Tensor,
    sample_rate: float = 16000.0,
    num_mel_bins: int = 128,
    *,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window_type: str = "hanning",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Kaldi log-mel filter-bank features of one clip or a batch of equal-length clips.

    Equivalent to ``torchaudio.compliance.kaldi.fbank(w, htk_compat=True, use_energy=False, dither=0,
    window_type=..., num_mel_bins=..., sample_frequency=...)`` with Kaldi's other defaults
    (``snip_edges``, power spectrum, ``round_to_power_of_two``, log with a float-eps floor).

    Args:
        waveform: float tensor ``(..., n)``; every leading index is an independent clip.
        sample_rate: samples per second of ``waveform``.
        num_mel_bins: number of mel filters.
        frame_length_ms, frame_shift_ms: frame size and hop in milliseconds.
        window_type: "hanning" (ImageBind, AST), "povey" (Kaldi's default), "hamming" or "rectangular".
        preemphasis: pre-emphasis coefficient (0 disables).
        remove_dc_offset: subtract each frame's mean before pre-emphasis.
        low_freq, high_freq: mel range in Hz (``high_freq <= 0`` is an offset from Nyquist).

    Returns:
        ``(..., frames, num_mel_bins)`` in ``waveform``'s dtype (float32 for integer input); ``frames``
        is 0 when the clip is shorter than one frame.
    """
    if not waveform.is_floating_point():
        waveform = waveform.float()
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if size < 2 or shift < 1:
        raise ValueError(f"frame of {size} samples and hop of {shift} samples are too small")
    padded = 1 if size <= 1 else 2 ** (size - 1).bit_length()  # next power of two, as Kaldi
    lead, n = waveform.shape[:-1], waveform.shape[-1]
    if n < size:
        return waveform.new_zeros(*lead, 0, num_mel_bins)
    frames = waveform.unfold(-1, size, shift)  # (..., frames, size), a view
    if remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if preemphasis != 0.0:
        # x[j] - c * x[j - 1], with x[-1] := x[0] (Kaldi replicates the first sample).
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - preemphasis * previous
    frames = frames * _window(window_type, size).to(frames.device, frames.dtype)
    spectrum = torch.fft.rfft(frames, n=padded).abs().pow(2.0)  # (..., frames, padded // 2 + 1)
    banks = mel_banks(num_mel_bins, padded, float(sample_rate), low_freq, high_freq)
    energies = spectrum @ banks.to(spectrum.device, spectrum.dtype).T  # (..., frames, num_mel_bins)
    return torch.clamp(energies, min=FLOAT_EPS).log()
