"""Speaker-robust feature options: log-mel bands and per-utterance normalisation over time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sound2image.audio.sections import (
    AV_DIGITS_FEATURES,
    SectionFeatureConfig,
    hz_to_mel,
    mel_filterbank,
    section_spectra,
)
from sound2image.errors import UsageError

MEL = SectionFeatureConfig(
    sample_rate=8000, duration=1.0, num_sections=50, frequency_scale="mel", mel_bands=40
)


def reference_filterbank(num_bands: int, num_bins: int, bin_hz: float, high_hz: float) -> np.ndarray:
    """The HTK triangular filters written out with loops and the natural-log form of the mel scale,
    1127 ln(1 + f/700) (= 2595 log10(1 + f/700)), peak 1 at each centre."""
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (math.exp(m / 1127.0) - 1.0)  # noqa: E731
    top = mel(high_hz)
    edges = [hz(top * i / (num_bands + 1)) for i in range(num_bands + 2)]
    out = np.zeros((num_bands, num_bins))
    for band in range(num_bands):
        lo, mid, hi = edges[band], edges[band + 1], edges[band + 2]
        for k in range(num_bins):
            f = k * bin_hz
            if lo < f <= mid:
                out[band, k] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                out[band, k] = (hi - f) / (hi - mid)
    return out


def test_mel_scale_known_values() -> None:
    # HTK/O'Shaughnessy: 700 Hz -> 2595 log10(2) = 781.17 mel; 1000 Hz -> 999.99 mel (the scale's anchor)
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2), rel=1e-12)
    assert float(hz_to_mel(1000.0)) == pytest.approx(1000.0, abs=0.02)


@pytest.mark.numeric
@pytest.mark.parametrize(
    ("bands", "bins", "bin_hz", "high"), [(40, 80, 50.0, 4000.0), (24, 220, 50.0, 11025.0)]
)
def test_filterbank_matches_the_reference_formula(bands, bins, bin_hz, high) -> None:
    # float64 both ways; log10 vs ln and vectorised vs loops differ by a few ulps of values <= 1
    np.testing.assert_allclose(
        mel_filterbank(bands, bins, bin_hz, high), reference_filterbank(bands, bins, bin_hz, high), atol=1e-12
    )


def test_mel_features_of_a_bin_centred_tone() -> None:
    """A tone exactly on FFT bin k (k · 50 Hz) has, in every 160-sample section, one non-zero bin of
    magnitude A · 160 / 2 (rectangular window, whole periods); its mel bands are that times column k of
    the filters."""
    k, amplitude = 23, 0.5
    t = np.arange(8000) / 8000
    tone = amplitude * np.sin(2 * math.pi * k * 50.0 * t)
    features = section_spectra(tone, MEL)
    assert features.shape == (50, 40) and MEL.num_bins == 40 and MEL.fft_bins == 80
    expected = amplitude * 160 / 2 * reference_filterbank(40, 80, 50.0, 4000.0)[:, k]
    # float32 output of float64 FFT sums: relative 1e-6; FFT leakage of a bin-centred sine ~1e-13 · 80
    np.testing.assert_allclose(features, np.broadcast_to(expected, (50, 40)), rtol=1e-5, atol=1e-6)


def test_too_many_mel_bands_are_refused_naming_the_parameter() -> None:
    # The first filter spans 0 .. hz(2 · mel(4000) / (n + 1)); it covers bin 1 (50 Hz) only when that is
    # above 50 Hz: 2 · 2146.06 / (n + 1) > mel(50) = 77.92  <=>  n + 1 < 55.08, so 54 bands fit, 55 do not.
    SectionFeatureConfig(sample_rate=8000, duration=1.0, num_sections=50, frequency_scale="mel", mel_bands=54)
    with pytest.raises(UsageError) as error:
        SectionFeatureConfig(
            sample_rate=8000, duration=1.0, num_sections=50, frequency_scale="mel", mel_bands=55
        )
    assert str(error.value).startswith("features: 55 mel bands are too many for 80 FFT bins 50 Hz apart")
    assert error.value.parameters == ("mel_bands",)


@pytest.mark.parametrize(
    ("settings", "parameter"),
    [({"frequency_scale": "bark"}, "frequency_scale"), ({"normalize": "cmvn"}, "normalize"),
     ({"norm_floor": 0.0}, "norm_floor")],
)  # fmt: skip
def test_bad_option_values_name_the_parameter(settings, parameter) -> None:
    with pytest.raises(UsageError) as error:
        SectionFeatureConfig(**settings)
    assert error.value.parameters == (parameter,)


def speech_like(seed: int = 0) -> np.ndarray:
    """1 s at 8 kHz: noise whose level rises and falls, so every band varies over time."""
    rng = np.random.default_rng(seed)
    envelope = np.sin(np.linspace(0, 3 * math.pi, 8000)) ** 2 + 0.05
    return (rng.standard_normal(8000) * envelope).astype(np.float32)


@pytest.mark.numeric
@pytest.mark.parametrize("scale", ["linear", "mel"])
def test_meanvar_gives_each_band_mean_0_and_variance_1_over_time(scale) -> None:
    config = SectionFeatureConfig(**{**AV_DIGITS_FEATURES.to_dict(), "frequency_scale": scale,
                                     "normalize": "meanvar"})  # fmt: skip
    features = section_spectra(speech_like(), config).astype(np.float64)
    # float32 rounding of values of order 1 summed over 50 sections: well below 1e-5
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(features.var(axis=0), 1.0, atol=1e-5)


@pytest.mark.numeric
def test_mean_normalisation_subtracts_each_bands_time_mean() -> None:
    raw = section_spectra(speech_like(1), AV_DIGITS_FEATURES).astype(np.float64)
    config = SectionFeatureConfig(**{**AV_DIGITS_FEATURES.to_dict(), "normalize": "mean"})
    # the same float64 log-magnitudes, centred then rounded once to float32
    np.testing.assert_allclose(section_spectra(speech_like(1), config), raw - raw.mean(axis=0), atol=1e-5)


def test_meanvar_makes_the_features_independent_of_gain() -> None:
    """A gain g adds log(g) to every log-magnitude (up to the floor): gone after mean/var normalisation."""
    config = SectionFeatureConfig(**{**AV_DIGITS_FEATURES.to_dict(), "normalize": "meanvar",
                                     "log_floor": 1e-12})  # fmt: skip
    loud, quiet = section_spectra(speech_like(), config), section_spectra(0.1 * speech_like(), config)
    np.testing.assert_allclose(loud, quiet, atol=1e-4)  # float32 logs of values ~1e-2..1e2, then /std
    plain = section_spectra(speech_like(), AV_DIGITS_FEATURES)
    plain = plain - section_spectra(0.1 * speech_like(), AV_DIGITS_FEATURES)
    assert np.abs(plain).max() > 1.0  # without it the gain shows (log 10 = 2.3 where the signal dominates)


def test_silence_stays_finite_and_the_defaults_are_unchanged() -> None:
    config = SectionFeatureConfig(**{**AV_DIGITS_FEATURES.to_dict(), "normalize": "meanvar"})
    silent = section_spectra(np.zeros(8000), config)
    # a constant band minus its float64 mean (50 summed copies of log(1e-3)): ~1e-15 · 50 · 6.9, then / floor
    np.testing.assert_allclose(silent, 0.0, atol=1e-9)
    defaults = SectionFeatureConfig()
    assert (defaults.frequency_scale, defaults.normalize, defaults.num_bins) == ("linear", "none", 220)
    # a record saved before these options existed loads with them off
    old = {k: v for k, v in AV_DIGITS_FEATURES.to_dict().items()
           if k not in ("frequency_scale", "mel_bands", "normalize", "norm_floor")}  # fmt: skip
    assert SectionFeatureConfig.from_dict(old) == AV_DIGITS_FEATURES
