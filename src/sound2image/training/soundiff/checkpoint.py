"""SounDiff checkpoints: accelerate's state (+ EMA) and the shared ``trainer_state.json``, written
atomically into ``checkpoints/checkpoint-<step>``; and restoring them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sound2image.training.checkpoints import atomic_checkpoint
from sound2image.training.rundir import read_state, write_state

if TYPE_CHECKING:
    from sound2image.training.soundiff.setup import Run


def save_checkpoint(run: Run, step: int) -> None:
    """``checkpoints/checkpoint-<step>``: accelerate state (+ EMA) and trainer state, written atomically."""
    from accelerate.utils import broadcast_object_list

    accelerator = run.accelerator
    if accelerator.is_main_process:
        with atomic_checkpoint(run.run_dir, step, run.config.checkpoints_total_limit) as tmp:
            broadcast_object_list([str(tmp)])
            _fill_checkpoint(run, tmp, step)
        accelerator.wait_for_everyone()
    else:
        holder = [None]
        broadcast_object_list(holder)
        _fill_checkpoint(run, Path(str(holder[0])), step)
        accelerator.wait_for_everyone()


def _fill_checkpoint(run: Run, directory: Path, step: int) -> None:
    run.accelerator.save_state(str(directory))  # model, optimizer, scaler, RNG (one file per process)
    if run.accelerator.is_main_process:
        write_trainer_state(directory, run, step)
    run.accelerator.wait_for_everyone()


def write_trainer_state(directory: Path, run: Run, step: int) -> None:
    """The shared ``trainer_state.json`` (step, elapsed time, losses, settings) plus what SounDiff's loop
    needs besides accelerate's state: epoch and data position, global batch, seed."""
    state = {
        "step": step,
        "epoch": run.plan.epoch_of(step),
        "micro_step": step * run.plan.accumulation,
        "global_batch": run.plan.global_batch,
        "seed": run.config.seed,
        "elapsed_s": run.elapsed_s(),
        "losses": run.losses,
        "config": run.config.to_dict(),
    }
    write_state(directory, state)


def load_checkpoint(run: Run, path: Path) -> int:
    """Restore a checkpoint; returns the number of updates already done."""
    state = read_state(path, "SounDiff")
    run.accelerator.load_state(str(path))
    run.losses = list(state.get("losses", []))[: int(state["step"])]
    run.elapsed_before = float(state.get("elapsed_s", 0.0))  # absent in checkpoints of older runs
    if state.get("global_batch") != run.plan.global_batch:
        print(
            f"warning: {path}: saved with a global batch of {state.get('global_batch')}, "
            f"now {run.plan.global_batch}; "
            "the data order after resuming differs from an uninterrupted run",
            file=sys.stderr,
        )
    return int(state["step"])
