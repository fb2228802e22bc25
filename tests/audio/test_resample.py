"""Resampling keeps pitch and duration, and removes what the new rate cannot hold (anti-aliasing)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sound2image.audio import resample, resampled_length
from sound2image.errors import UsageError
from tests.audio.synth import peak_frequency, rms_db, tone

pytestmark = pytest.mark.numeric
COMMON_RATIOS = [(44100, 16000), (22050, 16000), (48000, 22050), (8000, 22050), (48000, 16000)]


def _middle(x: np.ndarray) -> np.ndarray:
    """Drop the first and last quarter: the filter's start-up and end transients."""
    return x[len(x) // 4 : -len(x) // 4]


@pytest.mark.parametrize(("orig", "target"), COMMON_RATIOS)
def test_tone_keeps_its_frequency_level_and_duration(orig: int, target: int) -> None:
    freq = 0.3 * min(orig, target)  # 60 % of the lower Nyquist frequency: in the flat pass band
    out = resample(tone(freq, orig, 1.0), orig, target)
    assert out.dtype == np.float32 and out.shape == (target,)  # 1 s in → 1 s out
    # The tone sits on a 2 Hz bin of the 0.5 s middle, where the interpolated peak is exact (1e-11 Hz
    # measured); 0.5 Hz still catches a rate error of 2e-4 at these 2.4-13 kHz tones.
    assert abs(peak_frequency(_middle(out), target) - freq) < 0.5
    # A Kaiser design for 80 dB has pass-band ripple <= 1e-4 (0.0009 dB); the output is float32 (7e-5 dB
    # measured).
    assert abs(rms_db(_middle(out)) - 20 * np.log10(0.5)) < 0.05  # amplitude 0.5 kept within 0.05 dB


@pytest.mark.parametrize(("orig", "target"), [r for r in COMMON_RATIOS if r[0] > r[1]])
@pytest.mark.parametrize("above", [1.02, 1.1, 1.5])
def test_tone_above_new_nyquist_is_attenuated_60db(orig: int, target: int, above: float) -> None:
    freq = above * target / 2
    out = resample(tone(freq, orig, 1.0, amplitude=1.0), orig, target)
    assert rms_db(_middle(out)) < -60  # the stop-band specification (-89.8 dB or lower measured)


def test_linear_interpolation_would_fail_the_aliasing_check() -> None:
    # The independent check that the test above can fail: np.interp aliases a 9.6 kHz tone to 6.4 kHz.
    orig, target, freq = 44100, 16000, 9600
    x = tone(freq, orig, 1.0, amplitude=1.0)
    naive = np.interp(np.arange(target) / target, np.arange(orig) / orig, x)
    assert rms_db(_middle(naive)) > -20
    assert abs(peak_frequency(_middle(naive), target) - (target - freq)) < 1


def test_pass_band_is_flat_to_90_percent_of_nyquist() -> None:
    out = resample(tone(7200, 22050, 1.0), 22050, 16000)  # 0.9 × 8 kHz
    assert abs(rms_db(_middle(out)) - 20 * np.log10(0.5)) < 0.1  # the documented flatness (0.001 dB measured)


@pytest.mark.parametrize(("rate", "via"), [(16000, 48000), (22050, 44100), (16000, 22050)])
def test_up_then_down_gives_back_a_band_limited_signal(rate: int, via: int) -> None:
    x = tone(1000, rate, 0.5) + tone(0.35 * rate, rate, 0.5, 0.2)  # both in the flat pass band
    back = resample(resample(x, rate, via), via, rate)
    assert back.shape == x.shape
    # Two filters' pass-band ripple (<= 1e-4 each, 80 dB Kaiser) on amplitudes <= 0.7: <= 1.4e-4, plus
    # float32 rounding ~eps * 0.7 (1.3e-5 measured).
    np.testing.assert_allclose(_middle(back), _middle(x), atol=1e-3)


def test_stereo_along_last_axis_equals_each_channel() -> None:
    left, right = tone(440, 44100, 0.5), tone(1234, 44100, 0.5)
    both = resample(np.stack([left, right]), 44100, 16000)
    assert both.shape == (2, 8000)
    # Channels are filtered independently: bit-equal (measured); 1e-6 is a few ulp of samples <= 0.5, room
    # for a vectorised loop that rounds a stacked array differently.
    np.testing.assert_allclose(both[0], resample(left, 44100, 16000), atol=1e-6)
    np.testing.assert_allclose(both[1], resample(right, 44100, 16000), atol=1e-6)


def test_no_time_shift() -> None:
    # An impulse in the middle stays in the middle (zero-phase filter): 22050 → 44100 doubles its index.
    x = np.zeros(2205)
    x[1000] = 1.0
    out = resample(x, 22050, 44100)
    assert int(np.argmax(out)) == 2000


def test_same_rate_is_identity_and_empty_stays_empty() -> None:
    x = tone(440, 16000, 0.1)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x.astype(np.float32))
    assert resample(np.zeros((2, 0)), 44100, 16000).shape == (2, 0)


@pytest.mark.parametrize(("orig", "target"), [(0, 16000), (16000, -1), (44100.5, 16000)])
def test_bad_rates_are_usage_errors(orig, target) -> None:
    with pytest.raises(UsageError):
        resample(np.zeros(10), orig, target)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=3000),
    orig=st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000]),
    target=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
)
def test_output_length_is_ceil_of_duration(n: int, orig: int, target: int) -> None:
    out = resample(np.ones(n), orig, target)
    expected = -(-n * target // orig)  # ceil(n * target / orig), computed with integers
    assert out.shape == (expected,) == (resampled_length(n, orig, target),)
    # The output spans the same time as the input, to within one output sample.
    assert abs(len(out) / target - n / orig) < 1 / target
