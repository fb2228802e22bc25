"""FFT-section features: shapes, bin frequencies and magnitudes computed by hand, any rate and length."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf

from sound2image.audio.sections import (
    AV_DIGITS_FEATURES,
    PAPER_FEATURES,
    SectionFeatureConfig,
    compute_many,
    compute_section_features,
    feature_statistics,
    section_spectra,
)
from sound2image.errors import UsageError
from tests.paths import AV_DIGITS

pytestmark = pytest.mark.numeric


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_paper_setting_is_500_sections_of_441_samples_and_220_bins() -> None:
    assert (PAPER_FEATURES.section_length, PAPER_FEATURES.num_bins, PAPER_FEATURES.num_sections) == (
        441,
        220,
        500,
    )
    assert (AV_DIGITS_FEATURES.section_length, AV_DIGITS_FEATURES.num_bins) == (160, 80)  # 20 ms, 50 Hz bins


def test_sine_on_a_bin_gives_the_textbook_magnitude() -> None:
    # 1,000 Hz at 22,050 Hz over 441 samples: exactly 20 cycles, so bin 20 (50 Hz spacing) holds
    # A·N/2 = 0.5 · 441 / 2 and every other bin ~0.
    t = np.arange(220500) / 22050
    features = section_spectra(0.5 * np.sin(2 * math.pi * 1000 * t), PAPER_FEATURES)
    assert features.shape == (500, 220)
    assert np.all(features.argmax(axis=1) == 20)
    # The DFT runs in float64 and is stored as float32: ~eps32 / 2 relative (1.4e-8 measured).
    np.testing.assert_allclose(features[:, 20], 0.5 * 441 / 2, rtol=1e-4)
    # 20 whole cycles leak nothing; float64 rounding leaves ~1e-10 (measured). 1e-3 (1e-5 of the peak) is
    # still far below the leakage of a wrong section length (>= 1 % of the peak).
    assert np.delete(features, 20, axis=1).max() < 1e-3


def test_dc_is_bin_zero_and_the_top_bin_is_dropped() -> None:
    config = SectionFeatureConfig(sample_rate=100, duration=1.0, num_sections=20)  # 5-sample sections, 2 bins
    features = section_spectra(np.full(100, 0.25), config)
    assert features.shape == (20, 2)
    np.testing.assert_allclose(features[:, 0], 0.25 * 5, rtol=1e-6)  # DC = sum of the section
    np.testing.assert_allclose(features[:, 1], 0, atol=1e-6)  # float64 twiddle rounding only (~1e-16)


def test_log_magnitude_option() -> None:
    config = SectionFeatureConfig(
        sample_rate=100, duration=1.0, num_sections=20, log_magnitude=True, log_floor=0.01
    )
    features = section_spectra(np.full(100, 0.25), config)
    np.testing.assert_allclose(features[:, 0], math.log(1.25 + 0.01), rtol=1e-6)
    np.testing.assert_allclose(features[:, 1], math.log(0.01), rtol=1e-4)  # |bin 1| << 1e-6: d log < 1e-4


def test_any_rate_and_length_goes_through_the_loader() -> None:
    # 3 s at 44.1 kHz: resampled to 22,050 Hz and zero-padded to 10 s.
    t = np.arange(3 * 44100) / 44100
    features = compute_section_features(_wav(0.5 * np.sin(2 * math.pi * 1000 * t), 44100), PAPER_FEATURES)
    assert features.shape == (500, 220)
    assert np.all(features[5:145].argmax(axis=1) == 20)  # the tone, away from the edges
    # The loader's 44.1 -> 22.05 kHz Kaiser filter (80 dB) has pass-band ripple <= 1e-4; 1e-3 leaves 10x
    # (1.2e-5 measured).
    np.testing.assert_allclose(features[5:145, 20], 0.5 * 441 / 2, rtol=1e-3)
    assert features[151:].max() == 0  # padding is silence


def test_short_clips_can_be_looped() -> None:
    config = SectionFeatureConfig(sample_rate=8000, duration=1.0, num_sections=50, short="loop")
    tone = 0.5 * np.sin(2 * math.pi * 1000 * np.arange(2000) / 8000)  # 0.25 s, looped 4 times
    features = compute_section_features(_wav(tone, 8000), config)
    assert np.all(features.argmax(axis=1) == 20)


def test_real_av_digits_clip() -> None:
    features = compute_section_features(AV_DIGITS / "audio" / "0_george_0.wav", AV_DIGITS_FEATURES)
    assert features.shape == (50, 80) and np.isfinite(features).all()


def test_bad_files_are_reported_and_the_rest_computed(tmp_path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, 0.1 * np.sin(np.arange(8000, dtype=np.float32)), 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    features, ok, problems = compute_many([good, bad, tmp_path / "missing.wav"], AV_DIGITS_FEATURES)
    assert features.shape == (1, 50, 80) and ok == [0]
    assert len(problems) == 2 and "bad.wav" in problems[0] and "missing.wav" in problems[1]


def test_statistics_per_bin() -> None:
    features = np.stack([np.full((3, 2), 1.0), np.full((3, 2), 3.0)]).astype(np.float32)
    features[:, :, 1] = 5.0
    mean, std = feature_statistics(features)
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(std, [1.0, 1e-5])  # a constant bin gets the floor, not 0


def test_impossible_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="too short"):
        SectionFeatureConfig(sample_rate=100, duration=0.1, num_sections=50)
    with pytest.raises(UsageError, match="short"):
        SectionFeatureConfig(short="stretch")
