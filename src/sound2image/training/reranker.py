"""Training the audio-image scorer used for best-of-N sampling (CLIP's recipe on a dataset's own pairs).

Symmetric InfoNCE over a batch of (sound, image) pairs with a learned temperature, AdamW with linear
warm-up and cosine decay, small augmentations (images shifted by up to ``image_shift`` pixels, sounds
rolled by up to ``time_shift`` sections). By default no labels are used. With ``label_positives`` (and a
label on every training pair) every pair in the batch that shares the sound's label counts as a match: the
target of a row is spread evenly over those columns, as in supervised contrastive learning (Khosla et al.,
"Supervised Contrastive Learning", NeurIPS 2020), here across the two modalities. Plain InfoNCE treats a
same-class image in the batch as a wrong answer; on av-digits (10 classes, batch 128) about a dozen per row.

Reported per epoch: the training loss and, on held-out pairs, the InfoNCE loss and recall@1 (how often a
sound's own image scores highest among all held-out images).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sound2image.errors import DataError, UsageError
from sound2image.training.checkpoints import describe_processes
from sound2image.training.schedules import make_adamw, set_lr, warmup_cosine
from sound2image.transformer.reranker import AudioImageScorer, RerankerConfig


@dataclass
class RerankerTrainConfig:
    """Scorer training settings; saved with the scorer and in the transformer's training config."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 0.0
    warmup_steps: int = 20
    weight_decay: float = 0.05
    image_shift: int = 2
    time_shift: int = 5
    embed_dim: int = 64
    seed: int = 42
    #: Pairs that share a label are matches too (needs a label on every training pair); see the module.
    label_positives: bool = False

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise UsageError(
                f"scorer: epochs must be >= 1 and batch size >= 2, got {self.epochs} and {self.batch_size}"
            )


@dataclass
class RerankerResult:
    scorer: AudioImageScorer
    elapsed_s: float
    history: list[dict[str, float]]


def _augment(
    features: torch.Tensor, images: torch.Tensor, config: RerankerTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random roll of the whole batch: sounds along time (B, S, F), images in x and y (B, H, W)."""
    if config.time_shift:
        features = torch.roll(features, int(rng.integers(-config.time_shift, config.time_shift + 1)), dims=1)
    if config.image_shift:
        dy, dx = rng.integers(-config.image_shift, config.image_shift + 1, size=2)
        images = torch.roll(images, (int(dy), int(dx)), dims=(1, 2))
    return features, images


def contrastive_loss(logits: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy for (B, B) logits whose diagonal holds the true pairs.

    With ``classes`` (B,) integer labels, row i's target is spread evenly over every column j with
    ``classes[j] == classes[i]`` (its own pair included), in both directions.
    """
    if classes is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    same = (classes[:, None] == classes[None, :]).to(logits.dtype)  # (B, B), symmetric
    soft = same / same.sum(dim=1, keepdim=True)  # each row sums to 1
    return (F.cross_entropy(logits, soft) + F.cross_entropy(logits.T, soft)) / 2


def label_classes(labels: Sequence[str | None] | None, count: int) -> torch.Tensor:
    """(N,) class indices for ``label_positives``; a DataError when any of the ``count`` pairs has none."""
    given = list(labels) if labels is not None and len(labels) == count else [None] * count
    missing = sum(not label for label in given)
    if missing:
        raise DataError(
            f"the scorer's label_positives needs a label on every training pair: {missing} of {count} "
            "have none (add a label column to the manifest, or turn label_positives off: --no-scorer-labels)"
        )
    index = {name: position for position, name in enumerate(sorted(set(given)))}
    return torch.tensor([index[label] for label in given])


@torch.no_grad()
def evaluate_scorer(
    scorer: AudioImageScorer,
    features: torch.Tensor,
    images: torch.Tensor,
    device: torch.device,
    labels: Sequence[str | None] | None = None,
    *,
    label_loss: bool = False,
) -> dict[str, float]:
    """Held-out contrastive loss and recall@1 over all given pairs at once (N ≤ a few thousand).

    With ``labels`` (reporting only; training never sees them): ``val_label_match``, how often the
    image a sound scores highest has the sound's label. Pairs that share only a class (av-digits,
    pseudo-ADVANCE) cannot be told apart within the class, so recall@1 stays near 1 / (pairs per class)
    while the label match is what the reranker needs.

    ``val_loss`` is the loss the scorer trains on: plain InfoNCE, or with ``label_loss`` (a scorer
    trained with ``label_positives``) and a label on every pair, the label-aware one
    (:func:`contrastive_loss` with the held-out labels as classes), so it compares with ``train_loss``.
    """
    scorer.eval()
    logits = scorer(features.to(device), images.to(device))  # (N, N)
    best = logits.argmax(dim=1).cpu()
    recall = (best == torch.arange(len(features))).float().mean().item()
    labelled = labels is not None and len(labels) == len(features) and all(labels)
    classes = label_classes(labels, len(features)).to(logits.device) if label_loss and labelled else None
    result = {"val_loss": contrastive_loss(logits, classes).item(), "val_recall_at_1": recall}
    if labels is not None and all(label is not None for label in labels):
        result["val_label_match"] = float(
            np.mean([labels[j] == labels[i] for i, j in enumerate(best.tolist())])
        )
    scorer.train()
    return result


def train_reranker(
    features: torch.Tensor,
    images: torch.Tensor,
    config: RerankerTrainConfig,
    *,
    labels: Sequence[str | None] | None = None,
    feature_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    val_labels: Sequence[str | None] | None = None,
    device: torch.device | str = "cpu",
) -> RerankerResult:
    """Train a scorer on pairs: ``features`` (N, S, F) float32 and ``images`` (N, H, W) or (N, H·W) uint8.

    ``labels`` (N,) are the training pairs' labels, used only with ``config.label_positives``;
    ``feature_stats`` (mean, std) per bin standardise the audio (e.g. the transformer's own); ``val`` is
    an optional held-out (features, images) pair set for the per-epoch report, ``val_labels`` its labels
    (reported, never trained on).

    Raises:
        DataError: fewer than 2 pairs, or ``label_positives`` with a pair that has no label.
    """
    config.check()
    count = features.shape[0]
    if count < 2:
        raise DataError(f"the scorer needs at least 2 training pairs, got {count}")
    classes = label_classes(labels, count) if config.label_positives else None
    device = torch.device(device)
    size = int(round(math.sqrt(images[0].numel())))
    images = images.reshape(count, size, size)
    rng = np.random.default_rng(config.seed)
    shape = RerankerConfig(
        audio_sections=features.shape[1],
        audio_bins=features.shape[2],
        image_size=size,
        embed_dim=config.embed_dim,
    )
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's random stream alone
        torch.manual_seed(config.seed)
        scorer = AudioImageScorer(shape)
    scorer = scorer.to(device)
    if feature_stats is not None:
        scorer.feature_mean.copy_(feature_stats[0])
        scorer.feature_std.copy_(feature_stats[1])
    optimizer = make_adamw(scorer, config.lr, config.weight_decay, betas=(0.9, 0.999))
    batch = min(config.batch_size, count)
    steps_per_epoch = count // batch  # the last partial batch is dropped: InfoNCE wants full batches
    # Always one process (it runs inside `train transformer`, whose launch check covers it).
    print(f"scorer: {describe_processes(1, device.type, batch)}", flush=True)
    total = config.epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    started, step = time.monotonic(), 0
    scorer.train()
    for epoch in range(config.epochs):
        order = torch.randperm(count, generator=generator)
        running = 0.0
        for position in range(steps_per_epoch):
            index = order[position * batch : (position + 1) * batch]
            f, x = _augment(features[index], images[index], config, rng)
            set_lr(
                optimizer, warmup_cosine(step, step / total, config.warmup_steps, config.lr, config.min_lr)
            )
            batch_classes = classes[index].to(device) if classes is not None else None
            loss = contrastive_loss(scorer(f.to(device), x.to(device)), batch_classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
            step += 1
        entry: dict[str, float] = {"epoch": epoch + 1, "train_loss": running / steps_per_epoch}
        if val is not None and len(val[0]) >= 2:
            held_out = val[1].reshape(-1, size, size)
            entry.update(
                evaluate_scorer(
                    scorer, val[0], held_out, device, val_labels, label_loss=config.label_positives
                )
            )
        entry["elapsed_s"] = round(time.monotonic() - started, 1)
        history.append(entry)
    scorer.eval()
    return RerankerResult(scorer, time.monotonic() - started, history)


def reranker_record(config: RerankerTrainConfig, result: RerankerResult) -> dict[str, Any]:
    """What goes into the saved scorer's config.json beside its shape."""
    return {
        "training": asdict(config),
        "history": result.history,
        "train_seconds": round(result.elapsed_s, 1),
    }
