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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
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
    """

    sample_rate: int = 22050
    duration: float = 10.0
    num_sections: int = 500
    log_magnitude: bool = False
    log_floor: float = 1e-3
    standardize: bool = True
    short: str = "pad"
    channel: str | int = "mean"

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

    @property
    def total_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def section_length(self) -> int:
        """Samples per section (441 for the paper's setting)."""
        return self.total_samples // self.num_sections

    @property
    def num_bins(self) -> int:
        """FFT magnitudes kept per section: ``section_length // 2`` (220 for the paper's setting)."""
        return self.section_length // 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SectionFeatureConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


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
    magnitude = np.abs(np.fft.rfft(sections, axis=1))[:, : config.num_bins]  # (num_sections, num_bins)
    if config.log_magnitude:
        magnitude = np.log(magnitude + config.log_floor)
    return magnitude.astype(np.float32)


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
