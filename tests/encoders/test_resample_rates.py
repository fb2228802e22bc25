"""The encoder's resampler at any rate (issue 11, B6) and its too-short message (B7).

A rate with a small gcd against 16 kHz (44,101 or 47,999 Hz) used to build torchaudio's polyphase kernel
whole: 16,000 phases x ~48,000 taps, 3 GB, 51 s and 15 GB of RAM for a 10 s file. Such rates now evaluate
the same filter directly (``_sinc_resample_direct``); the common rates keep the exact kernel (and the
golden tests in test_preprocess.py / test_imagebind.py check those against the reference).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from sound2image.encoders import ImageBindAudioConfig
from sound2image.encoders import preprocess as pre
from sound2image.errors import AudioError

pytestmark = pytest.mark.numeric
FLOAT32_UNIT = 2.0**-24  # unit roundoff of float32
CACHED_KERNEL = pre._sinc_kernel  # the lru_cache'd function (the spy below replaces the module attribute)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def kernel_sizes(monkeypatch) -> list[int]:
    """Records the size (elements) of every polyphase kernel built (cached or not)."""
    sizes: list[int] = []
    real = pre._sinc_kernel

    def spy(orig: int, new: int, *args: object) -> tuple[torch.Tensor, int]:
        kernel, width = real(orig, new, *args)
        sizes.append(kernel.numel())
        return kernel, width

    monkeypatch.setattr(pre, "_sinc_kernel", spy)
    return sizes


def _tone(rate: int, freq: float, seconds: float, amplitude: float = 0.5) -> torch.Tensor:
    return torch.from_numpy(amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate))


@pytest.mark.parametrize("rate", [1000, 7999, 44101, 47999, 192000, 384000])
def test_any_rate_to_16k_is_bounded_and_keeps_a_tone(rate: int, kernel_sizes: list[int]) -> None:
    freq = 200.0  # well inside every pass band: 0.4 x the Nyquist frequency of the lowest rate (1 kHz)
    x = _tone(rate, freq, 1.5).float()
    start = time.perf_counter()
    y = pre.sinc_resample(x, rate, 16000).numpy()
    elapsed = time.perf_counter() - start
    assert y.shape == (math.ceil(x.shape[0] * 16000 / rate),)
    # Bounded: no kernel above the limit is ever built (the old 47,999 Hz one had 7.7e8 elements), and
    # 1.5 s of audio takes well under the 51 s the whole kernel took (0.01-0.3 s measured).
    assert all(size <= 1 << 20 for size in kernel_sizes)  # 4 MiB of float32, not the module's constant
    assert elapsed < 10.0
    # The tone, away from the edges (1,000 output samples >> the filter's half-width): its frequency is
    # the spectrum's peak, its level 0.5, and nothing else is left. The Hann-windowed sinc (6 zero
    # crossings, roll-off 0.99) passes 0.4 x the lower Nyquist frequency with a gain within 0.1 % of 1
    # (4e-4 measured at every rate), and its aliasing/ripple residue stays below 0.1 % of the amplitude
    # (2.7e-4 measured, 1.7e-7 for the downsampling by integers): 2e-3 and 1e-3 bound those.
    middle = y[1000:-1000]
    t = np.arange(1000, 1000 + middle.shape[0]) / 16000
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.shape[0])))
    peak = np.fft.rfftfreq(middle.shape[0], 1 / 16000)[np.argmax(spectrum)]
    assert abs(peak - freq) <= 16000 / middle.shape[0]  # within one FFT bin
    # Least-squares amplitude against the exact tone's sine and cosine.
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, middle, rcond=None)
    assert np.hypot(*coef) == pytest.approx(0.5, rel=2e-3)
    assert np.abs(middle - basis @ coef).max() <= 1e-3


@pytest.mark.parametrize(("rate", "orig", "new"), [(44100, 441, 160), (11025, 441, 640), (22050, 441, 320)])
def test_direct_evaluation_equals_the_exact_kernel(rate: int, orig: int, new: int) -> None:
    """Where both are possible the two paths apply the same weights; only float32 sums differ.

    Error bound: each output is a dot product, of L = 2 * width + orig terms along the kernel path and
    T = 2 * width + 1 along the direct one; float32 summation errs by at most ~L * u * sum |x w| (u the
    unit roundoff), and the weights themselves may differ by a few ulp (vectorised vs scalar sin/cos), so
    |a - b| <= (L + T + 8) * u * max|x| * max_i sum_k |w_ik|.
    """
    assert math.gcd(rate, 16000) * orig == rate and math.gcd(rate, 16000) * new == 16000
    x = (0.5 * torch.from_numpy(np.random.default_rng(5).standard_normal((2, rate)))).float()  # 1 s stereo
    exact = pre.sinc_resample(x, rate, 16000)
    direct = pre._sinc_resample_direct(x, orig, new)
    kernel, width = pre._sinc_kernel(orig, new)
    bound = (2 * width + orig + 2 * width + 1 + 8) * FLOAT32_UNIT
    bound *= x.abs().max().item() * kernel.abs().sum(dim=-1).max().item()
    assert direct.shape == exact.shape
    assert (direct - exact).abs().max().item() <= bound


def test_large_kernels_are_not_built_nor_cached(kernel_sizes: list[int]) -> None:
    x = torch.zeros(47999)
    for rate in (47999, 44101):
        assert pre.sinc_resample(x[:rate], rate, 16000).shape == (16000,)
    assert kernel_sizes == []  # the direct path: no kernel at all
    # The cache holds kernels of at most MAX_KERNEL_ELEMENTS float32 (4 MiB), 16 of them.
    assert pre.MAX_KERNEL_ELEMENTS * 4 <= 4 * 2**20 and CACHED_KERNEL.cache_info().maxsize == 16


def test_preprocessing_a_47999_hz_file_gives_imagebind_features() -> None:
    x = _tone(47999, 440.0, 2.5, 0.3).numpy().astype(np.float32)
    features = pre.preprocess_audio((x, 47999), ImageBindAudioConfig())
    assert features.shape == (3, 1, 128, 204) and torch.isfinite(features).all()
    # The same 440 Hz tone sampled at 48 kHz goes through the exact kernel: the same filter, read at other
    # phases. In every frame the tone's mel bin is the same and its level agrees: the pass band is flat to
    # < 0.5 % in amplitude at 440 Hz (< 1 % in energy, < 0.01 in log-mel, 1.1e-3 after dividing by std
    # 9.138); 2e-3 allows for that.
    tone48 = _tone(48000, 440.0, 2.5, 0.3).numpy().astype(np.float32)
    reference = pre.preprocess_audio((tone48, 48000), ImageBindAudioConfig())
    frames = slice(0, 198)  # 2 s windows give 198 fbank frames; the rest is zero padding
    assert torch.equal(features[..., frames].argmax(dim=2), reference[..., frames].argmax(dim=2))
    peak, peak48 = features[..., frames].amax(dim=2), reference[..., frames].amax(dim=2)
    assert (peak - peak48).abs().max().item() <= 2e-3


def test_too_short_message_gives_samples_and_milliseconds() -> None:
    """399 samples at 16 kHz are 24.94 ms: the old message said "0.025 s" for both numbers."""
    with pytest.raises(AudioError) as caught:
        pre.preprocess_audio((np.zeros(399, np.float32), 16000), ImageBindAudioConfig())
    assert str(caught.value) == (
        "array input: too short: 399 samples (24.9 ms) at 16000 Hz; "
        "the encoder needs at least 400 samples (25 ms)"
    )
    # 400 samples are one fbank frame (25 ms at 16 kHz): accepted.
    assert pre.preprocess_audio((np.zeros(400, np.float32), 16000), ImageBindAudioConfig()).shape[0] == 3
    # A 44.1 kHz clip is counted after resampling: 1,100 samples -> ceil(1100 * 160 / 441) = 400, accepted;
    # 1,095 -> ceil(397.3) = 398 (24.875 ms), refused with the resampled count.
    assert pre.preprocess_audio((np.zeros(1100, np.float32), 44100), ImageBindAudioConfig()).shape[0] == 3
    with pytest.raises(AudioError, match=r"^array input: too short: 398 samples \(24\.9 ms\) at 16000 Hz;"):
        pre.preprocess_audio((np.zeros(1095, np.float32), 44100), ImageBindAudioConfig())
