"""What every trainer shares: checkpoint directories, the resume check, the NaN guard, the start line.

A checkpoint is a directory ``<run>/checkpoints/checkpoint-<step>``. It is written under a
temporary name and renamed only when complete, so a crash while writing never damages the last
good checkpoint and ``latest_checkpoint`` never returns a half-written one.

The trainers (SounDiff, the Image Transformer, its scorer, the classifier) also share three rules, kept
here so that they cannot drift apart:

* :func:`check_run_dir` - a new run never goes into an old run's directory, and a resumed run refuses
  settings that differ from the saved ones (naming each), *before* anything is written;
* :func:`check_finite` - a NaN/Inf loss or gradient norm stops the run with
  :class:`TrainingDivergedError` before the optimizer step, so no checkpoint holds bad weights and the
  last good one stays what ``resume='latest'`` continues from;
* :func:`announce_processes` - the one line saying how many processes train and at which batch sizes,
  and a check that the launcher started the processes it was asked for.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sound2image.errors import OutputExistsError, Sound2ImageError, UsageError

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


# --- resuming with the same settings ---------------------------------------------------------------


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"d_model": 64}}`` -> ``{"model.d_model": 64}``; JSON-normalised (tuples -> lists)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = json.loads(json.dumps(value, default=str))
    return flat


def changed_settings(
    previous: Mapping[str, Any], current: Mapping[str, Any], resumable: Collection[str] = ()
) -> list[tuple[str, Any, Any]]:
    """``(name, saved value, given value)`` of each setting that differs between ``previous`` and ``current``.

    Nested settings are compared leaf by leaf under dotted names (``model.d_model``); a group set on
    one side only (a scorer config against ``None``) is reported once under its own name. A top-level
    name in ``resumable`` (e.g. ``max_steps``) may change, with everything under it. Sorted by name.
    """
    before, after = _flatten(previous), _flatten(current)
    missing = object()
    changed: dict[str, tuple[str, Any, Any]] = {}
    for name in sorted(set(before) | set(after)):
        top = name.split(".")[0]
        if top in resumable or name in resumable:
            continue
        old, new = before.get(name, missing), after.get(name, missing)
        if old == new:
            continue
        if old is missing or new is missing:  # a whole group on one side only
            changed.setdefault(top, (top, before.get(top, "{...}"), after.get(top, "{...}")))
        else:
            changed[name] = (name, old, new)
    return [changed[name] for name in sorted(changed)]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def check_run_dir(
    run_dir: str | os.PathLike[str],
    resume: str | None,
    config_file: str | os.PathLike[str],
    current: Mapping[str, Any],
    load_previous: Callable[[Path], Mapping[str, Any]],
    resumable: Collection[str],
) -> Path | None:
    """The checkpoint to resume from (or None); call it before the run writes anything.

    Args:
        run_dir: the run's output directory.
        resume: ``None``, ``"latest"`` or a checkpoint (see :func:`resolve_resume`).
        config_file: where the run saves its settings (compared when resuming).
        current: the settings given now (``config.to_dict()``).
        load_previous: reads ``config_file`` back as a settings dict (through the config class, so that
            settings added since have their defaults).
        resumable: top-level settings that may change on resume (step budget, checkpoint cadence...).

    Raises:
        OutputExistsError: a run is already in ``run_dir`` and ``resume`` is not set.
        UsageError: resuming with changed settings (each named with its saved and given value), or
            ``resume`` names no checkpoint.
    """
    run_dir, config_file = Path(run_dir), Path(config_file)
    checkpoint = resolve_resume(run_dir, resume)
    if not resume and (list_checkpoints(run_dir) or config_file.exists()):
        raise OutputExistsError(
            f"{run_dir}: already holds a training run "
            "(pass resume='latest' to continue it, or choose a new output_dir)",
            parameters=["resume", "output_dir"],
        )
    if resume and config_file.exists():
        changed = changed_settings(load_previous(config_file), current, resumable)
        if changed:
            names = ", ".join(name for name, _, _ in changed)
            details = ", ".join(f"{name} {_short(old)} -> {_short(new)}" for name, old, new in changed[:5])
            raise UsageError(
                f"{run_dir}: cannot resume with different settings ({names}): {details}; see {config_file}"
            )
    return checkpoint


# --- the NaN/Inf guard ----------------------------------------------------------------------------------


class TrainingDivergedError(Sound2ImageError):
    """The loss became NaN or infinite; the run stopped without writing anything after it."""

    exit_code = 1


def divergence_error(
    run_dir: str | os.PathLike[str], step: int, what: str, hint: str, hint_parameters: Sequence[str] = ()
) -> TrainingDivergedError:
    """The one-line error for a run that diverged at update ``step`` (1-based), naming the last good
    checkpoint (or saying that none was written); ``hint_parameters`` are the parameters ``hint`` names."""
    last = latest_checkpoint(run_dir)
    where = f"last good checkpoint: {last} (resume='latest')" if last else "no checkpoint was written"
    return TrainingDivergedError(
        f"{run_dir}: {what} at step {step}; stopped without saving ({where}); {hint}",
        parameters=[*(["resume"] if last else []), *hint_parameters],
    )


def check_finite(
    value: float,
    what: str,
    run_dir: str | os.PathLike[str],
    step: int,
    hint: str,
    hint_parameters: Sequence[str] = (),
) -> None:
    """Raise :func:`divergence_error` when ``value`` (a loss or a gradient norm) is NaN or infinite.

    Call it before the optimizer step of update ``step`` (1-based): the weights then never take a
    non-finite update and no later checkpoint is written.
    """
    if not math.isfinite(value):
        raise divergence_error(run_dir, step, f"the {what} became {value}", hint, hint_parameters)


# --- processes and batch sizes ----------------------------------------------------------------------------

#: What ``accelerate launch`` sets in every process it starts (and nothing else does).
_ACCELERATE_MARKERS = ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_DYNAMO_BACKEND")
CPU_RECIPE = "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N"


def launched_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``, set by torchrun / ``accelerate launch``)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def check_launch(num_processes: int, trainer: str, distributed: bool = True) -> str | None:
    """Compare the processes that train with those the launcher started; a warning line, or None.

    Args:
        num_processes: processes that form this run (``accelerator.num_processes``; 1 for a trainer that
            runs in one process).
        trainer: the command, for messages (``train soundiff``).
        distributed: False for a trainer that always runs in one process.

    Raises:
        UsageError: the launcher started several processes that do not form one run (each would train
            alone and write the same files): ``--multi_gpu`` on a machine without GPUs and without
            ``ACCELERATE_USE_CPU=true``, or a one-process trainer started by a multi-process launcher.
    """
    world = launched_world_size()
    if world > 1 and num_processes != world:
        if not distributed:
            raise UsageError(
                f"{trainer} runs in one process, but the launcher started {world} (WORLD_SIZE={world}); "
                "run it without accelerate launch / torchrun"
            )
        raise UsageError(
            f"the launcher started {world} processes (WORLD_SIZE={world}) but accelerate sees "
            f"{num_processes}: each would train alone into the same directory; on a machine without GPUs "
            f"use {CPU_RECIPE.replace(' N', f' {world}')} ..."
        )
    launched = any(name in os.environ for name in _ACCELERATE_MARKERS)
    if world == 1 and launched and "MASTER_ADDR" in os.environ:
        # accelerate launch exports MASTER_ADDR only when asked for several processes (or machines).
        if not distributed:
            return f"warning: {trainer} runs in one process; accelerate launch's --num_processes is ignored"
        return (
            "warning: accelerate launch was asked for several processes but started one "
            f"(--cpu alone runs a single process); for several CPU processes use {CPU_RECIPE} ..."
        )
    return None


def describe_processes(num_processes: int, device: str, batch_per_process: int, accumulation: int = 1) -> str:
    """``training on 2 processes (cpu): batch 2 per process, global batch 4`` (one line).

    The global batch is what one optimizer update sees: ``batch_per_process × num_processes ×
    accumulation``.
    """
    processes = f"{num_processes} process" + ("es" if num_processes != 1 else "")
    accumulated = f", {accumulation} accumulation steps" if accumulation > 1 else ""
    total = batch_per_process * num_processes * accumulation
    return (
        f"training on {processes} ({device}): batch {batch_per_process} per process{accumulated}, "
        f"global batch {total}"
    )


def announce_processes(
    trainer: str,
    num_processes: int,
    device: str,
    batch_per_process: int,
    *,
    accumulation: int = 1,
    is_main_process: bool = True,
    distributed: bool = True,
    label: str | None = None,
) -> str:
    """Check the launch (:func:`check_launch`) and print, on the main process, the line of
    :func:`describe_processes` on stdout (prefixed by ``label``), then any warning on stderr.

    Returns the line. Raises ``UsageError`` as :func:`check_launch` does.
    """
    warning = check_launch(num_processes, trainer, distributed)
    line = describe_processes(num_processes, device, batch_per_process, accumulation)
    if label:
        line = f"{label}: {line}"
    if is_main_process:
        print(line, flush=True)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    return line
