"""The train/val split: deterministic, close to the fraction, grouped (leak-free), stratified, saved."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sound2image.data import Pair, Split, load_or_create_split, scan_pairs, split_pairs
from sound2image.errors import DataError, UsageError
from tests.data.builders import advance_tree
from tests.paths import PSEUDO_ADVANCE


def make_pairs(spec: dict[str, list[int]]) -> list[Pair]:
    """``{label: [views per location, ...]}`` → ADVANCE-style pairs with ``_k`` ids (no files needed)."""
    pairs = []
    location = 0
    for label, views in spec.items():
        for count in views:
            location += 1
            for k in range(count):
                item_id = f"{location:05d}" + (f"_{k}" if k else "")
                pairs.append(
                    Pair(
                        audio=Path(f"sound/{label}/{item_id}.wav"),
                        image=Path(f"vision/{label}/{item_id}.jpg"),
                        label=label,
                        group=item_id[:5],
                        key=f"{label}/{item_id}",
                    )
                )
    return pairs


def keys(pairs: list[Pair]) -> list[str]:
    return [pair.key for pair in pairs]


def test_same_seed_same_split_any_input_order() -> None:
    pairs = scan_pairs(PSEUDO_ADVANCE).pairs
    shuffled = pairs[:]
    random.Random(1).shuffle(shuffled)
    first, second = split_pairs(pairs), split_pairs(shuffled)
    assert keys(first.val) == keys(second.val)
    assert keys(first.train) == keys(second.train)
    assert (first.seed, first.val_fraction) == (42, 0.1)


def test_different_seed_different_split() -> None:
    pairs = scan_pairs(PSEUDO_ADVANCE).pairs
    vals = {tuple(keys(split_pairs(pairs, seed=seed).val)) for seed in (42, 43, 44)}
    assert len(vals) == 3


def test_pseudo_advance_close_to_90_10_every_class_in_val() -> None:
    split = split_pairs(scan_pairs(PSEUDO_ADVANCE).pairs)
    assert len(split.train) + len(split.val) == 132
    # Per class the closest share to 10% is round-ish(count / 10): 16→2, 8→1, 44→4, 16→2, 16→2, 32→3.
    assert Counter(pair.label for pair in split.val) == {
        "airport": 2,
        "beach": 1,
        "farmland": 4,
        "forest": 2,
        "lake": 2,
        "residential": 3,
    }
    assert split.stratified


def test_singletons_give_exactly_ten_percent() -> None:
    pairs = make_pairs({"a": [1] * 1000})
    split = split_pairs(pairs)
    assert (len(split.train), len(split.val)) == (900, 100)
    assert len(split_pairs(pairs, val_fraction=0.25).val) == 250
    assert len(split_pairs(pairs, val_fraction=0.0).val) == 0


def test_k_views_never_straddle_the_split(tmp_path: Path) -> None:
    # 40 locations with 1-3 views each, written as real files and read back through scan_pairs.
    rng = random.Random(7)
    items: dict[str, list[str]] = {"harbour": [], "sparse shrub land": []}
    for location in range(40):
        label = "harbour" if location % 2 else "sparse shrub land"
        items[label] += [f"{location:05d}" + (f"_{k}" if k else "") for k in range(rng.randint(1, 3))]
    scan = scan_pairs(advance_tree(tmp_path, items))
    assert scan.problems == []
    for seed in range(5):
        split = split_pairs(scan.pairs, seed=seed)
        train_locations = {pair.audio.stem[:5] for pair in split.train}
        val_locations = {pair.audio.stem[:5] for pair in split.val}
        assert val_locations and not train_locations & val_locations


def test_stratified_every_class_with_ten_groups_in_val() -> None:
    pairs = make_pairs({"big": [1] * 100, "mid": [2] * 30, "small": [3] * 10, "tiny": [1] * 3})
    split = split_pairs(pairs)
    val = Counter(pair.label for pair in split.val)
    # 10% of pairs per class: 100 → 10 pairs; 60 → 6 (3 groups of 2); 30 → 3 (1 group of 3); 3 → 0.
    assert val == {"big": 10, "mid": 6, "small": 3}


def test_pairs_sharing_a_file_stay_together() -> None:
    shared_image = Path("img/shared.png")
    pairs = [Pair(Path(f"a/{i}.wav"), Path(f"img/{i}.png"), group=str(i), key=str(i)) for i in range(30)]
    pairs.append(Pair(Path("a/extra.wav"), shared_image, group="x", key="x"))
    pairs.append(Pair(Path("a/extra2.wav"), shared_image, group="y", key="y"))
    for seed in range(20):
        split = split_pairs(pairs, seed=seed)
        assert ({"x", "y"} <= set(keys(split.train))) or ({"x", "y"} <= set(keys(split.val)))


def test_bad_fraction_and_duplicate_keys() -> None:
    pairs = make_pairs({"a": [1, 1]})
    with pytest.raises(UsageError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        split_pairs(pairs, val_fraction=1.0)
    with pytest.raises(DataError, match="duplicate pair key"):
        split_pairs(pairs + pairs[:1])


def test_round_trip_through_file(tmp_path: Path) -> None:
    pairs = make_pairs({"a": [1, 2, 3] * 10, "b": [1] * 20})
    split = split_pairs(pairs, val_fraction=0.2, seed=3)
    path = split.save(tmp_path / "out" / "split.json")
    record = json.loads(path.read_text())
    assert record["settings"] == {"val_fraction": 0.2, "seed": 3}
    assert sorted(record["train"] + record["val"]) == sorted(keys(pairs))
    assert record["counts"]["val"] == len(record["val"])
    assert len(record["fingerprint"]) == 64
    restored = Split.load(path, list(reversed(pairs)))
    assert keys(restored.train) == keys(split.train) and keys(restored.val) == keys(split.val)
    assert (restored.seed, restored.val_fraction, restored.fingerprint) == (3, 0.2, split.fingerprint)


def test_load_reports_missing_and_new_pairs(tmp_path: Path) -> None:
    pairs = make_pairs({"a": [1] * 20})
    path = split_pairs(pairs).save(tmp_path / "split.json")
    with pytest.raises(
        DataError, match=r"split\.json: 1 pair\(s\) listed in the split are missing .*first: a/00001"
    ):
        Split.load(path, pairs[1:])
    extra = make_pairs({"a": [1] * 21})
    with pytest.raises(
        DataError, match=r"1 pair\(s\) of the dataset are not in the split \(first: a/00021\)"
    ):
        Split.load(path, extra)
    assert keys(Split.load(path, extra, allow_new=True).unassigned) == ["a/00021"]
    relabelled = [dataclasses.replace(pair, label="b") if i == 3 else pair for i, pair in enumerate(pairs)]
    with pytest.raises(DataError, match=r"labels or groups changed since the split was made"):
        Split.load(path, relabelled)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{nope", r"not a split file \(invalid JSON"),
        ('{"format": "other"}', "not a sound2image split file"),
        (
            '{"format": "sound2image-split", "version": 1, "settings": {}, "train": ["k"], "val": ["k"]}',
            "both sides",
        ),
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        Split.load(path, [])
    with pytest.raises(DataError, match="split file not found"):
        Split.load(tmp_path / "absent.json", [])


def test_load_or_create_reuses_and_checks_settings(tmp_path: Path) -> None:
    pairs = make_pairs({"a": [1] * 30})
    path = tmp_path / "split.json"
    created = load_or_create_split(path, pairs, seed=5)
    assert path.is_file()
    assert keys(load_or_create_split(path, pairs, seed=5).val) == keys(created.val)
    with pytest.raises(UsageError, match="existing split was made with val_fraction=0.1, seed=5"):
        load_or_create_split(path, pairs, seed=6)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    locations=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(min_value=1, max_value=4)),
        min_size=1,
        max_size=40,
    ),
    val_fraction=st.floats(min_value=0.0, max_value=0.9),
    seed=st.integers(min_value=0, max_value=2**31),
    order_seed=st.integers(min_value=0, max_value=1000),
)
def test_property_partition_grouped_order_independent(
    locations: list[tuple[str | None, int]], val_fraction: float, seed: int, order_seed: int
) -> None:
    pairs = [
        Pair(
            Path(f"s/{n}_{k}.wav"), Path(f"v/{n}_{k}.jpg"), label=label, group=f"{n:05d}", key=f"{n:05d}_{k}"
        )
        for n, (label, views) in enumerate(locations)
        for k in range(views)
    ]
    split = split_pairs(pairs, val_fraction=val_fraction, seed=seed)
    # A partition of the input ...
    assert sorted(keys(split.train) + keys(split.val)) == sorted(keys(pairs))
    # ... with no location on both sides ...
    assert not {pair.group for pair in split.train} & {pair.group for pair in split.val}
    # ... where every label with enough locations for a 1-location share is in validation ...
    groups_per_label = Counter(label for label, _ in locations)
    val_labels = {pair.label for pair in split.val}
    assert all(
        label in val_labels
        for label, n in groups_per_label.items()
        if val_fraction > 0 and n * val_fraction >= 1
    )
    # ... that does not depend on the order the pairs came in.
    shuffled = pairs[:]
    random.Random(order_seed).shuffle(shuffled)
    assert keys(split_pairs(shuffled, val_fraction=val_fraction, seed=seed).val) == keys(split.val)
