"""Training the small image classifier that judges generated images (``sound2image train classifier``).

The model, its saved form and the AIC score live in :mod:`sound2image.metrics.classifier`; this module
only fits it (AdamW, warm-up + cosine learning rate, random-shift augmentation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sound2image.errors import DataError
from sound2image.metrics.classifier import ClassifierConfig, ImageClassifier, SmallCNN, _to_input
from sound2image.training.checkpoints import announce_processes
from sound2image.training.schedules import warmup_cosine


def _random_shift(batch: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero fill): cheap, label-preserving augmentation."""
    if max_shift <= 0:
        return batch
    padded = F.pad(batch, (max_shift,) * 4)
    size = batch.shape[-1]
    offsets = torch.randint(0, 2 * max_shift + 1, (batch.shape[0], 2), generator=generator)
    return torch.stack(
        [padded[i, :, y : y + size, x : x + size] for i, (y, x) in enumerate(offsets.tolist())]
    )


def train_classifier(
    images: np.ndarray, labels: Sequence[str], config: ClassifierConfig | None = None, progress: bool = False
) -> ImageClassifier:
    """Train a :class:`SmallCNN` on (N, S, S) uint8 images with string labels (AdamW, cosine lr).

    Seeded by ``config.seed`` (init, dropout, data order); the caller's global random stream is left as
    it was.
    """
    with torch.random.fork_rng(devices=[]):
        return _train(images, labels, config, progress)


def _train(
    images: np.ndarray, labels: Sequence[str], config: ClassifierConfig | None, progress: bool
) -> ImageClassifier:
    from tqdm.auto import tqdm

    if len(labels) == 0:
        raise DataError("classifier: no training images")
    config = config or ClassifierConfig()
    announce_processes("train classifier", 1, "cpu", config.batch_size, distributed=False, label="classifier")
    classes = sorted({str(label) for label in labels})
    config.classes = classes
    config.image_size = int(images.shape[-1])
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = SmallCNN(len(classes), config.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x = torch.as_tensor(np.asarray(images))
    y = torch.tensor([classes.index(str(label)) for label in labels])
    steps_per_epoch = math.ceil(len(y) / config.batch_size)
    total = config.epochs * steps_per_epoch
    model.train()
    step = 0
    for _ in tqdm(range(config.epochs), disable=not progress, desc="classifier epochs"):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            index = order[start : start + config.batch_size]
            batch = _random_shift(_to_input(x[index]), config.max_shift, generator)
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(
                    step, step / total, steps_per_epoch // 2, config.lr, config.lr / 50
                )
            loss = F.cross_entropy(model(batch), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return ImageClassifier(model.eval(), config)
