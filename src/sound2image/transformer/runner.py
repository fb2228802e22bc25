"""The Image Transformer's one generation path: sounds -> FFT-section features -> one 32×32 image per
(sound, seed), single draws or best-of-N, each with its :class:`TransformerRecord`.

The CLI and any other caller (an evaluation harness, a web app) go through :func:`iter_images`, so
features -> sample -> record is written once. Every image is reproducible from its own seed alone: each
row of a batch draws from its own generator, so batching does not change the pixels.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sound2image.errors import UsageError
from sound2image.transformer.model import ImageTransformer
from sound2image.transformer.sampling import SamplingConfig, generate, tokens_to_images

#: The value of the ``tool`` key of every record (the same as SounDiff's).
TOOL = "sound2image generate"
#: The ``model.type`` of an Image Transformer record.
MODEL_TYPE = "image-transformer"
_SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(SamplingConfig) if f.name != "seed")
_KEYS = ("tool", "model", *_SAMPLING_KEYS, "seed", "best_of", "audio", "device")


@dataclass
class TransformerRecord:
    """Provenance and settings of one Image Transformer image (what its PNG metadata holds).

    Attributes:
        seed: the image's seed (with best-of-N: the seed asked for; each draw's own seed derives from it).
        sampling: temperature, top-k, top-p and guidance scale (its ``seed`` is ``seed``).
        model: ``type``, ``path`` (the model directory), ``config``, ``features`` and ``classes``, plus
            ``decoder_dtype`` when the decoder ran in half precision (:meth:`ImageTransformer.half_decoder`).
        audio: one entry per sound (``file``, ``path``, ``sha256``, ``duration``, ... when known).
        device: the device the image was drawn on.
        best_of: with ``candidates`` > 1: ``candidates`` (N), ``kept`` (the argmax of ``scores``) and
            ``scores`` (the scorer's score of each draw, rounded to 4 decimals).
        extra: any other metadata (``view``, ``package_version``, ...).
    """

    seed: int
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: dict[str, Any] = field(default_factory=dict)
    audio: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    best_of: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        """The PNG metadata of the image (the keys ``sound2image generate`` has always written)."""
        sampling = dataclasses.asdict(self.sampling)
        metadata: dict[str, Any] = {
            "tool": TOOL,
            "model": dict(self.model),
            **{key: sampling[key] for key in _SAMPLING_KEYS},
            "seed": self.seed,
        }
        if self.best_of:
            metadata["best_of"] = dict(self.best_of)
        metadata["audio"] = [dict(entry) for entry in self.audio]
        metadata["device"] = self.device
        metadata.update(self.extra)
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], source: str = "metadata") -> TransformerRecord:
        """The record of a PNG's metadata (:meth:`to_metadata`'s inverse).

        Raises:
            UsageError: the metadata is not an Image Transformer record (naming ``source``).
        """
        model = metadata.get("model")
        if not isinstance(model, dict) or model.get("type") != MODEL_TYPE or "seed" not in metadata:
            raise UsageError(f"{source}: not an Image Transformer record (no model.type {MODEL_TYPE!r})")
        seed = int(metadata["seed"])
        defaults = dataclasses.asdict(SamplingConfig())
        values = {key: metadata.get(key, defaults[key]) for key in _SAMPLING_KEYS}
        return cls(
            seed=seed,
            sampling=SamplingConfig(**values, seed=seed),
            model=dict(model),
            audio=[dict(entry) for entry in metadata.get("audio", [])],
            device=str(metadata.get("device", "cpu")),
            best_of=metadata.get("best_of"),
            extra={k: v for k, v in metadata.items() if k not in _KEYS},
        )

    @property
    def decoder_dtype(self) -> str:
        """The precision of the decoder's weights the image was drawn with (``float32`` when unrecorded)."""
        return str(self.model.get("decoder_dtype") or "float32")

    @classmethod
    def from_png(cls, path: str | os.PathLike[str]) -> TransformerRecord:
        """The record stored in a PNG written by ``sound2image generate --model transformer:DIR``."""
        from sound2image.outputs import read_png_metadata

        return cls.from_metadata(read_png_metadata(path), str(path))


@dataclass(frozen=True)
class PreparedAudio:
    """One sound ready for sampling: the clip the features come from, its (S, F) features and its
    record entry."""

    clip: Any
    features: torch.Tensor
    source: dict[str, Any]


@dataclass(frozen=True)
class TransformerImage:
    """One image of :func:`iter_images`: the index of its sound, its seed, the (size, size) uint8 pixels
    and its record."""

    index: int
    seed: int
    image: np.ndarray
    record: TransformerRecord


def feature_config(model: ImageTransformer, channel: str | int | None = None) -> Any:
    """The model's own :class:`SectionFeatureConfig` (its saved ``features``), with ``channel`` (when
    given) replacing its channel policy."""
    from sound2image.audio.sections import SectionFeatureConfig

    config = SectionFeatureConfig.from_dict(model.saved_metadata.get("features", {}))
    if channel is not None:
        config = SectionFeatureConfig.from_dict({**config.to_dict(), "channel": channel})
    return config


def sampling_config(
    model: ImageTransformer,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
) -> SamplingConfig:
    """The model's saved sampling settings, each overridden by the argument that is not None (checked).

    Raises:
        UsageError: a value out of range, naming the parameter.
    """
    saved = model.saved_metadata.get("sampling", {})
    config = SamplingConfig(
        temperature=temperature if temperature is not None else saved.get("temperature", 1.0),
        top_k=top_k if top_k is not None else saved.get("top_k"),
        top_p=top_p if top_p is not None else saved.get("top_p"),
        guidance_scale=guidance_scale if guidance_scale is not None else saved.get("guidance_scale", 1.0),
        seed=seed,
    )
    config.check()
    return config


def prepare_audio(item: Any, features: Any) -> PreparedAudio:
    """Load a sound (a path, or anything :func:`~sound2image.audio.sections.load_for_features` takes)
    and compute its FFT-section features with the :class:`SectionFeatureConfig` ``features``.

    Raises:
        AudioError: the sound cannot be decoded.
    """
    from sound2image.audio.sections import load_for_features, section_spectra
    from sound2image.diffusion.record import audio_file_record, describe_audio

    clip = load_for_features(item, features)
    if isinstance(item, (str, os.PathLike)):
        source = audio_file_record(Path(item), clip, None)
    else:
        source = describe_audio(clip)
    return PreparedAudio(clip, torch.from_numpy(section_spectra(clip.samples, features)), source)


def iter_images(
    model: ImageTransformer,
    audio: Sequence[Any],
    seeds: Sequence[int],
    sampling: SamplingConfig | None = None,
    *,
    scorer: Any = None,
    candidates: int = 1,
    batch_size: int = 8,
    features: Any = None,
    model_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Iterator[tuple[list[tuple[int, int]], Iterator[TransformerImage]]]:
    """The images of every (sound, seed), in batches of rows.

    Args:
        model: the Image Transformer, on its device.
        audio: the sounds: :class:`PreparedAudio`, or anything :func:`prepare_audio` takes.
        seeds: one image per sound and seed.
        sampling: temperature, top-k, top-p, guidance (default: :func:`sampling_config` of the model);
            its ``seed`` is replaced by each row's seed.
        scorer: an ``AudioImageScorer`` (needed for ``candidates`` > 1).
        candidates: best-of-N: draw N images per row (draw k seeded ``candidate_seed(seed, k)``; draw 0 is
            the plain image of the seed) and keep the one the scorer ranks first.
        batch_size: rows (sound, seed) per sampling pass.
        features: the :class:`SectionFeatureConfig` (default: :func:`feature_config` of the model); the
            record keeps it when given, else the model's saved ``features``.
        model_path: the model directory, recorded as ``model.path``.
        progress: show a progress bar over the pixels.

    Yields:
        ``(rows, images)`` per batch: ``rows`` the batch's ``(sound index, seed)`` pairs, ``images`` a lazy
        iterator of their :class:`TransformerImage`. An error while sampling a batch is raised from its
        ``images`` only: the caller may catch it and go on with the next batch.

    Raises:
        UsageError: ``candidates`` below 1, or above 1 without a scorer; ``batch_size`` below 1.
        AudioError: a sound given as a path cannot be decoded (all sounds are prepared before the first
            batch; prepare them with :func:`prepare_audio` to skip a bad one and go on).
    """
    from sound2image.transformer.reranker import generate_best_of
    from sound2image.validation import check_int

    check_int("candidates", candidates, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    if candidates > 1 and scorer is None:
        raise UsageError(
            f"candidates={candidates} needs a scorer (an AudioImageScorer)",
            parameters=["candidates", "scorer"],
        )
    saved = model.saved_metadata
    config = features if features is not None else feature_config(model)
    entry = {
        "type": MODEL_TYPE,
        "path": None if model_path is None else str(model_path),
        "config": saved.get("model"),
        "features": config.to_dict() if features is not None else saved.get("features"),
        "classes": saved.get("classes"),
    }
    if model.decoder_dtype != "float32":  # a half-precision decoder draws other pixels: part of the recipe
        entry["decoder_dtype"] = model.decoder_dtype
    sampling = sampling if sampling is not None else sampling_config(model)
    sampling.check()
    device = next(model.parameters()).device
    items = [a if isinstance(a, PreparedAudio) else prepare_audio(a, config) for a in audio]
    rows = [(index, int(seed)) for index in range(len(items)) for seed in seeds]

    def draw(chunk: list[tuple[int, int]]) -> Iterator[TransformerImage]:
        batch = torch.stack([items[i].features for i, _ in chunk]).to(device)  # (B, S, F)
        row_seeds = [seed for _, seed in chunk]
        ranking: list[dict[str, Any] | None] = [None] * len(chunk)
        if candidates == 1:
            generators = [torch.Generator().manual_seed(seed) for seed in row_seeds]
            tokens = generate(model, batch, sampling, generator=generators, progress=progress)
        else:
            best = generate_best_of(
                model, scorer, batch, sampling, candidates, seeds=row_seeds, progress=progress
            )
            tokens = best.tokens
            ranking = [
                {"candidates": candidates, "kept": int(k), "scores": [round(float(v), 4) for v in row]}
                for k, row in zip(best.chosen, best.scores, strict=True)
            ]
        pixels = tokens_to_images(tokens, model.config.image_size).numpy()  # (B, size, size)
        for (index, seed), image, rank in zip(chunk, pixels, ranking, strict=True):
            record = TransformerRecord(
                seed=seed,
                sampling=dataclasses.replace(sampling, seed=seed),
                model=dict(entry),
                audio=[dict(items[index].source)],
                device=str(device),
                best_of=rank,
            )
            yield TransformerImage(index, seed, image, record)

    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        yield chunk, draw(chunk)


def load_for_record(
    record: TransformerRecord, directory: str | os.PathLike[str], device: str = "cpu"
) -> ImageTransformer:
    """The model of ``directory`` as the record drew with it: its decoder in the recorded precision
    (``model.decoder_dtype``, float32 when absent; :meth:`ImageTransformer.half_decoder`).

    Raises:
        UsageError: the record names a decoder precision this version does not know.
    """
    from sound2image.devices import DECODER_DTYPES

    if record.decoder_dtype not in DECODER_DTYPES:
        known = ", ".join(DECODER_DTYPES)
        raise UsageError(f"the record's decoder precision {record.decoder_dtype!r} is not one of {known}")
    network = ImageTransformer.from_pretrained(directory, map_location=device)
    if record.decoder_dtype != "float32":
        network.half_decoder(record.decoder_dtype)
    return network


def regenerate(
    record: TransformerRecord | str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    audio: Any = None,
    device: str = "cpu",
) -> TransformerImage:
    """Draw the image of a record (or of a PNG's record) again: same model, sound, settings and seed.

    Args:
        record: a :class:`TransformerRecord`, or a PNG written with one.
        model: the model directory (default: the recorded ``model.path``).
        audio: the sound (default: the recorded audio path; its SHA-256 must match the record's).
        device: where to sample (the pixels do not depend on it on CPU; other devices may differ).

    Raises:
        UsageError: no model path or audio path recorded, or the audio file changed since.
    """
    from sound2image.outputs import file_sha256
    from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer

    if not isinstance(record, TransformerRecord):
        record = TransformerRecord.from_png(record)
    directory = model if model is not None else record.model.get("path")
    if not directory:
        raise UsageError("the record names no model directory; pass model=DIR", parameters=["model"])
    if audio is None:
        entry = record.audio[0] if record.audio else {}
        if not entry.get("path"):
            raise UsageError("the record names no audio file; pass audio=", parameters=["audio"])
        audio = entry["path"]
        if entry.get("sha256") and file_sha256(audio) != entry["sha256"]:
            raise UsageError(f"{audio}: the audio file changed since the image was made (SHA-256 differs)")
    network = load_for_record(record, directory, device)
    from sound2image.audio.sections import SectionFeatureConfig

    features = SectionFeatureConfig.from_dict(record.model.get("features") or {})
    candidates = int(record.best_of["candidates"]) if record.best_of else 1
    scorer = None
    if candidates > 1:
        scorer = AudioImageScorer.from_pretrained(Path(directory) / RERANKER_DIR, map_location=device)
    runs = iter_images(
        network,
        [audio],
        [record.seed],
        dataclasses.replace(record.sampling, seed=record.seed),
        scorer=scorer,
        candidates=candidates,
        features=features,
        model_path=directory,
    )
    (_, images) = next(runs)
    return next(images)
