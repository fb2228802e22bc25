"""The data of a SounDiff run: the pairs and split, the calibration, the cache pass, and the seeded
order and noise of every micro-batch (:class:`StepPlan`)."""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sound2image.diffusion.calibration import EmbeddingCalibration
from sound2image.errors import DataError, UsageError
from sound2image.training.rundir import SPLIT_FILE
from sound2image.training.soundiff.config import SounDiffTrainConfig


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (stable across processes, unlike Python's salted ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class StepPlan:
    """Which samples each micro-batch uses and how many updates the run makes."""

    num_samples: int
    batch_size: int  # per process
    world_size: int
    accumulation: int
    total_steps: int
    seed: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch  # the last partial batch is dropped (fixed shapes)

    @classmethod
    def build(cls, config: SounDiffTrainConfig, num_samples: int, world_size: int) -> StepPlan:
        assert config.batch_size is not None and config.epochs is not None  # resolved config
        global_batch = config.batch_size * world_size
        if num_samples < global_batch:
            raise DataError(
                f"{config.data}: {num_samples} usable training pairs, fewer than one global batch of "
                f"{global_batch} (batch size {config.batch_size} x {world_size} processes)"
            )
        per_epoch = num_samples // global_batch
        total = config.max_steps or math.ceil(config.epochs * per_epoch / config.gradient_accumulation_steps)
        return cls(
            num_samples, config.batch_size, world_size, config.gradient_accumulation_steps, total, config.seed
        )

    def epoch_of(self, step: int) -> int:
        return (step * self.accumulation) // self.batches_per_epoch

    def global_indices(self, micro: int) -> torch.Tensor:
        """(G,) dataset rows of global micro-batch ``micro`` (epoch-wise seeded permutation)."""
        epoch, position = divmod(micro, self.batches_per_epoch)
        order = torch.randperm(
            self.num_samples, generator=torch.Generator().manual_seed(mix_seed(self.seed, "order", epoch))
        )
        return order[position * self.global_batch : (position + 1) * self.global_batch]

    def generator(self, micro: int) -> torch.Generator:
        """The generator of micro-batch ``micro``'s noise (same on every process)."""
        return torch.Generator().manual_seed(mix_seed(self.seed, "noise", micro))


# --- data, calibration, cache ----------------------------------------------------------------------


@dataclass
class SelectedData:
    train: list[Any]
    val: list[Any]
    problems: list[str]
    split: Any


def select_pairs(config: SounDiffTrainConfig, run_dir: Path) -> SelectedData:
    """Scan, keep ``config.classes``, and load the run's grouped split or make one (not saved here)."""
    from sound2image.data import load_or_create_split, scan_pairs, split_pairs

    scan = scan_pairs(config.data)
    pairs = scan.pairs
    if config.classes:
        available = sorted({p.label for p in pairs if p.label is not None})
        unknown = [name for name in config.classes if name not in available]
        if unknown:
            raise UsageError(
                f"{config.data}: no class {unknown[0]!r} "
                f"(classes: {', '.join(available) or 'none, the data is unlabelled'})"
            )
        pairs = [p for p in pairs if p.label in config.classes]
    if not pairs:
        raise DataError(f"{config.data}: no audio/image pairs found")
    path = run_dir / SPLIT_FILE
    if path.is_file():  # resuming: the same split, checked against the data and settings
        split = load_or_create_split(path, pairs, val_fraction=config.val_fraction, seed=config.seed)
    else:  # saved by the main process once the run starts (nothing is written for a failed start)
        split = split_pairs(pairs, val_fraction=config.val_fraction, seed=config.seed)
    return SelectedData(
        train=list(split.train), val=list(split.val), problems=list(scan.problems), split=split
    )


def resolve_calibration(
    config: SounDiffTrainConfig, pipe: Any, train_pairs: list[Any], run_dir: Path
) -> EmbeddingCalibration:
    """The run's stored calibration, else ``--calibration``, else the base model's measured one, else
    measured on (up to ``calibration_images``) training images with the pipeline's image encoder."""
    stored = EmbeddingCalibration.load(run_dir)
    if stored is not None:
        return stored
    if config.calibration:
        given = EmbeddingCalibration.load(config.calibration)
        if given is None:
            raise UsageError(f"{config.calibration}: no sound2image_calibration.json in this directory")
        return given
    if pipe.calibration.is_measured:
        return pipe.calibration
    from sound2image.diffusion.conditioning import embed_image_files

    count = min(len(train_pairs), config.calibration_images)
    step = len(train_pairs) / count
    paths = [train_pairs[int(i * step)].image for i in range(count)]  # evenly spread over the sorted keys
    # The backbone's own image space: unCLIP's encoder, or the adapter's ViT-H one.
    owner = pipe.backbone.image_encoder_owner
    result = embed_image_files(owner, paths, batch_size=config.cache_batch_size)
    source = f"mean image-encoder embedding norm over {len(result.names)} training images of {config.data}"
    return EmbeddingCalibration.from_image_embeddings(result.embeds, source=source)


def make_cache_pass(config: SounDiffTrainConfig, pipe: Any, accelerator: Any, run_dir: Path) -> Any:
    """The :class:`~sound2image.training.cache.CachePass` for this run's settings and process."""
    from accelerate.utils import gather_object

    from sound2image.training.cache import AudioSettings, CachePass, LatentSettings, module_fingerprint

    encoder = pipe.audio_encoder
    if encoder is None:
        raise UsageError(f"{config.base_model}: the base model has no audio encoder")
    device = accelerator.device
    # The run's channel policy becomes the encoder's (so it is in the fingerprint, the cache key, and in
    # the validation pipeline); the export records it in its training config for generation.
    encoder.config = encoder.sampling_config(channel=config.audio_channel)

    def embed(paths: Any) -> torch.Tensor:
        return encoder.embed([str(p) for p in paths], batch_size=config.cache_batch_size, device=device)

    return CachePass(
        cache_root=Path(config.cache_dir) if config.cache_dir else run_dir / "cache",
        vae=pipe.unclip.vae,
        embed=embed,
        latent_settings=LatentSettings(
            resolution=config.resolution,
            vae=module_fingerprint(pipe.unclip.vae),
            dtype=config.cache_dtype,
            flip=config.random_flip,
        ),
        audio_settings=AudioSettings(
            encoder=module_fingerprint(encoder, extra=getattr(encoder, "config", None))
        ),
        batch_size=config.cache_batch_size,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        barrier=accelerator.wait_for_everyone,
        gather=gather_object,
        progress=config.progress and accelerator.is_main_process,
    )


def validation_inputs(
    config: SounDiffTrainConfig, cache: Any, val_pairs: list[Any]
) -> tuple[torch.Tensor | None, list[str]]:
    """(K, D) raw embeddings of the fixed validation audios and their names (None when validation is off)."""
    if config.validation_steps is None:
        return None, []
    paths = [Path(p) for p in config.validation_audios]
    if not paths and val_pairs:
        count = min(config.num_validation_audios, len(val_pairs))
        paths = [
            val_pairs[int(i * len(val_pairs) / count)].audio for i in range(count)
        ]  # spread over classes
    if not paths:
        if cache.rank == 0:
            print(
                "warning: no validation images (the validation split and validation_audios are empty)",
                file=sys.stderr,
            )
        return None, []
    return cache.embed_paths(paths), [p.name for p in paths]
