"""`evaluate --split-by COLUMN --holdout VALUE`: which pairs are evaluated, and the flags' errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sound2image.cli.main import main
from sound2image.errors import UsageError
from sound2image.evaluation.run import EvaluationConfig, select_pairs
from sound2image.evaluation.systems import parse_systems
from tests.paths import AV_DIGITS


def speaker_keys(*speakers: str) -> set[str]:
    with open(AV_DIGITS / "pairs.csv", newline="") as handle:
        return {row["audio"] for row in csv.DictReader(handle) if row["speaker"] in speakers}


def test_split_by_selects_the_held_out_speakers_pairs() -> None:
    systems = parse_systems("baseline")
    pairs, info = select_pairs(str(AV_DIGITS), "val", systems, None, "speaker", ["yweweler"])
    assert {pair.key for pair in pairs} == speaker_keys("yweweler") and len(pairs) == 500
    assert info["split"] == "column" and info["split_by"] == "speaker" and info["holdout"] == ["yweweler"]
    # max_items still goes round-robin over the digits: 20 items = 2 of each digit, all yweweler's
    pairs, _ = select_pairs(str(AV_DIGITS), "val", systems, 20, "speaker", ["yweweler"])
    assert sorted(int(p.label) for p in pairs) == sorted(list(range(10)) * 2)
    assert {p.key for p in pairs} <= speaker_keys("yweweler")


def test_without_split_by_the_default_split_is_unchanged() -> None:
    pairs, info = select_pairs(str(AV_DIGITS), "val", parse_systems("baseline"), None)
    assert info["split"] == "val" and info["split_by"] is None and len(pairs) == 250  # 10 % of 2,500


@pytest.mark.parametrize(
    ("settings", "message", "parameter"),
    [
        ({"split_by": "speaker"}, "split_by speaker: give the held-out value(s) with holdout", "holdout"),
        ({"holdout": ["jackson"]}, "holdout needs split_by (the column it refers to)", "split_by"),
    ],
)
def test_config_needs_both_settings(tmp_path, settings, message, parameter) -> None:
    config = EvaluationConfig(data=str(AV_DIGITS), out=str(tmp_path), systems=parse_systems("baseline"),
                              **settings)  # fmt: skip
    with pytest.raises(UsageError) as error:
        config.check()
    assert str(error.value) == message and error.value.parameters == (parameter,)


def test_the_flags_reach_the_config(tmp_path, monkeypatch) -> None:
    seen = {}

    def fake_evaluate(config: EvaluationConfig) -> dict:
        seen["config"] = config
        return {"items": [], "bad_items": []}

    monkeypatch.setattr("sound2image.evaluation.run.evaluate", fake_evaluate)
    args = ["evaluate", "--data", str(AV_DIGITS), "--systems", "baseline", "--device", "cpu", "--out",
            str(tmp_path / "out"), "--split-by", "speaker", "--holdout", "jackson", "lucas"]  # fmt: skip
    assert main(args) == 0
    assert seen["config"].split_by == "speaker" and seen["config"].holdout == ["jackson", "lucas"]


def test_an_unknown_speaker_is_a_one_line_error_naming_the_flag(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["evaluate", "--data", str(AV_DIGITS), "--systems", "baseline", "--device", "cpu", "--features",
            "clip", "--out", str(out), "--split-by", "speaker", "--holdout", "bob"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --holdout: speaker 'bob' matches no pair") and err.count("\n") == 1, err
    assert not Path(out / "results.json").exists()
