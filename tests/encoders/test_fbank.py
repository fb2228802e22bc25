"""The torch fbank against an independent float64 NumPy transcription of Kaldi's algorithm and hand facts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sound2image.audio.fbank import fbank, mel_banks, num_frames

pytestmark = pytest.mark.numeric


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
    # float32 against float64. Strong bins: float32 filter weights, (m - left) / (center - left) with m up
    # to 2,840 mel and 21.8 mel spacing, carry eps * 2840 / 21.8 ~ 1.6e-5 relative, the FFT ~eps * log2 512:
    # within rtol * |log E|. Weakest bins (pre-emphasis leaves E ~ 1e-6 at 20-60 Hz): float32 rounding of DC
    # removal and pre-emphasis is noise N ~ (eps * 0.5)^2 * sum(w^2) (150) * gain (0.8) ~ 4e-13, so
    # |d log E| <= 2 sqrt(N / E) ~ 1.2e-3 < atol + rtol * 13.5 = 1.9e-3 (see the tone test below).
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=5e-4)


def test_fbank_is_batched_over_leading_axes() -> None:
    x = torch.randn(2, 3, 3200)
    batched = fbank(x)
    assert batched.shape == (2, 3, 1 + (3200 - 400) // 160, 128)
    for i in range(2):
        for j in range(3):
            # Rows are independent; only the FFT's and the filter product's blocking may change with the
            # batch: float32 error ~eps * log2(512) of the spectrum's rms amplitude (Parseval), i.e.
            # |d log E| ~ 2 * 9 * eps * sqrt(1e3) ~ 7e-5 in the weakest pre-emphasised bins (~1e-3 of the
            # mean energy). Bit-equal on AVX2 and ATEN_CPU_CAPABILITY=default (measured).
            torch.testing.assert_close(batched[i, j], fbank(x[i, j]), atol=1e-4, rtol=0)


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
    assert abs(centers[peak].item() - 1000) < 40  # the bin centred nearest 1 kHz (centres ~33 Hz apart)
    # DC removal is exact in real arithmetic but leaves float32 rounding noise, so fbank(tone + 0.5) may
    # differ from fbank(tone) only by what that noise can do. Its energy per mel bin, as an rms bound: each
    # sample (|x| <= 1.5) is rounded when 0.5 is added and again when the frame mean is subtracted, error
    # <= eps * 1.5; the 512-point FFT adds ~eps * sqrt(log2 512) of the frame's amplitude (<= 1 once DC
    # is gone); pre-emphasis multiplies noise amplitude by <= 1 + 0.97; white noise of unit variance puts
    # the window's energy sum(w^2) = 3 (400 - 1) / 8 into each FFT bin and mel filter b sums banks[b]'s
    # weights of FFT bins; the two runs' noises add (x 2).
    eps = torch.finfo(torch.float32).eps
    filter_gain = mel_banks(128, 512, 16000.0).sum(dim=1).double()
    noise = 2 * eps**2 * (1 + 0.97) ** 2 * (1.5**2 + math.log2(512)) * (3 * 399 / 8) * filter_gain
    plain = fbank(tone)
    energy = torch.minimum(features, plain).double().exp()
    # With noise energy N, |log E' - log E| <= 2 log(1 + sqrt(N / min(E, E'))) <= 2 sqrt(N / min(E, E'))
    # (Cauchy-Schwarz on the filter's weighted sum). Compare only bins 1e4 x above N: there the bound is
    # <= 0.02 (plus 1e-5 for float32 log and filter sums: ~eps * (taps + |log E|) <= 5e-6).
    strong = energy >= 1e4 * noise
    bound = 2 * torch.sqrt(noise / energy) + 1e-5
    assert strong[:, peak].all() and strong.sum() > features.numel() // 4  # not a vacuous comparison
    assert ((features - plain).abs() <= bound)[strong].all()
    # Elsewhere the tone is near the noise (or the float-eps floor): fbank(tone + 0.5) must stay within
    # (sqrt(E) + sqrt(N))^2 of the tone alone, i.e. the offset put no energy into any bin.
    ceiling = torch.log(torch.clamp((torch.sqrt(plain.double().exp()) + torch.sqrt(noise)) ** 2, min=eps))
    assert (features.double() <= ceiling + 1e-5)[~strong].all()


def test_silence_is_floored_at_float_eps_and_short_input_has_no_frames() -> None:
    silent = fbank(torch.zeros(800))
    # log(eps) = -15.94238515 lies 0.45 ulp (ulp 9.5e-7) from the nearest float32, and vectorised logf is
    # accurate to 1 ulp, not correctly rounded: allow 1 ulp; every frame and bin is the same floor.
    assert torch.all((silent - math.log(torch.finfo(torch.float32).eps)).abs() <= 1e-6)
    assert torch.all(silent == silent[0, 0])
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
