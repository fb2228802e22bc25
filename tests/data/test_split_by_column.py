"""Leave-one-group-out splits by a manifest column, on av-digits' pairs.csv (speaker column)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sound2image.data import Pair, Split, scan_pairs
from sound2image.data.split import column_value, split_by_column
from sound2image.errors import UsageError
from tests.paths import AV_DIGITS

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "yweweler"]


def manifest_rows() -> list[dict[str, str]]:
    """pairs.csv read with the csv module (independent of the scanner)."""
    with open(AV_DIGITS / "pairs.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    return scan_pairs(AV_DIGITS).pairs


@pytest.mark.parametrize("speaker", SPEAKERS)
def test_holding_out_a_speaker_puts_exactly_its_recordings_in_val(pairs, speaker) -> None:
    split = split_by_column(pairs, "speaker", speaker)
    rows = manifest_rows()
    expected_val = {row["audio"] for row in rows if row["speaker"] == speaker}
    assert {pair.key for pair in split.val} == expected_val
    assert {pair.key for pair in split.train} == {row["audio"] for row in rows} - expected_val
    # FSDD file names are digit_speaker_index.wav: the held-out side is that speaker's, and only its.
    assert {Path(pair.key).stem.split("_")[1] for pair in split.val} == {speaker}
    assert speaker not in {Path(pair.key).stem.split("_")[1] for pair in split.train}
    assert (len(split.train), len(split.val)) == (2000, 500)  # 5 speakers × 500 recordings
    # every digit is in both sides (each speaker said each digit 50 times)
    assert sorted({pair.label for pair in split.val}) == [str(d) for d in range(10)]


def test_several_held_out_values_and_the_saved_file_round_trip(pairs, tmp_path) -> None:
    split = split_by_column(pairs, "speaker", ["lucas", "george"])
    assert {Path(p.key).stem.split("_")[1] for p in split.val} == {"george", "lucas"}
    assert len(split.val) == 1000
    record = json.loads(split.save(tmp_path / "split.json").read_text())
    assert record["settings"] == {
        "val_fraction": 0.4,
        "seed": 0,
        "split_by": "speaker",
        "holdout": ["george", "lucas"],
    }
    loaded = Split.load(tmp_path / "split.json", pairs)
    assert loaded.settings == split.settings
    assert [p.key for p in loaded.val] == [p.key for p in split.val]


def test_a_plain_split_file_keeps_its_old_settings(pairs, tmp_path) -> None:
    from sound2image.data import split_pairs

    record = json.loads(split_pairs(pairs).save(tmp_path / "split.json").read_text())
    assert record["settings"] == {"val_fraction": 0.1, "seed": 42}


def test_label_and_group_are_columns_too(pairs) -> None:
    split = split_by_column(pairs, "label", "7")
    assert {p.label for p in split.val} == {"7"} and len(split.val) == 250  # 5 speakers × 50
    assert column_value(pairs[0], "group") == Path(pairs[0].key).stem  # manifest default: the audio stem
    assert column_value(pairs[0], "Speaker") == "george"  # column names are case-insensitive


def test_a_pair_sharing_a_group_with_a_held_out_pair_is_held_out_too(tmp_path) -> None:
    def pair(name: str, speaker: str, group: str) -> Pair:
        return Pair(Path(f"{name}.wav"), Path(f"{name}.png"), "x", None, group, name, {"speaker": speaker})

    pairs = [pair("a", "ann", "g1"), pair("b", "bob", "g1"), pair("c", "bob", "g2")]
    split = split_by_column(pairs, "speaker", "ann")
    assert [p.key for p in split.val] == ["a", "b"] and [p.key for p in split.train] == ["c"]


@pytest.mark.parametrize(
    ("column", "holdout", "message"),
    [
        ("speaker", "nobody", "holdout: speaker 'nobody' matches no pair (values: george, jackson, lucas, "
         "nicolas, yweweler)"),
        ("accent", "x", "split_by: no pair has a value in column 'accent'"),
        ("speaker", [], "holdout: give at least one non-empty value of 'speaker'"),
    ],
)  # fmt: skip
def test_bad_columns_and_values_name_the_parameter(pairs, column, holdout, message) -> None:
    with pytest.raises(UsageError) as error:
        split_by_column(pairs, column, holdout)
    assert str(error.value) == message
    assert error.value.parameters == (message.split(":")[0],)
