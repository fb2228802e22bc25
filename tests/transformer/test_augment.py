"""Training augmentation: each option changes the samples/features as specified; off = unchanged;
deterministic given (seed, step); the trainer uses it and a resumed augmented run stays bit-identical."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sound2image.audio.sections import SectionFeatureConfig, section_spectra
from sound2image.errors import UsageError
from sound2image.training import augment as aug
from sound2image.training.augment import AugmentConfig, augment_batch, augment_waveform, step_rng
from tests.transformer.test_training import FEATURES, make_dataset, tiny_run

RATE = 8000


def tone(freq: float, n: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * math.pi * freq * np.arange(n) / RATE)).astype(np.float32)


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * RATE / len(samples))


def test_shift_delays_or_advances_by_whole_samples_zero_filled() -> None:
    x = np.arange(1, 11, dtype=np.float32)
    assert aug.shift(x, 3).tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    assert aug.shift(x, -2).tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 0, 0]
    assert aug.shift(x, 0).tolist() == x.tolist() and aug.shift(x, 12).tolist() == [0] * 10


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_multiplies_every_frequency_and_keeps_the_length(factor) -> None:
    out = aug.change_speed(tone(400.0), RATE, factor)
    assert out.shape == (RATE,)
    # 1 s analysed -> 1 Hz bins; the tone moves from 400 Hz to 400 · factor
    assert peak_hz(out[: int(RATE / max(factor, 1.0)) - 50]) == pytest.approx(400.0 * factor, abs=2.0)
    if factor > 1:  # a faster clip is ceil(8000 / 1.1) = 7273 samples long, then zero-padded
        assert np.all(out[7273:] == 0) and np.abs(out[7000:7200]).max() > 0.1


@pytest.mark.numeric
@pytest.mark.parametrize("snr_db", [0.0, 20.0])
def test_noise_is_added_at_exactly_the_given_snr(snr_db) -> None:
    x = tone(300.0)
    noisy = aug.add_noise(x, snr_db, np.random.default_rng(0))
    noise = noisy.astype(np.float64) - x
    measured = 10 * math.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=1e-4)  # float32 rounding of the sum: ~1e-7 relative
    assert np.array_equal(
        aug.add_noise(np.zeros(10, np.float32), snr_db, np.random.default_rng(0)), np.zeros(10)
    )


def test_gain_is_a_constant_factor_within_the_range() -> None:
    x = tone(300.0)
    config = AugmentConfig(gain_db=6.0)
    out = augment_waveform(x, RATE, config, step_rng(1, 5))
    ratio = out[x != 0] / x[x != 0]
    assert np.allclose(ratio, ratio[0], rtol=1e-6)  # float32 products
    # the factor is 10^(u/20) with u the step's first uniform draw in [-6, 6] dB
    expected = 10 ** (step_rng(1, 5).uniform(-6.0, 6.0) / 20)
    assert ratio[0] == pytest.approx(expected, rel=1e-6) and 10 ** (-6 / 20) <= ratio[0] <= 10 ** (6 / 20)


def test_time_shift_is_a_whole_sample_shift_within_the_limit() -> None:
    x = tone(300.0) * np.linspace(0, 1, RATE, dtype=np.float32)  # not shift-invariant
    config = AugmentConfig(time_shift=0.1)
    offsets = []
    for step in range(6):
        out = augment_waveform(x, RATE, config, step_rng(0, step))
        matches = [k for k in range(-800, 801) if np.array_equal(out, aug.shift(x, k))]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 1  # the offset varies with the step


def test_speed_factors_lie_on_the_grid() -> None:
    assert np.allclose(
        aug.speed_factors(0.05), [0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03, 1.04, 1.05]
    )


def test_masks_set_whole_runs_of_sections_and_bins_to_the_fill() -> None:
    features = np.arange(1, 8 * 64 + 1, dtype=np.float32).reshape(8, 64)  # all distinct, none equal to fill
    fill = np.full(64, -7.0, dtype=np.float32)
    config = AugmentConfig(time_masks=1, time_mask_width=3, freq_masks=2, freq_mask_width=10)
    seen_masked = False
    for step in range(10):
        out = aug.mask_features(features, config, step_rng(3, step), fill)
        masked = out != features
        assert np.all(out[masked] == -7.0)
        rows = np.flatnonzero(masked.all(axis=1))  # fully masked sections: one contiguous run, <= 3
        cols = np.flatnonzero(masked.all(axis=0))  # fully masked bins: at most 2 runs of <= 10
        assert len(rows) <= 3 and (len(rows) == 0 or rows[-1] - rows[0] == len(rows) - 1)
        assert len(cols) <= 20
        # every masked cell lies in a masked row or a masked column
        assert np.array_equal(masked, masked.all(axis=1)[:, None] | masked.all(axis=0)[None, :])
        seen_masked |= bool(masked.any())
    assert seen_masked


def test_off_is_unchanged_and_on_is_deterministic_per_step() -> None:
    features = torch.randn(3, 8, 64)
    samples = torch.from_numpy(np.stack([tone(f, 1024) for f in (500.0, 1200.0, 1900.0)]))
    assert augment_batch(features, samples, FEATURES, AugmentConfig(), 0, 0) is features
    config = AugmentConfig(gain_db=3.0, noise_snr_db=10.0, time_shift=0.01, speed=0.05, time_masks=1,
                           time_mask_width=2)  # fmt: skip
    a = augment_batch(features, samples, FEATURES, config, seed=4, step=7)
    assert torch.equal(a, augment_batch(features, samples, FEATURES, config, seed=4, step=7))
    assert not torch.equal(a, augment_batch(features, samples, FEATURES, config, seed=4, step=8))
    # waveform options recompute the features from the samples: an un-augmented clip gives its features
    clean = torch.from_numpy(np.stack([section_spectra(s.numpy(), FEATURES) for s in samples]))
    masks_only = AugmentConfig(time_masks=1, time_mask_width=2)
    out = augment_batch(clean, None, FEATURES, masks_only, seed=4, step=7)
    assert torch.equal(out[out != clean], torch.zeros_like(out[out != clean]))  # fill defaults to 0


@pytest.mark.parametrize(
    ("settings", "parameter"),
    [({"speed": 1.0}, "speed"), ({"gain_db": -1.0}, "gain_db"), ({"noise_prob": 2.0}, "noise_prob"),
     ({"time_masks": -1}, "time_masks")],
)  # fmt: skip
def test_bad_settings_name_the_parameter(settings, parameter) -> None:
    with pytest.raises(UsageError) as error:
        AugmentConfig(**settings).check()
    assert error.value.parameters == (parameter,)


AUGMENT = AugmentConfig(gain_db=6.0, noise_snr_db=10.0, time_shift=0.005, time_masks=1, time_mask_width=2,
                        freq_masks=1, freq_mask_width=8)  # fmt: skip


@pytest.mark.numeric
def test_the_trainer_feeds_augmented_features_and_resumes_exactly(tmp_path, monkeypatch) -> None:
    import sound2image.training.transformer as trainer
    from sound2image.training.transformer import train_transformer
    from sound2image.transformer import ImageTransformer

    make_dataset(tmp_path, count=3)
    calls = []

    def spy(features, samples, feature_config, config, seed, step, fill=None):
        out = augment_batch(features, samples, feature_config, config, seed, step, fill)
        calls.append((step, samples, features, out))
        return out

    monkeypatch.setattr(trainer, "augment_batch", spy)
    plain = tiny_run(tmp_path, tmp_path / "plain", max_steps=4)
    train_transformer(plain)
    assert calls == []  # off: never called
    config = dataclasses.replace(tiny_run(tmp_path, tmp_path / "run", max_steps=12, checkpoint_every=6),
                                 augment=AUGMENT)  # fmt: skip
    train_transformer(config)
    assert [c[0] for c in calls] == list(range(12))
    step, samples, features, out = calls[0]
    # the clips' samples are kept (1,024 = 0.128 s at 8 kHz) and the features the model saw differ
    assert samples is not None and samples.shape == (3, 1024) and not torch.equal(out, features)
    straight = ImageTransformer.from_pretrained(tmp_path / "run" / "model").state_dict()
    train_transformer(
        dataclasses.replace(config, resume=str(tmp_path / "run" / "checkpoints" / "checkpoint-6"))
    )
    assert [c[0] for c in calls[12:]] == list(range(6, 12))
    for (_, _, _, first), (_, _, _, again) in zip(calls[6:12], calls[12:], strict=True):
        assert torch.equal(first, again)
    resumed = ImageTransformer.from_pretrained(tmp_path / "run" / "model").state_dict()
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


def test_the_saved_model_records_the_robust_features(tmp_path) -> None:
    from sound2image.training.transformer import train_transformer
    from sound2image.transformer import ImageTransformer
    from sound2image.transformer.runner import feature_config
    from tests.transformer.tiny import tiny_config

    make_dataset(tmp_path, count=2)
    features = SectionFeatureConfig(sample_rate=8000, duration=0.128, num_sections=8, log_magnitude=True,
                                    frequency_scale="mel", mel_bands=12, normalize="meanvar")  # fmt: skip
    config = dataclasses.replace(
        tiny_run(tmp_path, tmp_path / "run", max_steps=2),
        features=features,
        model=tiny_config(audio_sections=8, audio_bins=12, d_model=32),
        augment=AugmentConfig(speed=0.05),
    )
    train_transformer(config)
    model = ImageTransformer.from_pretrained(tmp_path / "run" / "model")
    assert feature_config(model) == features  # generation computes the same features


def test_cli_flags_and_the_robust_preset(tmp_path, monkeypatch) -> None:
    from sound2image.cli.main import main

    seen = {}

    def fake(config):
        seen["config"] = config
        return SimpleNamespace(problems=[], val_bpp=None, steps=0, elapsed_s=0.0, train_loss=0.0,
                               model_dir=tmp_path / "model")  # fmt: skip

    monkeypatch.setattr("sound2image.training.transformer.train_transformer", fake)
    base = ["train", "transformer", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*base, "--preset", "av-digits-robust", "--split-by", "speaker", "--holdout", "jackson",
                 "--speed", "0.05", "--mel-bands", "32"]) == 0  # fmt: skip
    config = seen["config"]
    assert (config.split_by, config.holdout) == ("speaker", ["jackson"])
    assert config.augment == AugmentConfig(speed=0.05)  # the preset has none: only the flag's
    f = config.features
    assert (f.frequency_scale, f.mel_bands, f.normalize, f.num_bins) == ("mel", 32, "meanvar", 32)
    assert (config.model.audio_sections, config.model.audio_bins) == (50, 32)
    assert config.model.embedding_dim == config.reranker.embed_dim  # the utterance embedding is on
    assert config.reranker.label_positives  # and the scorer counts same-label pairs as matches
    assert main([*base, "--preset", "av-digits-robust", "--no-scorer-labels"]) == 0
    assert not seen["config"].reranker.label_positives and seen["config"].model.embedding_dim > 0
    assert main([*base, "--preset", "av-digits-robust", "--normalize", "none"]) == 0
    assert not seen["config"].augment.enabled and seen["config"].features.normalize == "none"
    assert main([*base, "--preset", "av-digits-robust", "--gain-db", "3", "--no-augment"]) == 0
    assert seen["config"].augment == AugmentConfig(gain_db=3.0)  # --no-augment clears, flags still add
    assert main([*base, "--preset", "av-digits-robust", "--no-utterance-embedding"]) == 0
    assert seen["config"].model.embedding_dim == 0 and seen["config"].reranker is not None
    assert main([*base, "--preset", "av-digits"]) == 0
    assert not seen["config"].augment.enabled and seen["config"].features.frequency_scale == "linear"
    assert seen["config"].model.embedding_dim == 0
