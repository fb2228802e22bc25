"""Validation grids of a SounDiff run (fixed audios, fixed seed, the current or EMA U-Net) and the
report of bad items."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sound2image.training.rundir import BAD_ITEMS_FILE, validation_grid_path, write_bad_items

if TYPE_CHECKING:
    from sound2image.training.soundiff.setup import Run


@torch.no_grad()
def validation_images(run: Run) -> list[Any]:
    """Images from the fixed validation audios with the current (EMA) U-Net, fixed seed."""
    unet = run.accelerator.unwrap_model(run.unet)
    if run.ema is not None:
        run.ema.store(run.params)
        run.ema.copy_to(run.params)
    unet.eval()
    try:
        # Through SounDiffPipeline itself, for every backbone: its diffusers pipeline holds the trained
        # U-Net (the very module training updates, EMA weights swapped in above).
        images = _pipeline_images(run)
    finally:
        unet.train()
        if run.ema is not None:
            run.ema.restore(run.params)
    return images


def _pipeline_images(run: Run) -> list[Any]:
    """One validation image per validation audio through ``SounDiffPipeline`` (the run's own pipeline, whose
    backbone holds the U-Net being trained), seeded with the run's seed."""
    pipe = run.pipe
    pipe.unclip.set_progress_bar_config(disable=True)
    embeds = run.calibration.apply(run.validation_embeds).to(run.accelerator.device)
    images = []
    for i in range(embeds.shape[0]):
        with run.accelerator.autocast():
            result = pipe(
                image_embeds=embeds[i : i + 1],
                prompt=run.config.prompt or "",
                height=run.config.resolution,
                width=run.config.resolution,
                num_inference_steps=run.config.validation_inference_steps,
                guidance_scale=validation_guidance(run),
                seed=run.config.seed,
            )
        images.append(result.images[0])
    return images


def validation_guidance(run: Run) -> float:
    """The validation guidance scale: the configured one, else the backbone's default (unCLIP 10, SD 1.5
    IP-Adapter 7.5, SDXL IP-Adapter 5: what generation uses)."""
    given = run.config.validation_guidance_scale
    return float(given) if given is not None else float(run.pipe.default_guidance_scale)


def log_validation(run: Run, step: int) -> Path:
    """Save the validation grid as PNG (with settings) and log it to TensorBoard."""
    import numpy as np

    from sound2image.outputs import make_grid, save_png

    images = validation_images(run)
    grid = make_grid(images, labels=run.validation_names)
    path = validation_grid_path(run.run_dir, step)
    metadata = {
        "step": step,
        "audios": run.validation_names,
        "prompt": run.config.prompt,
        "seed": run.config.seed,
        "guidance_scale": validation_guidance(run),
        "steps": run.config.validation_inference_steps,
    }
    save_png(grid, path, metadata, overwrite=True)
    if run.accelerator.trackers:
        tracker = run.accelerator.get_tracker("tensorboard", unwrap=True)
        tracker.add_images(
            "validation", np.stack([np.asarray(im) for im in images]), step, dataformats="NHWC"
        )
    return path


def report_bad_items(run: Run) -> list[str]:
    """List the unusable pairs in ``bad_items.txt`` and on stderr (main process); returns the lines."""
    lines = run.cached.bad.lines()
    if lines and run.accelerator.is_main_process:
        write_bad_items(run.run_dir, lines)
        print(f"{run.cached.bad.summary()} (listed in {run.run_dir / BAD_ITEMS_FILE}):", file=sys.stderr)
        for line in lines[:10]:
            print(f"  {line}", file=sys.stderr)
    return lines
