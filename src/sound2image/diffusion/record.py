"""The generation record: everything needed to say where an image came from and to draw it again.

Every image :class:`~sound2image.diffusion.SounDiffPipeline` returns carries a :class:`GenerationRecord`
(``output.records[i]``). ``record.to_metadata()`` is the PNG metadata ``sound2image generate`` writes
(same keys as before the record existed, so older PNGs still read back with :meth:`from_metadata`), and
:func:`sound2image.diffusion.regenerate` draws the identical image again from a record or a PNG.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sound2image.diffusion.conditioning import embedding_from_record, embedding_to_record
from sound2image.errors import UsageError

#: The low-memory options of ``SounDiffPipeline.from_pretrained`` (recorded: they change GPU kernels).
LOW_MEMORY_OPTIONS = ("cpu_offload", "attention_slicing", "vae_tiling")
#: The value of the ``tool`` key of every SounDiff record.
TOOL = "sound2image generate"


@dataclass
class GenerationSettings:
    """Every sampling setting of one image besides the conditioning and the seed (stored in metadata).

    ``height``/``width`` None mean the model's native size; ``scheduler`` None keeps the model's own.
    """

    prompt: str = ""
    negative_prompt: str | None = None
    num_inference_steps: int = 20
    guidance_scale: float = 10.0
    noise_level: int = 0
    height: int | None = None
    width: int | None = None
    scheduler: str | None = None

    def call_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`SounDiffPipeline.__call__` these settings stand for."""
        kwargs = dataclasses.asdict(self)
        kwargs.pop("scheduler")
        return kwargs


#: The record's own keys in the metadata; every other key is kept in ``GenerationRecord.extra``.
_SETTINGS_KEYS = tuple(f.name for f in dataclasses.fields(GenerationSettings))
_KEYS = (
    "tool",
    "model",
    *_SETTINGS_KEYS,
    "calibration",
    "audio_encoder_clips",
    "audio_channel",
    "device",
    "dtype",
    "low_memory",
    "seed",
    "audio",
    "image",
    "best_of",
    "embedding",
)


@dataclass
class GenerationRecord:
    """Provenance and settings of one generated image.

    Attributes:
        image_embeds: (1, D) float32 CPU tensor, the exact conditioning vector the image was drawn from.
        seed: the image's seed (with best-of-N: the seed asked for; the kept draw's own seed is
            ``draw_seed``); None when the image cannot be redrawn from a seed alone (no seed, a
            ``generator`` or ``latents`` given, or one of several images drawn from one generator).
        settings: prompt, negative prompt, steps, guidance, noise level, scheduler and size.
        model: the weights: ``pipeline``, ``revision``, ``unet``, ``unet_revision``, ``audio_encoder``
            and the fine-tuning record ``training``.
        calibration: the :class:`EmbeddingCalibration` the conditioning was scaled with, as a dict.
        audio: one entry per sound (``file``, ``path``, ``sha256``, ``weight``, ... when known).
        image: the reference image mixed into the conditioning (its ``weight``, file and SHA-256 when
            known), or None.
        audio_encoder_clips: how the audio encoder cut each sound (clips per file, clip duration, layout).
        audio_channel: the audio encoder's channel policy ("mean", "first" or an index).
        device: the device the image was drawn on (e.g. "cpu", "cuda:0").
        dtype: the generator's weights dtype (e.g. "float32").
        low_memory: which of ``cpu_offload``, ``attention_slicing``, ``vae_tiling`` were on.
        best_of: with ``candidates`` > 1: ``candidates`` (N), ``seeds`` (each draw's seed), ``scores``
            (each draw's cosine with the conditioning, in the pipeline's image-encoder space) and
            ``kept`` (the index of the kept draw, the argmax of ``scores``).
        extra: any other metadata (storyboard window, ``regenerated_from``, ``package_version``, ...).
    """

    image_embeds: torch.Tensor
    seed: int | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    model: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    audio: list[dict[str, Any]] = field(default_factory=list)
    image: dict[str, Any] | None = None
    audio_encoder_clips: dict[str, Any] | None = None
    audio_channel: str | int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    low_memory: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(LOW_MEMORY_OPTIONS, False))
    best_of: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def draw_seed(self) -> int | None:
        """The seed the kept image was drawn with: ``seed``, or with best-of-N the kept draw's seed."""
        if self.best_of:
            return int(self.best_of["seeds"][int(self.best_of["kept"])])
        return self.seed

    def to_metadata(self) -> dict[str, Any]:
        """The JSON-safe metadata dict (the PNG's ``sound2image`` chunk; the embedding as exact bytes)."""
        metadata: dict[str, Any] = {
            "tool": TOOL,
            "model": dict(self.model),
            **dataclasses.asdict(self.settings),
            "calibration": dict(self.calibration),
            "audio_encoder_clips": self.audio_encoder_clips,
            "audio_channel": self.audio_channel,
            "device": self.device,
            "dtype": self.dtype,
            "low_memory": dict(self.low_memory),
            "seed": self.seed,
            "audio": [dict(entry) for entry in self.audio],
        }
        if self.image is not None:
            metadata["image"] = dict(self.image)
        if self.best_of is not None:
            metadata["best_of"] = dict(self.best_of)
        metadata.update(self.extra)
        metadata["embedding"] = embedding_to_record(self.image_embeds)
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], source: str = "metadata") -> GenerationRecord:
        """The record of a metadata dict written by :meth:`to_metadata` or by ``sound2image generate``.

        Raises:
            UsageError: the metadata holds no embedding or no seed (it cannot be regenerated), or the
                embedding is unreadable; the message starts with ``source``.
        """
        if "embedding" not in metadata or "seed" not in metadata:
            raise UsageError(f"{source}: metadata has no stored embedding and seed; it cannot be regenerated")
        settings = GenerationSettings(**{k: metadata[k] for k in _SETTINGS_KEYS if k in metadata})
        seed = metadata["seed"]
        return cls(
            image_embeds=embedding_from_record(metadata["embedding"], source),
            seed=None if seed is None else int(seed),
            settings=settings,
            model=dict(metadata.get("model") or {}),
            calibration=dict(metadata.get("calibration") or {}),
            audio=[dict(entry) for entry in metadata.get("audio") or []],
            image=metadata.get("image"),
            audio_encoder_clips=metadata.get("audio_encoder_clips"),
            audio_channel=metadata.get("audio_channel"),
            device=str(metadata.get("device", "cpu")),
            dtype=str(metadata.get("dtype", "float32")),
            low_memory={k: bool((metadata.get("low_memory") or {}).get(k)) for k in LOW_MEMORY_OPTIONS},
            best_of=metadata.get("best_of"),
            extra={k: v for k, v in metadata.items() if k not in _KEYS},
        )

    @classmethod
    def from_png(cls, path: str | os.PathLike[str]) -> GenerationRecord:
        """The record stored in a PNG written by ``sound2image generate`` (or :func:`save_png`).

        Raises:
            UsageError: no such file, no sound2image metadata, or nothing to regenerate from.
        """
        from sound2image.outputs import read_png_metadata

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: no such PNG file")
        return cls.from_metadata(read_png_metadata(path), str(path))


def describe_file(path: str | os.PathLike[str], weight: float | None = None) -> dict[str, Any]:
    """The record entry of an input file: its name, path, SHA-256 and weight."""
    from sound2image.outputs import file_sha256

    path = Path(path)
    return {"file": path.name, "path": str(path), "sha256": file_sha256(path), "weight": weight}


def load_reference_image(path: str | os.PathLike[str], weight: float = 0.5) -> tuple[Any, dict[str, Any]]:
    """A reference image file and its record entry (:func:`describe_file` with ``weight``), for the
    ``image`` and ``image_record`` of :func:`~sound2image.diffusion.iter_images`.

    Raises:
        ImageError: the file is missing or not a readable image.
    """
    from sound2image.data import load_image

    picture = load_image(path)
    return picture, describe_file(path, weight)


def describe_audio(item: Any, weight: float | None = None) -> dict[str, Any]:
    """The record entry of one audio input: file name, path and SHA-256 for a file path; name, duration
    and length action for a decoded clip; only the weight for raw samples or bytes."""
    if isinstance(item, (str, os.PathLike)):
        return describe_file(item, weight)
    if hasattr(item, "sample_rate") and hasattr(item, "duration"):  # an AudioClip
        duration = round(float(item.duration), 6)
        return {
            "file": getattr(item, "name", None),
            "weight": weight,
            "duration": duration,
            "window": [0.0, duration],
            "length_action": getattr(item, "length_action", "none"),
        }
    return {"file": None, "weight": weight}


def audio_file_record(path: Path, clip: Any, weight: float | None) -> dict[str, Any]:
    """The record entry of an audio file decoded as ``clip``: file, path, SHA-256, weight, duration,
    the window used (the whole clip) and the length action."""
    duration = round(float(clip.duration), 6)
    return {
        **describe_audio(path, weight),
        "duration": duration,
        "window": [0.0, duration],
        "length_action": getattr(clip, "length_action", "none"),
    }
