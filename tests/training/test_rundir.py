"""The shared run-directory parts (training/rundir.py) and the learning-rate shapes both trainers draw
from (training/schedules.py), checked against hand-written formulas and files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sound2image.errors import OutputExistsError, UsageError
from sound2image.training.checkpoints import check_run_dir
from sound2image.training.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    append_metrics,
    check_metrics_schema,
    config_path,
    read_config,
    read_metrics,
    read_state,
    truncate_metrics,
    validation_grid_path,
    write_bad_items,
    write_config,
    write_state,
)
from sound2image.training.schedules import decayed_lr, warmup_cosine, warmup_then_decay

# --- schedules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("progress", [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, -0.5])
def test_decayed_lr_shapes_match_their_formulas(progress: float) -> None:
    p = min(max(progress, 0.0), 1.0)
    assert decayed_lr(progress, 1e-3, 1e-5, "cosine") == pytest.approx(
        1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * p)) / 2, rel=1e-12
    )
    assert decayed_lr(progress, 1e-3, 1e-5, "linear") == pytest.approx(1e-3 - (1e-3 - 1e-5) * p, rel=1e-12)
    assert decayed_lr(progress, 1e-3, 1e-5, "constant") == 1e-3


def test_decayed_lr_names_an_unknown_shape() -> None:
    with pytest.raises(ValueError, match="shape must be one of linear, cosine, constant, got 'step'"):
        decayed_lr(0.5, 1.0, 0.0, "step")


def test_warmup_then_decay_reaches_the_peak_after_warmup_and_the_floor_at_the_last_update() -> None:
    # 2 warm-up updates, then 5 more: the decay runs over 4 intervals (updates 2..6).
    lrs = [warmup_then_decay(s, 7, 2, 1.0, 0.2, "linear") for s in range(7)]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2], rel=1e-12)
    cosine = [warmup_then_decay(s, 7, 2, 1.0, 0.2, "cosine") for s in range(2, 7)]
    assert cosine == pytest.approx([0.2 + 0.4 * (1 + math.cos(math.pi * k / 4)) for k in range(5)], rel=1e-12)
    assert [warmup_then_decay(s, 7, 0, 1.0, 0.2, "constant") for s in range(7)] == [1.0] * 7
    assert warmup_then_decay(0, 1, 0, 1.0, 0.2, "linear") == 1.0  # a one-update run: span 1, progress 0


def test_warmup_cosine_is_unchanged_warmup_times_cosine() -> None:
    for step in range(6):
        progress = step / 6
        expected = min(1.0, (step + 1) / 3) * (
            1e-4 + 0.5 * (5e-3 - 1e-4) * (1 + math.cos(math.pi * progress))
        )
        assert warmup_cosine(step, progress, 3, 5e-3, 1e-4) == pytest.approx(expected, rel=1e-12)


# --- run directory ----------------------------------------------------------------------------------


def test_metrics_round_trip_truncate_and_schema(tmp_path: Path) -> None:
    assert read_metrics(tmp_path) == []
    append_metrics(tmp_path, 0, "scorer", 12.34, {"val_loss": 0.5})
    for step in (1, 2, 3):
        append_metrics(tmp_path, step, "train", step * 1.01, {"loss": 1.0 / step, "lr": 0.1})
    append_metrics(tmp_path, 2, "eval", 2.0, {"val_bpp": 3.5})
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert json.loads(lines[0]) == {"step": 0, "kind": "scorer", "elapsed_s": 12.3, "val_loss": 0.5}
    assert json.loads(lines[2]) == {"step": 2, "kind": "train", "elapsed_s": 2.0, "loss": 0.5, "lr": 0.1}
    assert [r["step"] for r in read_metrics(tmp_path, "train")] == [1, 2, 3]
    assert read_metrics(tmp_path, "eval") == [{"step": 2, "kind": "eval", "elapsed_s": 2.0, "val_bpp": 3.5}]
    for record in read_metrics(tmp_path):
        check_metrics_schema(record)
    truncate_metrics(tmp_path, 2)  # what a run resumed from checkpoint-2 does first
    assert [(r["step"], r["kind"]) for r in read_metrics(tmp_path)] == [
        (0, "scorer"),
        (1, "train"),
        (2, "train"),
        (2, "eval"),
    ]
    with pytest.raises(ValueError, match="kind must be one of train, eval, scorer"):
        append_metrics(tmp_path, 1, "test", 0.0, {})
    with pytest.raises(ValueError, match="may not redefine elapsed_s"):
        append_metrics(tmp_path, 1, "eval", 0.0, {"elapsed_s": 1.0})
    with pytest.raises(ValueError, match="a train record needs loss and lr"):
        check_metrics_schema({"step": 1, "kind": "train", "elapsed_s": 0.0, "loss": 1.0})
    with pytest.raises(ValueError, match="val must be a number"):
        check_metrics_schema({"step": 1, "kind": "eval", "elapsed_s": 0.0, "val": "x"})


def test_config_state_bad_items_and_grid_names(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"lr": 0.1, "model": {"d": 4}})
    assert path == tmp_path / "training_config.json" == config_path(tmp_path)
    assert read_config(tmp_path) == read_config(path) == {"lr": 0.1, "model": {"d": 4}}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UsageError, match=r"bad\.json: not a valid training config"):
        read_config(tmp_path / "bad.json")
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    with pytest.raises(
        UsageError, match=r"checkpoint-3: not a SounDiff checkpoint \(no trainer_state\.json\)"
    ):
        read_state(checkpoint, "SounDiff")
    with pytest.raises(ValueError, match="trainer state lacks losses, config"):
        write_state(checkpoint, {"step": 3, "elapsed_s": 1.0})
    state = {"step": 3, "elapsed_s": 1.5, "losses": [1.0, 0.5, 0.25], "config": {"lr": 0.1}, "extra": 1}
    write_state(checkpoint, state)
    assert read_state(checkpoint, "SounDiff") == state
    assert write_bad_items(tmp_path, []) is None and not (tmp_path / "bad_items.txt").exists()
    assert write_bad_items(tmp_path, ["a.wav: empty", "b.jpg: truncated"]).read_text() == (
        "a.wav: empty\nb.jpg: truncated\n"
    )
    assert validation_grid_path(tmp_path, 42) == tmp_path / "validation" / "step-0000042.png"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file behind


def test_a_run_saved_under_the_old_settings_name_is_still_checked(tmp_path: Path) -> None:
    """SounDiff runs written before the shared names kept ``train_config.json``: they resume with the
    same checks (a changed setting is named, the file named is the old one), and a new run is refused."""
    (tmp_path / "train_config.json").write_text(json.dumps({"lr": 0.1, "seed": 42}))
    assert config_path(tmp_path) == tmp_path / "train_config.json"
    with pytest.raises(UsageError) as info:
        check_run_dir(tmp_path, "latest", config_path(tmp_path), {"lr": 0.1, "seed": 7}, read_config, ())
    assert str(info.value) == (
        f"{tmp_path}: cannot resume with different settings (seed): seed 42 -> 7; "
        f"see {tmp_path / 'train_config.json'}"
    )
    with pytest.raises(OutputExistsError, match="already holds a training run"):
        check_run_dir(tmp_path, None, config_path(tmp_path), {"lr": 0.1, "seed": 42}, read_config, ())
    assert (
        check_run_dir(tmp_path, "latest", config_path(tmp_path), {"lr": 0.1, "seed": 42}, read_config, ())
        is None
    )
    write_config(tmp_path, {"lr": 0.1, "seed": 42})  # once resumed, the shared name is written and read
    assert config_path(tmp_path) == tmp_path / CONFIG_FILE
