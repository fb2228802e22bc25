"""``score`` on a tiny evaluation set, against metrics recomputed independently in the test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sound2image.errors import UsageError
from sound2image.evaluation.scoring import EvalItem, Judges, Pairing, derangement, score
from sound2image.metrics import ClassifierConfig, ImageClassifier, SmallCNN, encoder_features, kernel_distance
from tests.metrics.test_fidelity import numpy_fid, numpy_kid

LABELS = ["a", "b", "a", "b", "c", None]  # the last item has no label


class FakePairing:
    """Images: the 4×2 area-averaged grey image, centred. Audio: the item's real image's vector plus a little
    noise fixed by its id, so that the real pairs are informative."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.audio_calls = 0

    def embed_audio(self, items) -> torch.Tensor:
        self.audio_calls += 1
        return torch.from_numpy(np.stack([audio_vector(item) for item in items]))

    def embed_images(self, images) -> torch.Tensor:
        return torch.from_numpy(np.stack([image_vector(image) for image in images]))


def audio_vector(item: EvalItem) -> np.ndarray:
    seed = int(hashlib.sha256(item.id.encode()).hexdigest()[:8], 16)
    return image_vector(Image.open(item.image)) + 2.0 * np.random.default_rng(seed).standard_normal(8)


def image_vector(image: Image.Image) -> np.ndarray:
    return (
        np.asarray(image.convert("L").resize((4, 2), Image.Resampling.BOX), dtype=np.float64).ravel() - 127.5
    )


def colour_statistics(images) -> torch.Tensor:
    """6 features: per-channel mean and standard deviation."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float64) / 255 for image in images]
    return torch.from_numpy(
        np.stack([np.concatenate([a.mean(axis=(0, 1)), a.std(axis=(0, 1))]) for a in arrays])
    )


def pattern(seed: int, base: np.ndarray | None = None) -> np.ndarray:
    """A random 2×4 block pattern at 16×16 (or ``base``) plus pixel noise (sd 8)."""
    rng = np.random.default_rng(seed)
    blocks = np.kron(rng.integers(0, 256, (2, 4)), np.ones((8, 4))) if base is None else base
    return np.clip(blocks + rng.normal(0, 8, (16, 16)), 0, 255).astype(np.uint8)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "L").save(path)
    return path


@pytest.fixture
def setup(tmp_path: Path):
    real = [pattern(i) for i in range(len(LABELS))]
    items = [
        EvalItem(
            f"clip/{i}",
            label,
            tmp_path / f"a{i}.wav",
            write_png(tmp_path / "real" / f"{i}.png", real[i]),
            "0" * 64,
        )
        for i, label in enumerate(LABELS)
    ]
    generated = {
        "sys_a": {  # two seeds for every clip, each a noisy copy of the clip's real image
            item.id: [
                write_png(tmp_path / "gen_a" / f"{i}_{s}.png", pattern(100 + 10 * i + s, real[i]))
                for s in (1, 2)
            ]
            for i, item in enumerate(items)
        },
        "sys_b": {  # one unrelated image per clip; clip 1 is missing
            item.id: [write_png(tmp_path / "gen_b" / f"{i}.png", pattern(200 + i))]
            for i, item in enumerate(items)
            if i != 1
        },
    }
    torch.manual_seed(0)
    classifier = ImageClassifier(
        SmallCNN(3, 4), ClassifierConfig(classes=["a", "b", "c"], image_size=16, width=4)
    )
    with torch.no_grad():
        classifier.model.head[-1].weight.mul_(10)  # untrained, but its predictions now vary between images
    calls = {"features": 0}

    def encode(images):
        calls["features"] += len(images)
        return colour_statistics(images)

    judges = Judges(
        features=encoder_features(encode, "colour", 6),
        classifier=classifier,
        pairings={
            "sys_a": FakePairing("imagebind-audio/test"),
            "sys_b": FakePairing("transformer-scorer:test"),
        },
        k=2,
        resamples=200,
        seed=0,
        fidelity_resamples=20,
    )
    return items, generated, judges, calls


def load(paths) -> list[Image.Image]:
    return [Image.open(p).copy() for p in paths]


def grey(paths) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("L")) for p in paths])


def win_rate_by_loop(query: np.ndarray, own: int, targets: np.ndarray) -> float:
    cos = [float(query @ t / np.linalg.norm(query) / np.linalg.norm(t)) for t in targets]
    others = [c for r, c in enumerate(cos) if r != own]
    return sum(1.0 if cos[own] > c else 0.5 if cos[own] == c else 0.0 for c in others) / len(others)


@pytest.mark.numeric  # argmax and win-rate comparisons of float scores (no near-ties here)
def test_score_matches_an_independent_computation(setup) -> None:
    items, generated, judges, _ = setup
    result = score(items, generated, judges)
    assert set(result) == {"metrics", "reference", "metric_notes", "per_class_aic"}
    assert set(result["metrics"]["sys_a"]) == {"fid", "kid", "aic", "aic@2", "ais", "iis"}
    classifier = judges.classifier
    approx = {"rel": 1e-5}  # results are rounded to 6 significant digits

    for system in ("sys_a", "sys_b"):
        metrics = result["metrics"][system]
        clips = [i for i, item in enumerate(items) if item.id in generated[system]]
        paths = [p for i in clips for p in generated[system][items[i].id]]
        owner = [k for k, i in enumerate(clips) for _ in generated[system][items[i].id]]
        # FID / KID on the colour statistics
        real = colour_statistics(load(items[i].image for i in clips)).numpy()
        fake = colour_statistics(load(paths)).numpy()
        assert metrics["fid"]["value"] == pytest.approx(numpy_fid(real, fake), **approx)
        assert metrics["fid"]["n"] == metrics["kid"]["n"] == len(clips)
        if len(fake) == len(real):  # one seed: KID takes every row in its one subset
            assert metrics["kid"]["value"] == pytest.approx(numpy_kid(real, fake), **approx)
        else:  # random subsets of the generated rows, seeded: the same as the unprojected features'
            expected = kernel_distance(torch.from_numpy(real), torch.from_numpy(fake), seed=0)
            assert metrics["kid"]["value"] == pytest.approx(expected, **approx)
        # AIC: the classifier's prediction (argmax) against the audio's label, over the labelled clips' images
        labelled = [
            (p, items[clips[k]].label) for p, k in zip(paths, owner, strict=True) if items[clips[k]].label
        ]
        predicted = classifier.predict(grey([p for p, _ in labelled]))
        hits = [p == label for p, (_, label) in zip(predicted, labelled, strict=True)]
        assert metrics["aic"]["value"] == pytest.approx(np.mean(hits), **approx)
        logits = classifier.logits(grey([p for p, _ in labelled])).numpy()
        ranks = [
            int((row > row[["a", "b", "c"].index(label)]).sum())
            for row, (_, label) in zip(logits, labelled, strict=True)
        ]
        assert metrics["aic@2"]["value"] == pytest.approx(np.mean([r < 2 for r in ranks]), **approx)
        assert metrics["aic"]["n"] == sum(1 for i in clips if items[i].label)
        for name in {label for _, label in labelled}:
            expected = np.mean([h for h, (_, label) in zip(hits, labelled, strict=True) if label == name])
            assert result["per_class_aic"][system][name]["value"] == pytest.approx(expected, **approx)
        # AIS / IIS by loops over cosines
        audio = np.stack([audio_vector(items[i]) for i in clips])
        real_images = np.stack([image_vector(im) for im in load(items[i].image for i in clips)])
        generated_images = [image_vector(im) for im in load(paths)]
        ais = [win_rate_by_loop(g, k, audio) for g, k in zip(generated_images, owner, strict=True)]
        iis = [win_rate_by_loop(g, k, real_images) for g, k in zip(generated_images, owner, strict=True)]
        assert metrics["ais"] == {
            **metrics["ais"],
            "value": pytest.approx(np.mean(ais), **approx),
            "n": len(clips),
        }
        assert metrics["iis"]["value"] == pytest.approx(np.mean(iis), **approx)
    # known answers: sys_a's images are noisy copies of the real ones, whose audio is near them: perfect
    assert (
        result["metrics"]["sys_a"]["ais"]
        == result["metrics"]["sys_a"]["iis"]
        == {
            "value": 1.0,
            "low": 1.0,
            "high": 1.0,
            "n": 6,
        }
    )
    assert (
        len({p for p in judges.classifier.predict(grey(p for v in generated["sys_a"].values() for p in v))})
        > 1
    )

    # the AIC interval: per-clip hit counts resampled with the same seeded draws, quantiles by numpy
    hits_per_clip, images_per_clip = [], []
    for item in items[:5]:  # sys_a's labelled clips, in item order
        predicted = classifier.predict(grey(generated["sys_a"][item.id]))
        hits_per_clip.append(sum(p == item.label for p in predicted))
        images_per_clip.append(len(predicted))
    draws = np.random.default_rng(0).integers(0, 5, size=(200, 5))
    values = np.array(hits_per_clip)[draws].sum(1) / np.array(images_per_clip)[draws].sum(1)
    low, high = np.quantile(values, [0.025, 0.975])
    assert result["metrics"]["sys_a"]["aic"]["low"] == pytest.approx(low, **approx)
    assert result["metrics"]["sys_a"]["aic"]["high"] == pytest.approx(high, **approx)


@pytest.mark.numeric  # argmax and win-rate comparisons of float scores (no near-ties here)
def test_reference_is_the_real_pairs_and_a_derangement(setup) -> None:
    items, generated, judges, _ = setup
    reference = score(items, generated, judges)["reference"]
    labelled = [item for item in items if item.label]
    images = grey(item.image for item in labelled)
    labels = [item.label for item in labelled]
    assert reference["real"]["aic"]["value"] == pytest.approx(
        judges.classifier.accuracy(images, labels), rel=1e-5
    )
    assert reference["real"]["aic"]["n"] == 5
    shuffle = derangement(5, 0)
    assert sorted(shuffle.tolist()) == list(range(5)) and all(shuffle != np.arange(5))
    shuffled_labels = [labels[j] for j in shuffle]
    expected = judges.classifier.accuracy(images, shuffled_labels)
    assert reference["shuffled"]["aic"]["value"] == pytest.approx(expected, rel=1e-5)
    audio = np.stack([audio_vector(item) for item in items])
    real = [image_vector(im) for im in load(item.image for item in items)]
    for name in ("imagebind-audio/test", "transformer-scorer:test"):
        ceiling = np.mean([win_rate_by_loop(r, i, audio) for i, r in enumerate(real)])
        floor = np.mean([win_rate_by_loop(r, i, audio[derangement(6, 0)]) for i, r in enumerate(real)])
        assert reference["real"][f"ais:{name}"]["value"] == pytest.approx(ceiling, rel=1e-5)
        assert reference["shuffled"][f"ais:{name}"]["value"] == pytest.approx(floor, rel=1e-5)
        assert reference["real"][f"ais:{name}"]["n"] == 6
        assert ceiling == 1.0  # the audio is the real image's vector plus a little noise


def test_notes_name_n_seeds_encoders_and_the_circular_space(setup) -> None:
    items, generated, judges, _ = setup
    notes = score(items, generated, judges)["metric_notes"]
    assert set(notes) == {"fid", "kid", "aic", "aic@2", "per_class_aic", "ais", "iis", "reference"}
    assert (
        "colour features (6-D)" in notes["fid"]
        and "sys_a: N = 6 clips, 12 images (2 seeds per clip); sys_b: N = 5 clips, 5 images (1 seed per clip)"
        in notes["fid"]
    )
    assert "20 resamples, seed 0), capped at 20" in notes["fid"] and "subset seed 0" in notes["kid"]
    assert "3 classes, 16×16 grayscale" in notes["aic"] and "200 resamples, seed 0" in notes["aic"]
    assert "sys_a: imagebind-audio/test; sys_b: transformer-scorer:test" in notes["ais"]
    assert "For sys_a the audio and image embeddings share a space by construction" in notes["ais"]
    assert "best-of-N" in notes["ais"] and "sys_b the" not in notes["ais"]
    assert "derangement (seed 0)" in notes["reference"]


def test_features_are_cached_between_calls(setup, tmp_path: Path) -> None:
    items, generated, judges, calls = setup
    first = score(items, generated, judges, cache_dir=tmp_path / "cache")
    assert calls["features"] == 6 + 12 + 5  # real images once, then each system's images
    second = score(items, generated, judges, cache_dir=tmp_path / "cache")
    assert calls["features"] == 23 and second == first
    Image.new("L", (16, 16), 9).save(items[0].image)  # a rewritten file is recomputed
    score(items, generated, judges, cache_dir=tmp_path / "cache")
    assert calls["features"] == 24


def test_what_cannot_be_computed_is_absent(setup) -> None:
    items, generated, judges, _ = setup
    one = {"solo": {items[0].id: generated["sys_a"][items[0].id]}}
    result = score(
        items, one, Judges(features=judges.features, classifier=judges.classifier, k=3, resamples=50)
    )
    assert set(result["metrics"]["solo"]) == {
        "aic"
    }  # 1 clip: no FID/KID; k = 3 classes: no AIC@3; no pairing
    assert "AIC@3 not computed" in result["metric_notes"]["aic@3"]
    assert result["metrics"]["solo"]["aic"]["n"] == 1
    bare = score(items, generated, Judges())
    assert bare["metrics"] == {"sys_a": {}, "sys_b": {}} and bare["reference"] == {"real": {}, "shuffled": {}}


def test_bad_inputs_are_usage_errors(setup) -> None:
    items, generated, judges, _ = setup
    with pytest.raises(UsageError, match=r"^generated\['sys_a'\]: 'nope' is not an item id$"):
        score(items, {"sys_a": {"nope": []}}, judges)
    with pytest.raises(UsageError, match="item ids must be unique"):
        score(items + items[:1], generated, judges)
    odd = [*items[:5], EvalItem("clip/9", "zebra", items[0].audio, items[0].image, "0" * 64)]
    with pytest.raises(
        UsageError, match=r"^item clip/9: label 'zebra' is not a class of the classifier \(a, b, c\)$"
    ):
        score(odd, {}, judges)
    with pytest.raises(UsageError, match="resamples must be an integer >= 1"):
        score(items, generated, Judges(resamples=0))


def test_pairing_protocol_is_satisfied_by_the_fake() -> None:
    assert isinstance(FakePairing("x"), Pairing)


@pytest.mark.numeric  # FID / KID recomputed in numpy on the same resamples: rel 1e-5 (6-digit rounding)
def test_fid_and_kid_intervals_resample_clips_and_the_settings_take_effect(setup) -> None:
    """sys_b has one image per clip, so a resample of clips is the same rows of both sets: the interval is
    the quantiles of the numpy FID / KID of those rows (KID: min(N, M) = N rows, one subset), over
    min(resamples, fidelity_resamples) draws of the seeded generator, at the given level."""
    items, generated, judges, _ = setup
    judges.fidelity_resamples, judges.level, judges.seed = 15, 0.8, 3
    result = score(items, {"sys_b": generated["sys_b"]}, judges)
    clips = [i for i, item in enumerate(items) if item.id in generated["sys_b"]]
    real = colour_statistics(load(items[i].image for i in clips)).numpy()
    fake = colour_statistics(load(p for i in clips for p in generated["sys_b"][items[i].id])).numpy()
    draws = np.random.default_rng(3).integers(0, 5, size=(15, 5))
    for metric, function in (("fid", numpy_fid), ("kid", numpy_kid)):
        values = [function(real[d], fake[d]) for d in draws]
        low, high = np.quantile(values, [0.1, 0.9])
        estimate = result["metrics"]["sys_b"][metric]
        assert (estimate["low"], estimate["high"]) == (
            pytest.approx(low, rel=1e-5),
            pytest.approx(high, rel=1e-5),
        )
    assert (
        "80% percentile-bootstrap interval over clips (15 resamples, seed 3), capped at 15"
        in (result["metric_notes"]["fid"])
    )
    # the seed also draws the shuffled reference; resamples sets the other metrics' draws
    judges.fidelity_resamples = 500
    uncapped = score(items, {"sys_b": generated["sys_b"]}, judges)["metric_notes"]["fid"]
    assert "(200 resamples, seed 3)" in uncapped and "capped" not in uncapped
    other_seed = score(items, {}, Judges(pairings=judges.pairings, seed=4))["reference"]["shuffled"]
    expected = np.mean(
        [
            win_rate_by_loop(
                image_vector(im), i, np.stack([audio_vector(item) for item in items])[derangement(6, 4)]
            )
            for i, im in enumerate(load(item.image for item in items))
        ]
    )
    assert other_seed["ais:imagebind-audio/test"]["value"] == pytest.approx(expected, rel=1e-5)
    assert derangement(6, 4).tolist() != derangement(6, 3).tolist()
