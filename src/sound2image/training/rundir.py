"""The run directory every trainer writes: one set of file names, and the small functions that read and
write them (settings, metrics, trainer state, bad items), plus the one :class:`TrainResult`.

A run directory (SounDiff and the Image Transformer alike)::

    <run>/training_config.json          the settings (compared when resuming: see checkpoints.check_run_dir)
    <run>/split.json                    the grouped train/validation split
    <run>/metrics.jsonl                 one JSON object per logged update or evaluation (schema below)
    <run>/bad_items.txt                 pairs that could not be used (only when there are any)
    <run>/validation/step-<step>.png    validation grids
    <run>/checkpoints/checkpoint-<step>/trainer_state.json   step, elapsed time, losses, settings
    <run>/<export>                      what generation loads (SounDiff: unet/ ...; transformer: model/)

Each line of ``metrics.jsonl`` is ``{"step": int, "kind": str, "elapsed_s": float, <name>: number...}``
with ``kind`` one of :data:`METRIC_KINDS`: ``train`` lines carry ``loss`` and ``lr`` of update ``step``;
``eval`` lines the validation numbers after update ``step``; a ``scorer`` line (step 0) the transformer's
best-of-N scorer. A resumed run first drops the lines after its checkpoint (:func:`truncate_metrics`), so
the file reads as one uninterrupted run.

Runs written before these names (``train_config.json``, ``log.jsonl`` + ``history.json``) still resume:
:func:`config_path` finds the old settings file; their old metrics files are left as they are.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sound2image.atomic import write_text_atomic
from sound2image.errors import UsageError

CONFIG_FILE = "training_config.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"
BAD_ITEMS_FILE = "bad_items.txt"
STATE_FILE = "trainer_state.json"
VALIDATION_DIR = "validation"
#: The settings file of runs written before the names above were shared (SounDiff's old name).
LEGACY_CONFIG_FILES = ("train_config.json",)
METRIC_KINDS = ("train", "eval", "scorer")
#: Keys every ``trainer_state.json`` holds.
STATE_KEYS = ("step", "elapsed_s", "losses", "config")


# --- settings ---------------------------------------------------------------------------------------


def config_path(run_dir: str | os.PathLike[str]) -> Path:
    """Where the run's settings are: ``training_config.json``, or the old name of a run written before
    it (so that such a run still resumes and is still checked)."""
    run_dir = Path(run_dir)
    current = run_dir / CONFIG_FILE
    if not current.exists():
        for name in LEGACY_CONFIG_FILES:
            if (run_dir / name).exists():
                return run_dir / name
    return current


def write_config(run_dir: str | os.PathLike[str], values: Mapping[str, Any]) -> Path:
    """Save the settings as ``<run_dir>/training_config.json`` (indented JSON, atomically)."""
    return write_text_atomic(Path(run_dir) / CONFIG_FILE, json.dumps(values, indent=2, default=str) + "\n")


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings saved at ``path`` (a run directory or the file itself) as a dict.

    Raises:
        UsageError: the file is missing or not JSON (one line naming it).
    """
    path = Path(path)
    if path.is_dir():
        path = config_path(path)
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: not a valid training config ({error})") from error
    if not isinstance(values, dict):
        raise UsageError(f"{path}: not a valid training config (not a JSON object)")
    return values


# --- metrics ----------------------------------------------------------------------------------------


def metrics_record(step: int, kind: str, elapsed_s: float, values: Mapping[str, Any]) -> dict[str, Any]:
    """One ``metrics.jsonl`` object: ``step``, ``kind``, ``elapsed_s`` (rounded to 0.1 s), then ``values``.

    Raises:
        ValueError: ``kind`` is not one of :data:`METRIC_KINDS` or ``values`` redefines a schema key.
    """
    if kind not in METRIC_KINDS:
        raise ValueError(f"kind must be one of {', '.join(METRIC_KINDS)}, got {kind!r}")
    clash = sorted({"step", "kind", "elapsed_s"} & set(values))
    if clash:
        raise ValueError(f"metric values may not redefine {', '.join(clash)}")
    return {"step": int(step), "kind": kind, "elapsed_s": round(float(elapsed_s), 1), **values}


def append_metrics(
    run_dir: str | os.PathLike[str], step: int, kind: str, elapsed_s: float, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Append one line (:func:`metrics_record`) to ``<run_dir>/metrics.jsonl``; returns the record."""
    record = metrics_record(step, kind, elapsed_s, values)
    with open(Path(run_dir) / METRICS_FILE, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return record


def read_metrics(run_dir: str | os.PathLike[str], kind: str | None = None) -> list[dict[str, Any]]:
    """The records of ``<run_dir>/metrics.jsonl`` in file order (only those of ``kind`` if given);
    an empty list when the run has logged nothing yet."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


def truncate_metrics(run_dir: str | os.PathLike[str], step: int) -> None:
    """Drop the lines logged after update ``step`` (a resumed run recomputes them)."""
    path = Path(run_dir) / METRICS_FILE
    if path.is_file():
        kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def check_metrics_schema(record: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``record`` follows the ``metrics.jsonl`` schema (module docstring)."""
    if not isinstance(record.get("step"), int) or record["step"] < 0:
        raise ValueError(f"step must be an int >= 0: {record}")
    if record.get("kind") not in METRIC_KINDS:
        raise ValueError(f"kind must be one of {METRIC_KINDS}: {record}")
    if not isinstance(record.get("elapsed_s"), (int, float)):
        raise ValueError(f"elapsed_s must be a number: {record}")
    for name, value in record.items():
        if name not in ("step", "kind") and not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number: {record}")
    if record["kind"] == "train" and not {"loss", "lr"} <= set(record):
        raise ValueError(f"a train record needs loss and lr: {record}")


# --- trainer state, bad items, validation grids -----------------------------------------------------


def write_state(directory: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Save ``trainer_state.json`` into a checkpoint directory; it must hold :data:`STATE_KEYS`."""
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"trainer state lacks {', '.join(missing)}")
    return write_text_atomic(Path(directory) / STATE_FILE, json.dumps(dict(state), indent=2) + "\n")


def read_state(directory: str | os.PathLike[str], trainer: str) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint directory.

    Raises:
        UsageError: the directory holds no trainer state (``trainer`` names the kind of checkpoint).
    """
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise UsageError(f"{directory}: not a {trainer} checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def write_bad_items(run_dir: str | os.PathLike[str], lines: Iterable[str]) -> Path | None:
    """List the pairs that could not be used in ``bad_items.txt`` (nothing is written when none)."""
    lines = list(lines)
    if not lines:
        return None
    return write_text_atomic(Path(run_dir) / BAD_ITEMS_FILE, "".join(line + "\n" for line in lines))


def validation_grid_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """``<run_dir>/validation/step-<step, 7 digits>.png``: where the grid after update ``step`` goes."""
    return Path(run_dir) / VALIDATION_DIR / f"step-{step:07d}.png"


# --- what a run returns -----------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a finished run of either trainer reports.

    ``model_dir`` is the export generation loads (None on the non-main processes of a multi-process
    run); ``losses`` the loss of every update (SounDiff: mean over processes); ``train_loss`` the final
    loss (the transformer: its running mean); ``history`` the evaluations (``eval`` records without the
    schema keys); ``problems`` the pairs that were skipped.
    """

    output_dir: Path
    model_dir: Path | None
    steps: int
    elapsed_s: float
    losses: list[float] = field(default_factory=list)
    train_loss: float = math.nan
    val_bpp: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    model: Any = None  # the trained module (SounDiff: the unwrapped U-Net)
    run: Any = None  # SounDiff: the live run objects (objective, cached data, prompt encodings)

    @property
    def metrics_path(self) -> Path:
        return Path(self.output_dir) / METRICS_FILE
