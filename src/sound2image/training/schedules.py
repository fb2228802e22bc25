"""Learning-rate schedules and the optimiser setup shared by trainers.

The paper warmed up to 1e-7 — far too small to train a transformer from scratch. The defaults here
follow common practice for small GPT-style models: linear warm-up to a peak around 1e-3..3e-4, then
cosine decay to a floor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: The decay shapes of :func:`decayed_lr`.
LR_SHAPES = ("linear", "cosine", "constant")


def decayed_lr(progress: float, peak_lr: float, min_lr: float, shape: str = "cosine") -> float:
    """The learning rate at ``progress`` ∈ [0, 1] (clamped) of a decay from ``peak_lr`` to ``min_lr``:

    * ``cosine``: ``min_lr + ½ (peak_lr − min_lr)(1 + cos π·progress)``;
    * ``linear``: ``peak_lr + (min_lr − peak_lr)·progress``;
    * ``constant``: ``peak_lr``.
    """
    progress = min(max(progress, 0.0), 1.0)
    if shape == "cosine":
        return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    if shape == "linear":
        return peak_lr + (min_lr - peak_lr) * progress
    if shape == "constant":
        return peak_lr
    raise ValueError(f"shape must be one of {', '.join(LR_SHAPES)}, got {shape!r}")


def warmup_cosine(step: int, progress: float, warmup_steps: int, peak_lr: float, min_lr: float) -> float:
    """Learning rate: linear warm-up over the first ``warmup_steps`` steps, times a cosine decay from
    ``peak_lr`` (progress 0) to ``min_lr`` (progress 1, flat after it).

    ``progress`` ∈ [0, 1] is how far the run is; see :func:`run_progress`. (The Image Transformer's
    schedule: the decay runs over the whole run, warm-up included.)
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warm * decayed_lr(progress, peak_lr, min_lr, "cosine")


def warmup_then_decay(
    step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float, shape: str
) -> float:
    """Learning rate of update ``step`` (0-based) of ``total_steps``: a linear warm-up to ``peak_lr``
    over the first ``warmup_steps`` updates (``peak_lr·(step+1)/warmup_steps``), *then* the ``shape``
    decay (:func:`decayed_lr`) from ``peak_lr`` at update ``warmup_steps`` to ``min_lr`` at the last
    update. (SounDiff's schedule, as diffusers' ``get_scheduler`` shapes.)
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps - 1)
    return decayed_lr((step - warmup_steps) / span, peak_lr, min_lr, shape)


def run_progress(
    step: int, max_steps: int | None, elapsed_s: float = 0.0, max_seconds: float | None = None
) -> float:
    """How far a run is, in [0, 1]: the larger of the step fraction and the wall-clock fraction.

    With a time budget the decay therefore finishes when the budget does, however fast the machine is.
    """
    fractions = [0.0]
    if max_steps:
        fractions.append(step / max_steps)
    if max_seconds:
        fractions.append(elapsed_s / max_seconds)
    return min(max(fractions), 1.0)


def make_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
) -> torch.optim.AdamW:
    """AdamW that decays only matrices (linear and embedding weights), not biases, norms or vectors.

    Adapted from nanoGPT's ``configure_optimizers``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
