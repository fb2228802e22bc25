"""Data augmentation for Image Transformer training (off by default).

Two kinds, applied to each training example of each update:

* on the waveform, before the features are computed (so the trainer keeps the training clips' samples):
  speed perturbation (resampling with :func:`sound2image.audio.resample`: a factor ``r`` plays the clip
  ``r`` times faster, shifting every frequency by ``r`` — tempo and pitch change together, as Kaldi's
  speed perturbation; the result is cropped or zero-padded back to the clip's length), time shift (a
  delay or advance by up to ``time_shift`` seconds, zero-filled: the FSDD clips start at different
  offsets), gain (up to ``± gain_db``) and white Gaussian noise at exactly ``noise_snr_db`` below the
  clip's mean power (with probability ``noise_prob``);
* on the features (SpecAugment, Park et al. 2019): ``time_masks`` runs of up to ``time_mask_width``
  sections and ``freq_masks`` runs of up to ``freq_mask_width`` bins set to a fill value (the training
  set's per-bin mean, i.e. 0 after the model's standardisation).

Every random draw of update ``step`` comes from ``numpy.random.default_rng([seed, step])``: the same run
seed gives the same augmentations, and a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from sound2image.audio.resample import resample
from sound2image.audio.sections import SectionFeatureConfig, section_spectra
from sound2image.errors import UsageError

#: Speed factors are drawn on this grid (keeps the resampler's rational ratios small and its filters cached).
SPEED_STEP = 0.01


@dataclass
class AugmentConfig:
    """Augmentation settings (all off by default); saved in the training config.

    Attributes:
        time_shift: largest shift in seconds; each clip is delayed (positive) or advanced by a whole
            number of samples drawn uniformly in ``[-time_shift, time_shift]``, zero-filled.
        gain_db: largest gain change in dB, drawn uniformly in ``[-gain_db, gain_db]``.
        noise_snr_db: add white Gaussian noise whose power is the clip's mean power divided by
            ``10 ** (noise_snr_db / 10)`` (the noise is scaled to that power exactly); None: no noise.
        noise_prob: share of clips that get noise (when ``noise_snr_db`` is set).
        speed: largest relative speed change; the factor is drawn uniformly from ``1 - speed .. 1 + speed``
            in steps of 0.01 (0.1: 0.90, 0.91, ..., 1.10).
        time_masks: SpecAugment time masks per example.
        time_mask_width: each time mask covers 0 .. ``time_mask_width`` sections (uniform).
        freq_masks: SpecAugment frequency masks per example.
        freq_mask_width: each frequency mask covers 0 .. ``freq_mask_width`` bins (uniform).
    """

    time_shift: float = 0.0
    gain_db: float = 0.0
    noise_snr_db: float | None = None
    noise_prob: float = 1.0
    speed: float = 0.0
    time_masks: int = 0
    time_mask_width: int = 0
    freq_masks: int = 0
    freq_mask_width: int = 0

    def check(self) -> None:
        """Raise a one-line UsageError naming the first bad setting."""
        for name in ("time_shift", "gain_db", "speed"):
            if getattr(self, name) < 0:
                raise UsageError(f"augment {name} must be >= 0, got {getattr(self, name)}", parameters=[name])
        if self.speed >= 1:
            raise UsageError(f"augment speed must be < 1, got {self.speed}", parameters=["speed"])
        if not 0.0 <= self.noise_prob <= 1.0:
            raise UsageError(
                f"augment noise_prob must be in [0, 1], got {self.noise_prob}", parameters=["noise_prob"]
            )
        for name in ("time_masks", "time_mask_width", "freq_masks", "freq_mask_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"augment {name} must be an integer >= 0, got {value!r}", parameters=[name])

    @property
    def on_waveform(self) -> bool:
        """Whether any waveform augmentation is on (the trainer then keeps the clips' samples)."""
        noise = self.noise_snr_db is not None and self.noise_prob > 0
        return self.time_shift > 0 or self.gain_db > 0 or noise or self.speed >= SPEED_STEP

    @property
    def on_features(self) -> bool:
        """Whether any SpecAugment mask is on."""
        return (self.time_masks > 0 and self.time_mask_width > 0) or (
            self.freq_masks > 0 and self.freq_mask_width > 0
        )

    @property
    def enabled(self) -> bool:
        return self.on_waveform or self.on_features

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of update ``step``'s draws (a function of the run seed and the step only)."""
    return np.random.default_rng([int(seed), int(step)])


def speed_factors(speed: float) -> np.ndarray:
    """The factors ``speed`` draws from: ``1 + k · 0.01`` for every integer k with ``|k · 0.01| <= speed``."""
    steps = int(np.floor(speed / SPEED_STEP + 1e-9))
    return 1.0 + SPEED_STEP * np.arange(-steps, steps + 1)


def change_speed(samples: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Play ``samples`` ``factor`` times faster (every frequency times ``factor``), same length.

    The clip is treated as recorded at ``round(sample_rate · factor)`` Hz and resampled to ``sample_rate``
    (:func:`sound2image.audio.resample`), then cropped at the end or zero-padded to ``len(samples)``.
    """
    source_rate = int(round(sample_rate * factor))
    out = resample(samples, source_rate, sample_rate)
    return _fit(out, samples.shape[-1])


def shift(samples: np.ndarray, offset: int) -> np.ndarray:
    """Delay (``offset > 0``) or advance (``offset < 0``) by ``|offset|`` samples; zero-filled, same
    length."""
    out = np.zeros_like(samples)
    n = samples.shape[-1]
    if offset >= 0:
        out[offset:] = samples[: max(n - offset, 0)]
    else:
        out[: max(n + offset, 0)] = samples[-offset:]
    return out


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``samples`` plus white Gaussian noise scaled so that ``mean(x²) / mean(noise²) == 10^(snr_db/10)``
    exactly; a silent clip is returned unchanged."""
    power = float(np.mean(np.square(samples, dtype=np.float64)))
    noise = rng.standard_normal(samples.shape)
    if power == 0.0:
        return samples
    noise *= np.sqrt(power / 10.0 ** (snr_db / 10.0) / np.mean(np.square(noise)))
    return (samples + noise).astype(samples.dtype)


def augment_waveform(
    samples: np.ndarray, sample_rate: int, config: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """One clip's waveform augmentations, in order: speed, time shift, gain, noise. Shape (n,) -> (n,).

    Each enabled option draws from ``rng`` (in that order); a disabled one draws nothing, so turning an
    option off leaves the others' draws as they are for the options before it.
    """
    out = np.asarray(samples, dtype=np.float32)
    if config.speed >= SPEED_STEP:
        factor = float(rng.choice(speed_factors(config.speed)))
        if factor != 1.0:
            out = change_speed(out, sample_rate, factor)
    if config.time_shift > 0:
        limit = int(round(config.time_shift * sample_rate))
        out = shift(out, int(rng.integers(-limit, limit + 1)))
    if config.gain_db > 0:
        out = out * np.float32(10.0 ** (rng.uniform(-config.gain_db, config.gain_db) / 20.0))
    if config.noise_snr_db is not None and config.noise_prob > 0 and rng.random() < config.noise_prob:
        out = add_noise(out, config.noise_snr_db, rng)
    return out.astype(np.float32, copy=False)


def mask_features(
    features: np.ndarray, config: AugmentConfig, rng: np.random.Generator, fill: np.ndarray | float = 0.0
) -> np.ndarray:
    """SpecAugment on one example's (num_sections, num_bins) features; masked cells get ``fill``
    (a scalar or a per-bin (num_bins,) vector). Time masks are drawn first, then frequency masks."""
    out = np.array(features, dtype=np.float32, copy=True)
    sections, bins = out.shape
    fill_row = np.broadcast_to(np.asarray(fill, dtype=np.float32), (bins,))
    if config.time_mask_width > 0:
        for _ in range(config.time_masks):
            width = int(rng.integers(0, min(config.time_mask_width, sections) + 1))
            start = int(rng.integers(0, sections - width + 1))
            out[start : start + width, :] = fill_row
    if config.freq_mask_width > 0:
        for _ in range(config.freq_masks):
            width = int(rng.integers(0, min(config.freq_mask_width, bins) + 1))
            start = int(rng.integers(0, bins - width + 1))
            out[:, start : start + width] = fill_row[start : start + width]
    return out


def augment_batch(
    features: torch.Tensor,
    samples: torch.Tensor | None,
    feature_config: SectionFeatureConfig,
    config: AugmentConfig,
    seed: int,
    step: int,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """The augmented features of one update's batch.

    Args:
        features: (B, num_sections, num_bins) the clips' pre-computed features (used as they are when no
            waveform augmentation is on).
        samples: (B, total_samples) the clips' samples (as
            :func:`~sound2image.audio.sections.load_for_features` gives them); needed when
            ``config.on_waveform``.
        feature_config: how samples become features.
        config: the augmentations.
        seed, step: the run seed and the update number (see :func:`step_rng`).
        fill: (num_bins,) value of masked cells; None: 0.

    Returns:
        (B, num_sections, num_bins) float32 on the CPU; ``features`` itself when nothing is enabled.
    """
    if not config.enabled:
        return features
    rng = step_rng(seed, step)
    rows = []
    fill_value = 0.0 if fill is None else fill.detach().cpu().numpy()
    for index in range(features.shape[0]):
        if config.on_waveform:
            if samples is None:
                raise ValueError("waveform augmentation needs the clips' samples")
            wave = augment_waveform(samples[index].numpy(), feature_config.sample_rate, config, rng)
            row = section_spectra(wave, feature_config)
        else:
            row = features[index].numpy()
        if config.on_features:
            row = mask_features(row, config, rng, fill_value)
        rows.append(row)
    return torch.from_numpy(np.stack(rows).astype(np.float32, copy=False))


def _fit(samples: np.ndarray, length: int) -> np.ndarray:
    if samples.shape[-1] >= length:
        return samples[..., :length]
    return np.pad(samples, [(0, 0)] * (samples.ndim - 1) + [(0, length - samples.shape[-1])])
