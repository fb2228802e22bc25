"""`sound2image evaluate`'s AIC equals the number `bench/av_digits.py` reports for the same model, classifier,
validation recordings and seed (issue 13's acceptance point).

Both draw every recording's image seeded with the seed on its own generator; the bench judges the
images in memory, evaluate from the PNGs it cached, each with the same classifier. The model is a tiny
random Image Transformer with the av-digits preset's features (32×32 images), so the test needs no
training; the classifier is an untrained SmallCNN (any fixed judge will do: the claim is that both
count the same hits).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.paths import PROJECT_ROOT as ROOT

pytestmark = pytest.mark.slow


def _manifest(shared_data: Path, folder: Path, per_digit: int = 10) -> Path:
    """The first ``per_digit`` av-digits pairs of each digit (100 pairs: 10 in the grouped val split)."""
    source = shared_data / "av-digits" / "pairs.csv"
    with source.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [r for d in range(10) for r in [row for row in rows if row["label"] == str(d)][:per_digit]]
    manifest = folder / "pairs.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in kept:  # absolute paths: the manifest lives in tmp_path, the data in shared/
            row = dict(row)
            row["audio"] = str(source.parent / row["audio"])
            row["image"] = str(source.parent / row["image"])
            writer.writerow(row)
    return manifest


def _model_dir(run: Path) -> Path:
    from sound2image.training.transformer import AV_DIGITS_FEATURES
    from tests.transformer.tiny import tiny_model

    features = AV_DIGITS_FEATURES
    model = tiny_model(
        seed=3,
        image_size=32,
        audio_sections=features.num_sections,
        audio_bins=features.num_bins,
        query_block=32,
        memory_length=32,
    )
    with torch.no_grad():  # peaked pixel distributions, so the images differ in structure from sound to sound
        model.head.weight.mul_(40.0)
    classes = [str(d) for d in range(10)]
    return model.save_pretrained(run / "model", {"features": features.to_dict(), "classes": classes})


def _classifier_dir(folder: Path, manifest: Path) -> Path:
    """A small digit classifier trained for a few epochs on the manifest's training images (a judge that
    answers differently for different images; an untrained one labels everything alike)."""
    from sound2image.data import scan_pairs, split_pairs
    from sound2image.metrics import ClassifierConfig, load_labelled_images
    from sound2image.training.classifier import train_classifier

    train = split_pairs(scan_pairs(manifest).pairs).train
    images, labels, _ = load_labelled_images(train, 32)
    config = ClassifierConfig(classes=[str(d) for d in range(10)], width=8, epochs=4, seed=5)
    train_classifier(images, labels, config).save_pretrained(folder / "classifier")
    return folder / "classifier"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_evaluate_aic_equals_the_av_digits_bench(tmp_path, shared_data, dtype) -> None:
    from sound2image.cli.main import main
    from sound2image.outputs import read_png_metadata

    manifest = _manifest(shared_data, tmp_path)
    run = tmp_path / "run"
    _model_dir(run)
    classifier = _classifier_dir(tmp_path, manifest)
    seed, sampling = 7, ["--temperature", "1.0", "--guidance-scale", "3.0", "--decoder-dtype", dtype]

    bench = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "av_digits.py"), "--data", str(manifest), "--run-dir", str(run),
         "--skip-train", "--classifier", str(classifier), "--seed", str(seed), *sampling,
         "--results", str(tmp_path / "bench"), "--tag", "parity", "--gen-batch", "4"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr[-2000:]
    found = re.search(r"AIC \(classifier labels .*\): ([\d.]+) \((\d+)/(\d+)\)", bench.stdout)
    assert found, bench.stdout[-2000:]
    bench_hits, bench_n = int(found.group(2)), int(found.group(3))

    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--data", str(manifest), "--systems", f"transformer:{run / 'model'}",
         "--classifier", str(classifier), "--features", f"classifier:{classifier}", "--seeds", str(seed),
         *sampling, "--resamples", "20", "--device", "cpu", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    aic = results["metrics"][results["systems"][0]["id"]]["aic"]
    assert aic["n"] == bench_n == results["data"]["n_items"]
    # Both are hit counts over the same N images: equal as fractions, exactly.
    assert aic["value"] == pytest.approx(bench_hits / bench_n, abs=1e-6)  # to_dict keeps 6 digits
    drawn = next(out.rglob("*.png"))  # evaluate's cached images record the decoder's dtype
    assert read_png_metadata(drawn)["model"].get("decoder_dtype") == (None if dtype == "float32" else dtype)
