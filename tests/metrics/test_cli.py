"""`sound2image train classifier` on a small labelled dataset written in a temporary folder."""

from __future__ import annotations

import csv
import json

import numpy as np
import soundfile as sf
from PIL import Image

from sound2image.cli.main import main
from tests.metrics.test_classifier import bars


def test_train_classifier_command(tmp_path, capsys) -> None:
    images, labels = bars(40, seed=3)
    rows = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image, mode="L").save(tmp_path / f"img{index}.png")
        sf.write(tmp_path / f"snd{index}.wav", 0.1 * np.sin(np.arange(800) * (index + 1) / 10), 8000)
        rows.append({"audio": f"snd{index}.wav", "image": f"img{index}.png", "label": label})
    with open(tmp_path / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "judge"
    args = [
        "train",
        "classifier",
        "--data",
        str(tmp_path),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--image-size",
        "16",
    ]
    assert main(args) == 0
    assert "held-out real images" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] + metrics["val_images"] == 40
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert main(args) == 2  # refuses to replace it without --overwrite
    assert "already exists" in capsys.readouterr().err
