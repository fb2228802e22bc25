"""Training: a tiny model learns a handful of pairs by heart; schedules; resume; image preparation."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from sound2image.audio.sections import SectionFeatureConfig
from sound2image.data import prepare_image
from sound2image.training.schedules import run_progress, warmup_cosine
from sound2image.training.transformer import TransformerTrainConfig, train_transformer
from sound2image.transformer import ImageTransformer, SamplingConfig, generate
from tests.transformer.tiny import tiny_config

pytestmark = pytest.mark.numeric
FEATURES = SectionFeatureConfig(
    sample_rate=8000, duration=0.128, num_sections=8, log_magnitude=True
)  # 8 × 64


def make_dataset(root: Path, count: int = 4) -> list[np.ndarray]:
    """``count`` pairs: a tone at its own pitch -> its own 8×8 image (top half one grey level, bottom
    half another, the levels differing from pair to pair)."""
    y, _ = np.mgrid[:8, :8]
    rows, images = [], []
    for index in range(count):
        t = np.arange(1024) / 8000
        sf.write(root / f"tone{index}.wav", 0.5 * np.sin(2 * math.pi * (500 + 700 * index) * t), 8000)
        pattern = np.where(y < 4, 20 + 60 * index, 240 - 60 * index).astype(np.uint8)
        Image.fromarray(pattern, mode="L").save(root / f"image{index}.png")
        rows.append({"audio": f"tone{index}.wav", "image": f"image{index}.png", "label": str(index)})
        images.append(pattern)
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return images


def tiny_run(data: Path, out: Path, **overrides: object) -> TransformerTrainConfig:
    model = tiny_config(audio_sections=8, audio_bins=64, d_model=48)
    values = dict(
        data=str(data),
        output_dir=str(out),
        val_fraction=0.0,
        features=FEATURES,
        model=model,
        batch_size=4,
        max_steps=150,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=10,
        weight_decay=0.0,
        eval_every=1000,
        checkpoint_every=1000,
        num_sample_images=0,
        progress=False,
    )
    values.update(overrides)
    return TransformerTrainConfig(**values)


def test_overfits_a_handful_of_pairs(tmp_path) -> None:
    images = make_dataset(tmp_path)
    result = train_transformer(tiny_run(tmp_path, tmp_path / "run"))
    model = ImageTransformer.from_pretrained(result.model_dir)
    record = model.saved_metadata
    assert record["features"]["num_sections"] == 8 and record["classes"] == ["0", "1", "2", "3"]
    from sound2image.audio.sections import compute_section_features

    audio = torch.stack(
        [torch.from_numpy(compute_section_features(tmp_path / f"tone{i}.wav", FEATURES)) for i in range(4)]
    )
    tokens = generate(model, audio, SamplingConfig(temperature=0.0))
    for index, pattern in enumerate(images):
        # each tone reproduces *its own* image: the audio is used, not one memorised picture
        assert np.array_equal(tokens[index].reshape(8, 8).numpy(), pattern), f"pair {index}"
    assert result.train_loss < 0.1


def test_resume_continues_exactly(tmp_path) -> None:
    make_dataset(tmp_path, count=3)
    config = tiny_run(tmp_path, tmp_path / "run", max_steps=12, checkpoint_every=6)
    train_transformer(config)
    straight = ImageTransformer.from_pretrained(tmp_path / "run" / "model").state_dict()
    resumed = train_transformer(
        dataclasses.replace(config, resume=str(tmp_path / "run" / "checkpoints" / "checkpoint-6"))
    )
    assert resumed.steps == 12
    again = ImageTransformer.from_pretrained(tmp_path / "run" / "model").state_dict()
    for key, value in straight.items():
        torch.testing.assert_close(again[key], value, msg=key)


def test_warmup_cosine_by_hand() -> None:
    assert warmup_cosine(0, 0.0, 10, 1e-3, 1e-5) == pytest.approx(1e-4)  # first of 10 warm-up steps
    assert warmup_cosine(9, 0.0, 10, 1e-3, 1e-5) == pytest.approx(1e-3)
    assert warmup_cosine(500, 0.5, 10, 1e-3, 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert warmup_cosine(900, 1.0, 10, 1e-3, 1e-5) == pytest.approx(1e-5)
    assert warmup_cosine(900, 1.7, 10, 1e-3, 1e-5) == pytest.approx(1e-5)  # flat after the end


def test_progress_is_the_larger_of_steps_and_time() -> None:
    assert run_progress(50, 100) == 0.5
    assert run_progress(10, 100, elapsed_s=450, max_seconds=600) == 0.75
    assert run_progress(10, None, elapsed_s=900, max_seconds=600) == 1.0


def test_prepare_image_pads_digits_and_shrinks_photos() -> None:
    digit = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    padded = prepare_image(Image.fromarray(digit), 32)
    assert padded.shape == (32, 32)
    assert np.array_equal(padded[2:30, 2:30], digit)
    assert padded[:2].max() == 0 and padded[30:].max() == 0 and padded[:, :2].max() == 0
    # 512×512 of four flat quadrants -> 32×32 with the same quadrants (area averaging keeps them exact)
    photo = np.zeros((512, 512), dtype=np.uint8)
    photo[:256, 256:] = 200
    photo[256:, :256] = 100
    small = prepare_image(Image.fromarray(photo).convert("RGB"), 32)
    assert small[:16, :16].max() == 0 and np.all(small[:16, 16:] == 200) and np.all(small[16:, :16] == 100)
