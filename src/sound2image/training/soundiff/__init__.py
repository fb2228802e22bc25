"""Fine-tuning SounDiff: the unCLIP U-Net learns to follow ImageBind audio embeddings (paper §SounDiff).

>>> from sound2image.training.soundiff import SounDiffTrainConfig, train
>>> train(SounDiffTrainConfig(data="ADVANCE/", output_dir="runs/soundiff-l", variant="L"))

With ``backbone="sd15-ip"`` or ``"sdxl-ip"`` the same run trains only the ViT-H IP-Adapter of an SD 1.5 /
SDXL pipeline (its image projection and decoupled ``to_k_ip``/``to_v_ip``; the U-Net stays frozen) with
:class:`~sound2image.training.objective.IPAdapterObjective`; checkpoints hold the adapter's tensors and
the export is ``ip-adapter.safetensors`` (:func:`~sound2image.training.export.export_ip_adapter`).

The run, as functions, one module each (no file much over 200 lines):

1. :func:`select_pairs` (``data``) — scan the data, keep the chosen classes, the grouped 90/10 split
   (saved).
2. :func:`resolve_calibration` (``data``) — the embedding scale (given, stored with the base model, or
   measured on the training images with the pipeline's own image encoder), saved with the run.
3. :func:`make_cache_pass` (``data``) — VAE latents (+ mirror images) and audio embeddings, cached once.
4. :func:`prepare_unet` / :func:`make_optimizer` (``setup``) — trainable U-Net (full, or LoRA), AdamW
   (or 8-bit).
5. :func:`train` (``loop``) — the loop, each update in ``step``, checkpoints in ``checkpoint``, grids in
   ``validation``: Accelerate for devices, precision, accumulation and processes; checkpoints,
   validation images, logging, NaN guard; then :func:`~sound2image.training.export.export_soundiff`.

Determinism: the data order of epoch e and the noise of micro-batch m are drawn from generators seeded
by ``(seed, e)`` and ``(seed, m)``; each process takes its slice of the *global* batch. A resumed run
therefore replays exactly the steps an uninterrupted run takes, and N processes with batch b compute
the same steps as one process with batch N·b.

The settings are :class:`SounDiffTrainConfig` (``config``); the run directory's file names and the
:class:`~sound2image.training.rundir.TrainResult` are the ones every trainer shares
(:mod:`sound2image.training.rundir`).
"""

from __future__ import annotations

from sound2image.training.checkpoints import TrainingDivergedError
from sound2image.training.rundir import (
    BAD_ITEMS_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    SPLIT_FILE,
    STATE_FILE,
    TrainResult,
)
from sound2image.training.soundiff.checkpoint import load_checkpoint, save_checkpoint, write_trainer_state
from sound2image.training.soundiff.config import (
    LR_SCHEDULES,
    MIXED_PRECISION,
    RESUMABLE_CHANGES,
    SATELLITE_PROMPT,
    VARIANTS,
    SounDiffTrainConfig,
)
from sound2image.training.soundiff.data import (
    SelectedData,
    StepPlan,
    make_cache_pass,
    mix_seed,
    resolve_calibration,
    select_pairs,
)
from sound2image.training.soundiff.loop import StepHook, export_run, train
from sound2image.training.soundiff.setup import (
    Run,
    check_output_dir,
    load_base_pipeline,
    make_accelerator,
    make_optimizer,
    prepare_unet,
    setup_run,
)
from sound2image.training.soundiff.step import learning_rate_at, train_batch, train_step
from sound2image.training.soundiff.validation import log_validation, report_bad_items, validation_images

__all__ = [
    "BAD_ITEMS_FILE",
    "CONFIG_FILE",
    "LR_SCHEDULES",
    "METRICS_FILE",
    "MIXED_PRECISION",
    "RESUMABLE_CHANGES",
    "SATELLITE_PROMPT",
    "SPLIT_FILE",
    "STATE_FILE",
    "VARIANTS",
    "Run",
    "SelectedData",
    "SounDiffTrainConfig",
    "StepHook",
    "StepPlan",
    "TrainResult",
    "TrainingDivergedError",
    "check_output_dir",
    "export_run",
    "learning_rate_at",
    "load_base_pipeline",
    "load_checkpoint",
    "log_validation",
    "make_accelerator",
    "make_cache_pass",
    "make_optimizer",
    "mix_seed",
    "prepare_unet",
    "report_bad_items",
    "resolve_calibration",
    "save_checkpoint",
    "select_pairs",
    "setup_run",
    "train",
    "train_batch",
    "train_step",
    "validation_images",
    "write_trainer_state",
]
