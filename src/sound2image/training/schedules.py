"""Learning-rate schedules and the optimiser setup shared by trainers.

The paper warmed up to 1e-7 — far too small to train a transformer from scratch. The defaults here
follow common practice for small GPT-style models: linear warm-up to a peak around 1e-3..3e-4, then
cosine decay to a floor.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def warmup_cosine(step: int, progress: float, warmup_steps: int, peak_lr: float, min_lr: float) -> float:
    """Learning rate: linear warm-up over the first ``warmup_steps`` steps, times a cosine decay from
    ``peak_lr`` (progress 0) to ``min_lr`` (progress 1, flat after it).

    ``progress`` ∈ [0, 1] is how far the run is; see :func:`run_progress`.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    progress = min(max(progress, 0.0), 1.0)
    return warm * (min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress)))


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
