"""SounDiff checkpoints: accelerate's state (+ EMA) and the shared ``trainer_state.json``, written
atomically into ``checkpoints/checkpoint-<step>``; and restoring them. An IP-Adapter run's checkpoint
holds the adapter's tensors (``ip_adapter.safetensors``), not the frozen U-Net."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

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


#: The adapter's tensors in an IP-Adapter run's checkpoint (diffusers' flat keys ``image_proj.*``, ...).
ADAPTER_CHECKPOINT = "ip_adapter.safetensors"


def register_adapter_checkpoints(accelerator: Any) -> None:
    """Make ``accelerator.save_state``/``load_state`` write and read only the IP-Adapter's tensors of the
    prepared U-Net (the rest is frozen and comes from the base model), as diffusers' training scripts
    do with save/load hooks. Optimizer, RNG and EMA states are accelerate's as before."""
    from safetensors.torch import load_file, save_file

    from sound2image.diffusion.backbones import ip_adapter_state_dict

    def save_hook(models: list[Any], weights: list[Any], output_dir: str) -> None:
        for _ in range(len(weights)):
            weights.pop()  # no full U-Net in the checkpoint
        if accelerator.is_main_process:
            for model in models:
                state = ip_adapter_state_dict(accelerator.unwrap_model(model))
                flat = {
                    f"{part}.{key}": value for part, values in state.items() for key, value in values.items()
                }
                save_file(flat, str(Path(output_dir) / ADAPTER_CHECKPOINT))

    def load_hook(models: list[Any], input_dir: str) -> None:
        saved = load_file(str(Path(input_dir) / ADAPTER_CHECKPOINT))
        while models:
            live = ip_adapter_state_dict(accelerator.unwrap_model(models.pop()), detach=False)
            with torch.no_grad():
                for part, values in live.items():
                    for key, tensor in values.items():
                        tensor.copy_(saved[f"{part}.{key}"])

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
