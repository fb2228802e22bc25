"""Checkpoint directories shared by every trainer: atomic writes, a total limit, ``latest``.

A checkpoint is a directory ``<run>/checkpoints/checkpoint-<step>``. It is written under a
temporary name and renamed only when complete, so a crash while writing never damages the last
good checkpoint and ``latest_checkpoint`` never returns a half-written one.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sound2image.errors import UsageError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TMP_PREFIX = ".tmp-checkpoint-"


def checkpoints_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints, oldest (lowest step) first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    match = _CHECKPOINT.match(Path(path).name)
    if not match:
        raise UsageError(f"{path}: not a checkpoint directory (expected checkpoint-<step>)")
    return int(match.group(1))


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume(run_dir: str | os.PathLike[str], resume: str | None) -> Path | None:
    """``None`` -> no resume; ``"latest"`` -> newest complete checkpoint (or None); else a path."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not path.is_dir():
        path = checkpoints_dir(run_dir) / resume
    if not path.is_dir():
        raise UsageError(f"{resume}: no such checkpoint (use 'latest' or a checkpoint-<step> directory)")
    return path


@contextmanager
def atomic_checkpoint(
    run_dir: str | os.PathLike[str], step: int, total_limit: int | None = None
) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it becomes ``checkpoint-<step>``.

    On an exception the temporary directory is removed and the previous checkpoints are untouched.
    After a successful write, the oldest checkpoints beyond ``total_limit`` are deleted.
    """
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{_TMP_PREFIX}*"):  # left by a crash in an earlier run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f"{_TMP_PREFIX}{step}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = root / f"checkpoint-{step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if total_limit is not None and total_limit > 0:
        for old in list_checkpoints(run_dir)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
