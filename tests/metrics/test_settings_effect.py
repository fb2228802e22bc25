"""Every classifier setting is tested where it takes effect (issue #11 F): `train classifier`'s flags give
the weights the library gives for the same config, and each ClassifierConfig field drives the training."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file

from sound2image.cli.main import main
from sound2image.metrics import ClassifierConfig, ImageClassifier, load_labelled_images
from sound2image.training.classifier import train_classifier
from tests.metrics.test_classifier import bars

pytestmark = pytest.mark.numeric


def write_dataset(root: Path, count: int = 30) -> None:
    images, labels = bars(count, seed=3)
    rows = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image, mode="L").save(root / f"img{index}.png")
        sf.write(root / f"snd{index}.wav", 0.1 * np.sin(np.arange(800) * (index + 1) / 10), 8000)
        rows.append({"audio": f"snd{index}.wav", "image": f"img{index}.png", "label": label})
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)


def test_train_classifier_flags_give_the_library_result_for_the_same_config(tmp_path: Path) -> None:
    """--epochs/--batch-size/--lr/--image-size/--val-fraction/--seed, none at its default: the saved
    weights equal train_classifier's on the same split with the same config, and differ from the
    defaults' (so a flag that is dropped cannot pass)."""
    from sound2image.data import scan_pairs, split_pairs

    write_dataset(tmp_path)
    out = tmp_path / "judge"
    flags = ["--epochs", "2", "--batch-size", "8", "--lr", "5e-3", "--image-size", "8"]
    flags += ["--val-fraction", "0.2", "--seed", "5"]
    assert main(["train", "classifier", "--data", str(tmp_path), "--out", str(out), *flags]) == 0

    split = split_pairs(scan_pairs(str(tmp_path)).pairs, 0.2, 5)
    train_x, train_y, _ = load_labelled_images(split.train, 8)
    assert train_x.shape[1:] == (8, 8)
    config = ClassifierConfig(epochs=2, batch_size=8, lr=5e-3, seed=5)
    reference = train_classifier(train_x, train_y, config).model.state_dict()
    saved = load_file(str(out / "model.safetensors"))
    for key, value in reference.items():  # the same ops in the same order: equal to float32 rounding
        torch.testing.assert_close(saved[key], value, msg=key)

    record = json.loads((out / "config.json").read_text())["model"]
    assert (record["epochs"], record["batch_size"], record["lr"], record["seed"], record["image_size"]) == (
        2, 8, 5e-3, 5, 8,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["val_images"]) == (len(split.train), len(split.val))
    assert len(split.val) > 0
    # the defaults (20 epochs, batch 64, lr 2e-3, seed 42) would have trained something else
    default_split = split_pairs(scan_pairs(str(tmp_path)).pairs, 0.1, 42)
    default_x, default_y, _ = load_labelled_images(default_split.train, 8)
    other = train_classifier(default_x, default_y, ClassifierConfig(epochs=2)).model.state_dict()
    assert not all(torch.equal(saved[key], other[key]) for key in other)


def test_train_classifier_overwrite_replaces_the_judge(tmp_path: Path) -> None:
    write_dataset(tmp_path, count=12)
    out = tmp_path / "judge"
    args = [
        "train",
        "classifier",
        "--data",
        str(tmp_path),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--image-size",
        "8",
    ]
    assert main([*args, "--seed", "1"]) == 0
    first = (out / "model.safetensors").read_bytes()
    assert main([*args, "--seed", "2"]) == 2  # refused without --overwrite, and nothing changed
    assert (out / "model.safetensors").read_bytes() == first
    assert main([*args, "--seed", "2", "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() != first
    assert json.loads((out / "config.json").read_text())["model"]["seed"] == 2


@pytest.fixture
def optimizer_steps(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[float, float]]]:
    """Every optimiser step's (lr, weight decay) per parameter group of the AdamW the trainer builds."""
    steps: list[list[tuple[float, float]]] = []
    real = torch.optim.AdamW

    def adamw(*args: Any, **kwargs: Any) -> torch.optim.AdamW:
        optimizer = real(*args, **kwargs)
        optimizer.register_step_pre_hook(
            lambda opt, *_: steps.append([(g["lr"], g["weight_decay"]) for g in opt.param_groups])
        )
        return optimizer

    monkeypatch.setattr(torch.optim, "AdamW", adamw)
    return steps


def test_classifier_config_drives_the_optimiser(optimizer_steps: list[list[tuple[float, float]]]) -> None:
    """epochs × ceil(N / batch) steps; warm-up over half an epoch, cosine from lr to lr / 50, by hand;
    weight_decay as given; width sets the channels; image_size is the images'."""
    images, labels = bars(20, seed=0)
    config = ClassifierConfig(epochs=3, batch_size=6, lr=4e-3, weight_decay=0.07, width=4, seed=1)
    judge = train_classifier(images, labels, config)
    per_epoch = math.ceil(20 / 6)  # the last, partial batch is used
    total = 3 * per_epoch
    assert len(optimizer_steps) == total
    for step, groups in enumerate(optimizer_steps):
        warm = min(1.0, (step + 1) / (per_epoch // 2))
        floor = 4e-3 / 50
        lr = warm * (floor + 0.5 * (4e-3 - floor) * (1 + math.cos(math.pi * step / total)))
        assert groups == [(pytest.approx(lr, rel=1e-12), 0.07)], step
    assert judge.model.features[0][0].out_channels == 4 and judge.model.head[-1].in_features == 16
    assert judge.config.image_size == 16 and judge.config.classes == ["horizontal", "vertical"]


@pytest.mark.parametrize("change", [{"seed": 2}, {"max_shift": 0}, {"batch_size": 5}, {"lr": 1e-2}])
def test_each_classifier_setting_changes_the_weights(change: dict[str, Any]) -> None:
    images, labels = bars(20, seed=0)
    base = ClassifierConfig(epochs=1, batch_size=8, width=4, seed=1)
    first = train_classifier(images, labels, base).model.state_dict()
    again = train_classifier(images, labels, dataclasses.replace(base)).model.state_dict()
    changed = train_classifier(images, labels, dataclasses.replace(base, **change)).model.state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)  # seeded: only the change matters
    assert not all(torch.equal(first[key], changed[key]) for key in first)


def test_classifier_weights_do_not_depend_on_the_global_random_stream() -> None:
    images, labels = bars(12, seed=0)
    config = ClassifierConfig(epochs=1, batch_size=4, width=4, seed=3)
    torch.manual_seed(10)
    first = train_classifier(images, labels, config).model.state_dict()
    torch.manual_seed(11)
    _ = torch.rand(5)
    second = train_classifier(images, labels, config).model.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    # ... and the caller's stream is where it was: training neither reseeds nor advances it.
    torch.manual_seed(12)
    before = torch.random.get_rng_state()
    train_classifier(images, labels, config)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_predict_batch_size_does_not_change_predictions() -> None:
    images, labels = bars(24, seed=0)
    judge = train_classifier(images, labels, ClassifierConfig(epochs=2, batch_size=8, width=4))
    assert isinstance(judge, ImageClassifier)
    assert judge.predict(images, batch_size=5) == judge.predict(images, batch_size=256)
