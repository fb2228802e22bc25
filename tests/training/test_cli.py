"""`sound2image train soundiff`: the command end to end, its help and its errors."""

from __future__ import annotations

import json

import pytest

from sound2image.cli.main import main
from sound2image.outputs import read_png_metadata
from sound2image.training.soundiff import SATELLITE_PROMPT
from tests.paths import PSEUDO_ADVANCE


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "soundiff", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Examples:" in text and "--variant S" in text and "--resume latest" in text


def test_soundiff_s_on_one_class_end_to_end(tmp_path, manifest8, shared_cache, soundiff, capsys) -> None:
    base = soundiff.save_pretrained(tmp_path / "base")
    run = tmp_path / "run"
    audio = PSEUDO_ADVANCE / "sound" / "beach" / "00017.wav"
    code = main(
        ["train", "soundiff", "--data", str(manifest8), "--variant", "S", "--classes", "beach",
         "--model", str(base), "--output", str(run), "--resolution", "16", "--batch-size", "1",
         "--max-steps", "2", "--learning-rate", "1e-3", "--val-fraction", "0",
         "--cache-dir", str(shared_cache), "--checkpointing-steps", "1", "--checkpoints-total-limit", "1",
         "--validation-steps", "2", "--validation-audios", str(audio), "--no-progress"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    config = json.loads((run / "training_config.json").read_text())
    assert config["prompt"] == SATELLITE_PROMPT and config["classes"] == ["beach"]
    assert config["batch_size"] == 1 and config["epochs"] == 280  # given, and the variant's default
    split = json.loads((run / "split.json").read_text())
    assert "beach" in json.dumps(split) and "airport" not in json.dumps(split)
    grid = run / "validation" / "step-0000002.png"
    assert read_png_metadata(grid)["prompt"] == SATELLITE_PROMPT
    assert list((run / "logs").rglob("events.out.tfevents.*"))  # TensorBoard: loss, lr, images
    assert (run / "unet" / "config.json").is_file()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-2"]  # total limit 1
    record = json.loads((run / "sound2image_soundiff.json").read_text())
    assert record["variant"] == "S" and record["prompt"] == SATELLITE_PROMPT and record["steps"] == 2
    assert "--unet" in capsys.readouterr().out


def test_missing_data_is_a_one_line_error_and_writes_nothing(tmp_path, capsys) -> None:
    code = main(
        ["train", "soundiff", "--data", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "nope.csv" in err
    assert not (tmp_path / "run").exists()


def test_bad_setting_is_a_usage_error(tmp_path, capsys) -> None:
    code = main(["train", "soundiff", "--data", "x", "--output", str(tmp_path / "r"), "--resolution", "100"])
    assert code == 2 and "multiple of 8" in capsys.readouterr().err


def test_every_setting_has_a_flag_with_the_configs_default() -> None:
    from dataclasses import fields

    from sound2image.cli.main import build_parser
    from sound2image.training.soundiff import SounDiffTrainConfig

    args = build_parser().parse_args(["train", "soundiff", "--data", "d", "--output", "o"])
    for field in fields(SounDiffTrainConfig):
        assert hasattr(args, field.name), f"no flag for {field.name}"
        default = field.default_factory() if callable(field.default_factory) else field.default
        if field.name not in ("data", "output_dir"):
            assert getattr(args, field.name) == default, field.name
