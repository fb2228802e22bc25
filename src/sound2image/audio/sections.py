"""FFT-section features for the Image Transformer (the paper's recipe, for any input).

The paper cuts 10 s of 22,050 Hz audio into 500 sections of 441 samples (20 ms, rectangular window,
no overlap) and keeps "220" FFT magnitudes per section. A real 441-point FFT has 221 one-sided bins
(k · 50 Hz for k = 0..220, no Nyquist bin because 441 is odd); 220 is ``441 // 2``, i.e. what
``abs(fft(section))[:441 // 2]`` returns: the DC bin up to 10,950 Hz, dropping the top (11,000 Hz)
bin. We keep exactly that: bins ``0 .. section_length // 2 - 1``.

Any file goes through :func:`sound2image.audio.load_audio`: resampled to ``sample_rate`` and fitted to
``duration`` with a :class:`LengthPolicy` (short clips zero-padded by default, long ones cropped from
the start). Options: log-magnitude (``log(|X| + log_floor)``) and per-dataset, per-bin
standardisation; the statistics are computed by the trainer and stored inside the model.

For the short av-digits clips (0.14-1.3 s at 8 kHz) padding to 10 s would make 95 % of every input
silence. :data:`AV_DIGITS_FEATURES` instead keeps the paper's 20 ms sections and 50 Hz bin spacing
at the clips' own rate: 8 kHz, 1 s, 50 sections × 80 bins (0-3,950 Hz).

Speaker-robust options (off by default, so the paper's recipe and saved models are unchanged):

* ``frequency_scale="mel"``: the kept FFT magnitudes are pooled by ``mel_bands`` triangular filters
  spaced evenly on the HTK mel scale (``mel = 2595 log10(1 + f / 700)``) from 0 Hz to the Nyquist
  frequency (:func:`mel_filterbank`); ``num_bins`` is then ``mel_bands``. With ``log_magnitude`` this is
  a log-mel spectrogram of magnitudes, ``log(W @ |X| + log_floor)``.
* ``normalize="mean"`` / ``"meanvar"``: per-utterance normalisation over time (cepstral mean /
  mean-variance normalisation, applied after the log): each band of a clip gets mean 0 (and variance 1,
  ``std`` floored at ``norm_floor``) over its sections. This removes a constant per-band offset, such as
  a speaker's or a microphone's spectral tilt and the clip's level.

The settings are saved with a model (its ``features`` record), so generation computes the same features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, BinaryIO

import numpy as np

from sound2image.errors import Sound2ImageError, UsageError

AudioSource = str | os.PathLike[str] | bytes | BinaryIO


@dataclass
class SectionFeatureConfig:
    """How audio becomes a (num_sections, num_bins) matrix. Defaults: the paper's 500 × 220.

    Attributes:
        sample_rate: audio is resampled to this rate first.
        duration: seconds of audio used (shorter clips per ``short``, longer ones cropped at the start).
        num_sections: equal, non-overlapping sections the ``duration`` is cut into.
        log_magnitude: use ``log(|X| + log_floor)`` instead of ``|X|``.
        log_floor: added before the log so that silence stays finite.
        standardize: the trainer computes per-bin mean/std on the training set and stores them.
        short: ``"pad"`` (zeros) or ``"loop"`` (the ADVANCE convention) for clips shorter than ``duration``.
        channel: the channel policy (:mod:`sound2image.audio.channels`): ``"mean"`` (down-mix, default),
            ``"first"`` (channel 0) or a channel index; applied at the file's rate, before resampling.
        frequency_scale: ``"linear"`` (the FFT bins, default) or ``"mel"`` (``mel_bands`` mel filters).
        mel_bands: number of mel filters when ``frequency_scale="mel"`` (every filter must cover at least
            one FFT bin; more bands are refused with a UsageError naming ``mel_bands``).
        normalize: ``"none"`` (default), ``"mean"`` or ``"meanvar"``: per-utterance normalisation of
            each band over the clip's sections (after the log).
        norm_floor: the smallest standard deviation ``"meanvar"`` divides by.
    """

    sample_rate: int = 22050
    duration: float = 10.0
    num_sections: int = 500
    log_magnitude: bool = False
    log_floor: float = 1e-3
    standardize: bool = True
    short: str = "pad"
    channel: str | int = "mean"
    frequency_scale: str = "linear"
    mel_bands: int = 40
    normalize: str = "none"
    norm_floor: float = 1e-3

    def __post_init__(self) -> None:
        if self.short not in ("pad", "loop"):
            raise UsageError(f"features: short must be 'pad' or 'loop', got {self.short!r}")
        from sound2image.audio.channels import check_channel

        self.channel = check_channel(self.channel, "features: channel")
        if self.section_length < 2:
            raise UsageError(
                f"features: {self.duration} s at {self.sample_rate} Hz is too short "
                f"for {self.num_sections} sections"
            )
        if self.frequency_scale not in FREQUENCY_SCALES:
            raise UsageError(
                f"features: frequency_scale must be linear or mel, got {self.frequency_scale!r}",
                parameters=["frequency_scale"],
            )
        if self.normalize not in NORMALIZATIONS:
            raise UsageError(
                f"features: normalize must be none, mean or meanvar, got {self.normalize!r}",
                parameters=["normalize"],
            )
        if self.norm_floor <= 0:
            raise UsageError(
                f"features: norm_floor must be positive, got {self.norm_floor}", parameters=["norm_floor"]
            )
        if self.frequency_scale == "mel":
            if isinstance(self.mel_bands, bool) or not isinstance(self.mel_bands, int) or self.mel_bands < 1:
                raise UsageError(
                    f"features: mel_bands must be a positive integer, got {self.mel_bands!r}",
                    parameters=["mel_bands"],
                )
            weights = mel_filterbank(self.mel_bands, self.fft_bins, self.sample_rate / self.section_length,
                                     self.sample_rate / 2)  # fmt: skip
            empty = np.flatnonzero(weights.sum(axis=1) == 0)
            if empty.size:
                raise UsageError(
                    f"features: {self.mel_bands} mel bands are too many for {self.fft_bins} FFT bins "
                    f"{self.sample_rate / self.section_length:g} Hz apart (band {int(empty[0])} covers no "
                    "bin); use fewer mel_bands or longer sections",
                    parameters=["mel_bands"],
                )

    @property
    def total_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def section_length(self) -> int:
        """Samples per section (441 for the paper's setting)."""
        return self.total_samples // self.num_sections

    @property
    def fft_bins(self) -> int:
        """FFT magnitudes kept per section: ``section_length // 2`` (220 for the paper's setting)."""
        return self.section_length // 2

    @property
    def num_bins(self) -> int:
        """Features per section: ``fft_bins`` (linear scale) or ``mel_bands`` (mel scale)."""
        return self.mel_bands if self.frequency_scale == "mel" else self.fft_bins

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SectionFeatureConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


FREQUENCY_SCALES = ("linear", "mel")
NORMALIZATIONS = ("none", "mean", "meanvar")


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + f / 700)`` (O'Shaughnessy 1987; the HTK Book's definition)."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(num_bands: int, num_bins: int, bin_hz: float, high_hz: float) -> np.ndarray:
    """Triangular mel filters over FFT bins ``k · bin_hz`` (k = 0 .. num_bins - 1): (num_bands, num_bins).

    ``num_bands + 2`` edges are spaced evenly in mel from 0 Hz to ``high_hz``; filter ``b`` rises linearly
    (in Hz) from edge ``b`` to 1 at edge ``b + 1`` and falls to 0 at edge ``b + 2`` (peak 1, no area
    normalisation: the HTK convention).
    """
    edges = mel_to_hz(np.linspace(0.0, float(hz_to_mel(high_hz)), num_bands + 2))  # (num_bands + 2,)
    freqs = np.arange(num_bins, dtype=np.float64) * bin_hz  # (num_bins,)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - left) / (center - left)
    falling = (right - freqs[None, :]) / (right - center)
    return np.maximum(0.0, np.minimum(rising, falling))


#: The paper's setting: 10 s at 22,050 Hz -> 500 sections × 220 bins.
PAPER_FEATURES = SectionFeatureConfig()
#: av-digits: the same 20 ms sections and 50 Hz bins at 8 kHz over 1 s -> 50 × 80, log-magnitude.
AV_DIGITS_FEATURES = SectionFeatureConfig(sample_rate=8000, duration=1.0, num_sections=50, log_magnitude=True)


def section_spectra(samples: np.ndarray, config: SectionFeatureConfig) -> np.ndarray:
    """Mono ``samples`` of exactly ``config.total_samples`` -> (num_sections, num_bins) float32 features."""
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {samples.shape}")
    used = config.num_sections * config.section_length
    if samples.shape[0] < used:
        samples = np.pad(samples, (0, used - samples.shape[0]))
    sections = samples[:used].astype(np.float64).reshape(config.num_sections, config.section_length)
    magnitude = np.abs(np.fft.rfft(sections, axis=1))[:, : config.fft_bins]  # (num_sections, fft_bins)
    if config.frequency_scale == "mel":
        weights = _mel_weights(config.mel_bands, config.fft_bins, config.sample_rate, config.section_length)
        magnitude = magnitude @ weights.T  # (num_sections, mel_bands)
    if config.log_magnitude:
        magnitude = np.log(magnitude + config.log_floor)
    return normalize_over_time(magnitude, config.normalize, config.norm_floor).astype(np.float32)


def normalize_over_time(features: np.ndarray, mode: str, floor: float = 1e-3) -> np.ndarray:
    """Per-utterance normalisation of (..., num_sections, bins) features over the sections axis.

    ``"none"``: unchanged; ``"mean"``: each band minus its mean over time; ``"meanvar"``: then divided
    by its standard deviation over time (at least ``floor``, so a constant band stays finite).
    """
    if mode == "none":
        return features
    centred = features - features.mean(axis=-2, keepdims=True)
    if mode == "mean":
        return centred
    return centred / np.maximum(features.std(axis=-2, keepdims=True), floor)


@lru_cache(maxsize=16)
def _mel_weights(num_bands: int, num_bins: int, sample_rate: int, section_length: int) -> np.ndarray:
    return mel_filterbank(num_bands, num_bins, sample_rate / section_length, sample_rate / 2)


def load_for_features(source: AudioSource, config: SectionFeatureConfig, name: str | None = None) -> Any:
    """The :class:`~sound2image.audio.AudioClip` the features are computed from: one signal chosen by
    ``config.channel`` (default: the mean of the channels, as ``load_audio(mono=True)``), resampled to
    ``config.sample_rate``, fitted to ``config.duration`` (short: pad or loop; long: crop at the start).

    The steps and their order are :func:`~sound2image.audio.load_audio`'s (channels, resample, length).

    Warns:
        SilentChannelWarning: the chosen channel (or the mean) is silent while another channel is not.
    """
    import dataclasses

    from sound2image.audio import LengthPolicy, apply_length, load_audio, resample
    from sound2image.audio.channels import select_channel
    from sound2image.audio.length import target_frames

    clip = load_audio(source, None, mono=False, max_duration=None, name=name)  # (channels, n)
    samples = select_channel(clip.samples, config.channel, clip.name)  # (n,)
    samples = resample(samples, clip.sample_rate, config.sample_rate)
    policy = LengthPolicy(short=config.short, long="crop", crop="start")
    samples, action = apply_length(samples, target_frames(config.duration, config.sample_rate), policy)
    return dataclasses.replace(
        clip,
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=config.sample_rate,
        length_action=action,
    )


def compute_section_features(
    source: AudioSource, config: SectionFeatureConfig, name: str | None = None
) -> np.ndarray:
    """Load any audio file/buffer and return its (num_sections, num_bins) features."""
    clip = load_for_features(source, config, name)
    return section_spectra(np.asarray(clip.samples, dtype=np.float32), config)


def compute_many(
    sources: Sequence[AudioSource], config: SectionFeatureConfig, progress: bool = False
) -> tuple[np.ndarray, list[int], list[str]]:
    """Features for many files; bad files are reported, not fatal.

    Returns:
        ``(features, ok, problems)``: features (n_ok, num_sections, num_bins) for the sources at
        indices ``ok``, and one line per source that could not be used.
    """
    from tqdm.auto import tqdm

    rows: list[np.ndarray] = []
    ok: list[int] = []
    problems: list[str] = []
    for index, source in enumerate(tqdm(sources, disable=not progress, desc="audio features", leave=False)):
        try:
            rows.append(compute_section_features(source, config))
            ok.append(index)
        except Sound2ImageError as error:
            problems.append(str(error))
    empty = np.zeros((0, config.num_sections, config.num_bins), dtype=np.float32)
    return (np.stack(rows) if rows else empty), ok, problems


def feature_statistics(features: np.ndarray, min_std: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and standard deviation over every section of every clip: (F,), (F,)."""
    if features.ndim != 3 or features.shape[0] == 0:
        raise ValueError(f"expected (clips, sections, bins) features, got {features.shape}")
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)  # (clips · sections, F)
    return flat.mean(axis=0).astype(np.float32), np.maximum(flat.std(axis=0), min_std).astype(np.float32)
