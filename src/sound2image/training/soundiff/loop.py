"""The SounDiff run as one function, :func:`train`: check, set up, resume, loop, export."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sound2image.training.checkpoints import announce_processes
from sound2image.training.rundir import (
    SPLIT_FILE,
    TrainResult,
    append_metrics,
    truncate_metrics,
    write_config,
)
from sound2image.training.soundiff.checkpoint import load_checkpoint, save_checkpoint
from sound2image.training.soundiff.config import SounDiffTrainConfig
from sound2image.training.soundiff.data import select_pairs
from sound2image.training.soundiff.setup import (
    Run,
    check_output_dir,
    check_pipeline_backbone,
    load_base_pipeline,
    make_accelerator,
    setup_run,
)
from sound2image.training.soundiff.step import learning_rate_at, train_step
from sound2image.training.soundiff.validation import log_validation, report_bad_items


def export_run(run: Run, steps: int) -> Path | None:
    """Write the export (main process) with EMA weights if used; returns its directory. An IP-Adapter
    run exports the adapter file (``ip-adapter.safetensors``) instead of a U-Net."""
    from sound2image.training.export import export_ip_adapter, export_soundiff

    run.accelerator.wait_for_everyone()
    if not run.accelerator.is_main_process:
        return None
    unet = run.accelerator.unwrap_model(run.unet)
    if run.ema is not None:
        run.ema.copy_to(run.params)
    record = {
        "base_model": run.config.base_model or getattr(run.pipe.info, "model", None),
        "variant": run.config.variant,
        "prompt": run.config.prompt,
        "steps": steps,
        "epochs": run.plan.epoch_of(steps - 1) + 1 if steps else 0,
        "ema": run.config.ema,
        "lora_rank": run.config.lora_rank,
        "calibration": asdict(run.calibration),
        "training_config": run.config.to_dict(),
    }
    if run.config.is_ip_adapter:
        config = run.config
        record.update(backbone=config.backbone, ip_adapter=config.ip_adapter, ip_scale=config.ip_scale)
        return export_ip_adapter(unet, run.run_dir, calibration=run.calibration, record=record)
    return export_soundiff(unet, run.run_dir, calibration=run.calibration, record=record)


StepHook = Callable[[int, float, Any], None]


def train(
    config: SounDiffTrainConfig,
    *,
    pipeline: Any | None = None,
    on_step_end: StepHook | None = None,
) -> TrainResult:
    """Run (or resume) a fine-tuning run and export the result.

    Args:
        config: the settings (variant defaults are filled in).
        pipeline: a ready ``SounDiffPipeline`` to fine-tune (tests, notebooks), of the backbone
            ``config.backbone``; by default the base model ``config.base_model`` is loaded (with
            ``config.ip_adapter`` for the IP-Adapter backbones).
        on_step_end: called as ``hook(step, loss, run)`` after every update (after its checkpoint).

    Raises:
        TrainingDivergedError: the loss became NaN/Inf (nothing is saved after it).
        Sound2ImageError: bad data, settings or weights (one line naming the problem).
    """
    config = config.resolved()
    run_dir = Path(config.output_dir)
    accelerator = make_accelerator(config, run_dir)
    resume = check_output_dir(config, run_dir)
    announce_processes(  # refuses a launch whose processes do not form one run
        "train soundiff",
        accelerator.num_processes,
        accelerator.device.type,
        config.batch_size,
        accumulation=config.gradient_accumulation_steps,
        is_main_process=accelerator.is_main_process,
        label=f"SounDiff-{config.variant}",
    )
    # Data and weights are checked before anything is written: a failed start leaves no run behind.
    data = select_pairs(config, run_dir)
    pipe = pipeline if pipeline is not None else load_base_pipeline(config)
    check_pipeline_backbone(config, pipe)
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, config.to_dict())
        if not (run_dir / SPLIT_FILE).is_file():
            data.split.save(run_dir / SPLIT_FILE)
    accelerator.wait_for_everyone()
    run = setup_run(config, data, pipe, accelerator, run_dir)
    bad_lines = report_bad_items(run)
    start = load_checkpoint(run, resume) if resume is not None else 0
    if accelerator.is_main_process:
        truncate_metrics(run_dir, start)
    if accelerator.trackers == [] and accelerator.log_with:
        accelerator.init_trackers("soundiff", config={k: str(v) for k, v in config.to_dict().items()})
    run.started = time.monotonic()
    _loop(run, start, on_step_end)
    export_dir = export_run(run, run.plan.total_steps)
    accelerator.end_training()
    return TrainResult(
        output_dir=run_dir,
        model_dir=export_dir,
        steps=run.plan.total_steps,
        elapsed_s=run.elapsed_s(),
        losses=run.losses,
        train_loss=run.losses[-1] if run.losses else float("nan"),
        problems=bad_lines,
        model=accelerator.unwrap_model(run.unet),
        run=run,
    )


def _loop(run: Run, start: int, on_step_end: StepHook | None) -> None:
    """Updates ``start + 1 ..``: step, log (a ``train`` line of ``metrics.jsonl``), checkpoint, validate."""
    from tqdm.auto import tqdm

    config, accelerator, plan, run_dir = run.config, run.accelerator, run.plan, run.run_dir
    bar = tqdm(
        total=plan.total_steps,
        initial=start,
        desc=f"SounDiff-{config.variant}",
        unit="step",
        disable=not (config.progress and accelerator.is_main_process),
    )
    for step in range(start, plan.total_steps):
        loss = train_step(run, step)
        run.losses.append(loss)
        done = step + 1
        lr = learning_rate_at(config, step, plan.total_steps)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=plan.epoch_of(step))
        accelerator.log({"train/loss": loss, "train/lr": lr}, step=done)
        if accelerator.is_main_process:
            append_metrics(run_dir, done, "train", run.elapsed_s(), {"loss": loss, "lr": lr})
        if done % config.checkpointing_steps == 0 or done == plan.total_steps:
            save_checkpoint(run, done)
        if (
            config.validation_steps
            and run.validation_embeds is not None
            and done % config.validation_steps == 0
        ):
            if accelerator.is_main_process:
                log_validation(run, done)
            accelerator.wait_for_everyone()
        if on_step_end is not None:
            on_step_end(done, loss, run)
    bar.close()
