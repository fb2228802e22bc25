"""The torch fbank against an independent float64 NumPy transcription of Kaldi's algorithm and hand facts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sound2image.audio.fbank import fbank, mel_banks, num_frames


def kaldi_fbank_reference(
    x: np.ndarray, sr: int = 16000, bins: int = 128, window: str = "hanning"
) -> np.ndarray:
    """Kaldi's compute-fbank-feats written from its documentation, one frame at a time, in float64."""
    size, shift, nfft = int(sr * 0.025), int(sr * 0.010), 512
    n = np.arange(size)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / (size - 1))
    win = hann if window == "hanning" else hann**0.85

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    lo, hi = mel(20.0), mel(sr / 2)
    edges = lo + (hi - lo) / (bins + 1) * np.arange(bins + 2)
    fft_mel = mel(np.arange(nfft // 2) * sr / nfft)
    banks = np.zeros((bins, nfft // 2 + 1))
    for b in range(bins):
        left, center, right = edges[b : b + 3]
        for k, m in enumerate(fft_mel):
            if left < m < right:
                banks[b, k] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    rows = []
    for start in range(0, len(x) - size + 1, shift):
        frame = x[start : start + size].astype(np.float64)
        frame = frame - frame.mean()
        frame = np.concatenate([[frame[0] - 0.97 * frame[0]], frame[1:] - 0.97 * frame[:-1]])
        power = np.abs(np.fft.rfft(frame * win, nfft)) ** 2
        rows.append(np.log(np.maximum(banks @ power, np.finfo(np.float32).eps)))
    return np.array(rows)


@pytest.mark.parametrize("window", ["hanning", "povey"])
def test_fbank_matches_float64_kaldi_transcription(window: str) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size) + 0.2).astype(np.float32)
    ours = fbank(torch.from_numpy(x), 16000, 128, window_type=window).numpy()
    ref = kaldi_fbank_reference(x, window=window)
    assert ours.shape == ref.shape == (1 + (4000 - 400) // 160, 128)
    # float32 against float64: ~1e-5 relative, a little more on the weakest bins.
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=5e-4)


def test_fbank_is_batched_over_leading_axes() -> None:
    x = torch.randn(2, 3, 3200)
    batched = fbank(x)
    assert batched.shape == (2, 3, 1 + (3200 - 400) // 160, 128)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(batched[i, j], fbank(x[i, j]), atol=1e-5, rtol=0)


def test_tone_lands_in_its_mel_bin_and_dc_is_ignored() -> None:
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * math.pi * 1000 * t)
    features = fbank(tone + 0.5)  # a DC offset is removed per frame
    peak = features.mean(0).argmax().item()
    centers = (
        700
        * (
            torch.exp(
                torch.linspace(1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + 8000 / 700), 130) / 1127
            )
            - 1
        )[1:-1]
    )
    assert abs(centers[peak].item() - 1000) < 40  # the bin centred nearest 1 kHz
    torch.testing.assert_close(features, fbank(tone), atol=1e-2, rtol=0)


def test_silence_is_floored_at_float_eps_and_short_input_has_no_frames() -> None:
    silent = fbank(torch.zeros(800))
    assert torch.all(silent == math.log(torch.finfo(torch.float32).eps))
    assert fbank(torch.zeros(399)).shape == (0, 128)
    assert num_frames(399) == 0 and num_frames(400) == 1 and num_frames(32000) == 198


def test_mel_banks_are_triangles_within_the_band_and_zero_at_nyquist() -> None:
    banks = mel_banks(128, 512, 16000.0)
    assert banks.shape == (128, 257)
    assert torch.all(banks[:, -1] == 0) and torch.all(banks >= 0) and torch.all(banks <= 1.0)
    assert torch.all(banks[:, 0] == 0)  # 0 Hz is below the 20 Hz lower edge
    # High filters are wider than an FFT bin, so they peak near 1; the lowest ones can fall between bins
    # (a known property of 128 Kaldi bins on a 512-point FFT: those rows stay at the log floor).
    assert banks[64:].max(dim=1).values.min() > 0.5
    # Each filter's support is contiguous and the supports advance with the filter index.
    firsts = [int(torch.nonzero(row)[0]) for row in banks if row.any()]
    assert firsts == sorted(firsts)
