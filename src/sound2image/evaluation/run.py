"""One evaluation run: items from the split -> cached images (every process) -> scores, ``results.json`` and
the report (main process only).

:func:`evaluate` is the library's entry point (``sound2image evaluate`` only parses flags into an
:class:`EvaluationConfig` and calls it). Everything it writes lands in ``config.out``:
``evaluation_config.json``, ``cache/`` (the images, see :mod:`~sound2image.evaluation.generation`),
``results.json`` (the format in :data:`RESULTS_FORMAT`, version :data:`RESULTS_VERSION`) and
``report.html``. The numbers are computed by :func:`sound2image.evaluation.scoring.score` from the cache
alone, on the main process, so a run on N processes gives the same ``results.json`` numbers as one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sound2image import __version__
from sound2image.atomic import write_text_atomic
from sound2image.errors import DataError, UsageError
from sound2image.evaluation.generation import (
    CACHE_DIR,
    GenerationOptions,
    GenerationResult,
    generate_images,
    process_state,
)
from sound2image.evaluation.systems import SystemSpec

RESULTS_FILE = "results.json"
#: Image features kept between runs (FID/KID of real and generated images), under ``<out>/cache``.
FEATURES_DIR = "features"
CONFIG_FILE = "evaluation_config.json"
RESULTS_FORMAT = "sound2image-evaluation"
RESULTS_VERSION = 1
#: The run-directory file that holds a training run's split (training/rundir.py's SPLIT_FILE).
SPLIT_FILE = "split.json"
FEATURES = ("inception", "clip")
CLASSIFIER_PREFIX = "classifier:"


@dataclass
class EvaluationConfig:
    """Every setting of one evaluation (saved as ``<out>/evaluation_config.json``).

    Attributes:
        data: the paired dataset (folder or manifest, as ``scan_pairs``).
        out: the output folder.
        systems: the columns (:func:`~sound2image.evaluation.systems.parse_systems`,
            :func:`~sound2image.evaluation.systems.paper_table1`).
        split: ``"val"`` — the validation side of the split a system's run directory holds
            (``split.json``; the first system that has one), else the dataset's own grouped split
            (90/10, seed 42, as training makes it) — or the path of a split file.
        split_by: evaluate on the pairs whose manifest column ``split_by`` (``speaker``, ``label``,
            ``group`` or any extra column) has one of the ``holdout`` values
            (:func:`sound2image.data.split.split_by_column`), e.g. an unseen speaker; replaces ``split``.
        holdout: the held-out values of ``split_by``.
        seeds: one image per item, system and seed.
        max_items: evaluate at most this many items (taken round-robin over classes, in key order).
        features: FID/KID feature space: ``inception``, ``clip`` (the SounDiff pipeline's own image
            encoder) or ``classifier:DIR``.
        classifier: a trained image classifier directory (``train classifier``) for AIC; None: no AIC.
        model: the SounDiff base pipeline used by the judges (``clip`` features, the AIS/IIS pairing);
            None: the first SounDiff system's, else the default.
        generation: how images are drawn.
        k: AIC@k.
        resamples, level, bootstrap_seed: the percentile bootstrap over clips.
        command: the command line that started the run (recorded in results.json).
    """

    data: str
    out: str
    systems: list[SystemSpec]
    split: str = "val"
    split_by: str | None = None
    holdout: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [1])
    max_items: int | None = None
    features: str = "inception"
    classifier: str | None = None
    model: str | None = None
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    k: int = 3
    resamples: int = 1000
    level: float = 0.95
    bootstrap_seed: int = 0
    command: str | None = None

    def check(self) -> None:
        """Raises UsageError naming the setting (``seeds``, ``max_items``, ``features``, ...)."""
        from sound2image.validation import check_int, check_number

        if not self.systems:
            raise UsageError("systems: give at least one system", parameters=["systems"])
        ids = [spec.id for spec in self.systems]
        if len(set(ids)) != len(ids):
            raise UsageError(f"systems: two systems share an id ({ids})", parameters=["systems"])
        if not self.seeds:
            raise UsageError("seeds: give at least one seed", parameters=["seeds"])
        if len(set(self.seeds)) != len(self.seeds):
            raise UsageError(f"seeds: a seed is listed twice ({self.seeds})", parameters=["seeds"])
        for seed in self.seeds:
            _named(check_int, "seeds", seed, minimum=0, maximum=2**63 - 1)
        if self.max_items is not None:
            _named(check_int, "max_items", self.max_items, minimum=1)
        _named(check_int, "k", self.k, minimum=1)
        _named(check_int, "resamples", self.resamples, minimum=1)
        _named(
            check_number,
            "level",
            self.level,
            minimum=0.0,
            maximum=1.0,
            min_inclusive=False,
            max_inclusive=False,
        )
        if self.features not in FEATURES and not self.features.startswith(CLASSIFIER_PREFIX):
            raise UsageError(
                f"features must be inception, clip or classifier:DIR, got {self.features!r}",
                parameters=["features"],
            )
        if self.features.startswith(CLASSIFIER_PREFIX):
            folder = self.features[len(CLASSIFIER_PREFIX) :]
            if not Path(folder).is_dir():
                raise UsageError(
                    f"features {self.features}: no such classifier directory", parameters=["features"]
                )
        if self.classifier is not None and not Path(self.classifier).is_dir():
            raise UsageError(f"classifier {self.classifier}: no such directory", parameters=["classifier"])
        if self.split_by is not None and not self.holdout:
            raise UsageError(
                f"split_by {self.split_by}: give the held-out value(s) with holdout", parameters=["holdout"]
            )
        if self.holdout and self.split_by is None:
            raise UsageError("holdout needs split_by (the column it refers to)", parameters=["split_by"])
        if self.split_by is not None and self.split != "val":
            raise UsageError(
                f"split {self.split} and split_by {self.split_by}: give one of them", parameters=["split_by"]
            )
        if self.split != "val" and not Path(self.split).is_file():
            raise UsageError(f"split {self.split}: expected 'val' or a split file", parameters=["split"])
        try:
            self.generation.check()
        except UsageError as error:
            name = str(error).split(" ", 1)[0]
            raise UsageError(str(error), parameters=[name]) from None

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["systems"] = [spec.to_dict() for spec in self.systems]
        values["generation"] = self.generation.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationConfig:
        values = dict(values)
        values["systems"] = [SystemSpec.from_dict(v) for v in values.get("systems", [])]
        values["generation"] = GenerationOptions(**values.get("generation", {}))
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def save(self, path: str | os.PathLike[str]) -> Path:
        return _write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvaluationConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _named(check: Any, name: str, value: Any, **bounds: Any) -> Any:
    try:
        return check(name, value, **bounds)
    except UsageError as error:
        raise UsageError(str(error), parameters=[name]) from None


def _write_json(path: Path, values: Any) -> Path:
    """Indented JSON, atomically (temporary file + rename)."""
    return write_text_atomic(path, json.dumps(values, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------- items


def _item_type() -> Any:
    """The contract's ``EvalItem`` (:mod:`sound2image.evaluation.scoring`)."""
    from sound2image.evaluation.scoring import EvalItem

    return EvalItem


def run_split_file(systems: Sequence[SystemSpec]) -> Path | None:
    """The ``split.json`` of the first system whose run directory holds one: a SounDiff U-Net's run
    directory, or an Image Transformer's model directory or the run directory above it."""
    for spec in systems:
        if spec.kind == "soundiff" and spec.unet is not None:
            candidates = [Path(spec.unet) / SPLIT_FILE]
        elif spec.kind == "transformer" and spec.source is not None:
            candidates = [Path(spec.source) / SPLIT_FILE, Path(spec.source).parent / SPLIT_FILE]
        else:
            continue
        for path in candidates:
            if path.is_file():
                return path
    return None


def select_pairs(
    data: str,
    split: str,
    systems: Sequence[SystemSpec],
    max_items: int | None,
    split_by: str | None = None,
    holdout: Sequence[str] = (),
) -> tuple[list[Any], dict[str, Any]]:
    """The pairs to evaluate and the ``data`` part of results.json (without ``n_items``).

    ``split="val"``: the validation side of the first run directory's ``split.json`` (the split that
    system was trained with), else of the dataset's own grouped split (:func:`sound2image.data.split_pairs`,
    90/10, seed 42). A path: that split file's validation side. ``max_items`` keeps that many, taken
    round-robin over the classes in sorted order (each class in key order), so a small N still covers
    every class. ``split_by``: the pairs whose column ``split_by`` has one of the ``holdout`` values
    (:func:`sound2image.data.split.split_by_column`'s validation side), whatever ``split`` says.

    Raises:
        DataError: the dataset cannot be scanned, the split file does not fit it, or the split is empty.
        UsageError: ``split_by`` names a column no pair has, or a ``holdout`` value matches no pair.
    """
    from sound2image.data import Split, scan_pairs, split_pairs

    scan = scan_pairs(data)
    split_file = None if split_by is not None else Path(split) if split != "val" else run_split_file(systems)
    if split_by is not None:
        from sound2image.data.split import split_by_column

        chosen = split_by_column(scan.pairs, split_by, list(holdout)).val
    elif split_file is not None:
        chosen = Split.load(split_file, scan.pairs, allow_new=True).val
    else:
        chosen = split_pairs(scan.pairs).val
    if not chosen:
        where = (
            f"{split_file} has"
            if split_file is not None
            else f"the grouped split of {len(scan.pairs)} pairs has"
        )
        raise DataError(
            f"{data}: {where} no validation pairs; pass split=FILE (a split file with some)",
            parameters=["split"],
        )
    chosen = sorted(chosen, key=lambda pair: pair.key)
    if max_items is not None and max_items < len(chosen):
        by_label: dict[str, list[Any]] = {}
        for pair in chosen:
            by_label.setdefault(pair.label or "", []).append(pair)
        queues = [by_label[label] for label in sorted(by_label)]
        picked: list[Any] = []
        while len(picked) < max_items:
            for queue in queues:
                if queue and len(picked) < max_items:
                    picked.append(queue.pop(0))
        chosen = sorted(picked, key=lambda pair: pair.key)
    info = {
        "path": str(Path(data).resolve()),
        "split": "column" if split_by is not None else "val" if split == "val" else "file",
        "split_file": None if split_file is None else str(split_file.resolve()),
        "split_by": split_by,
        "holdout": sorted(holdout) if split_by is not None else [],
        "classes": sorted({pair.label for pair in chosen if pair.label is not None}),
    }
    return chosen, info


def make_items(pairs: Sequence[Any]) -> tuple[list[Any], list[dict[str, str]]]:
    """One ``EvalItem`` per pair (its key as id, the audio file's SHA-256); a pair whose audio cannot be
    read is listed as a bad item instead."""
    from sound2image.outputs import file_sha256

    item_type = _item_type()
    items, bad = [], []
    for pair in pairs:
        try:
            digest = file_sha256(pair.audio)
        except OSError as error:
            bad.append(
                {"item": pair.key, "problem": f"{pair.audio}: cannot read ({error.strerror or error})"}
            )
            continue
        items.append(
            item_type(
                id=pair.key,
                label=pair.label,
                audio=Path(pair.audio),
                image=Path(pair.image),
                audio_sha256=digest,
            )
        )
    return items, bad


# ---------------------------------------------------------------------- judges


def _judge_pipeline(config: EvaluationConfig) -> Any:
    """The SounDiff base pipeline (no fine-tuned U-Net) whose audio and image encoders judge."""
    from sound2image.diffusion import SounDiffPipeline
    from sound2image.evaluation.systems import judge_backbone

    soundiff = [spec for spec in config.systems if spec.kind == "soundiff"]
    model = config.model or (soundiff[0].source if soundiff else None)
    device = config.generation.device
    return SounDiffPipeline.from_pretrained(
        model,
        device=device,
        dtype=config.generation.dtype,
        variant=config.generation.variant,
        audio_encoder_weights=config.generation.imagebind_weights,
        **judge_backbone(config.systems),  # IP-Adapter systems: their backbone and a ViT-H encoder
    )


class SounDiffPairing:
    """AIS/IIS space of the SounDiff systems: ImageBind audio (``pipe.encode_audio``) against the
    pipeline's own image encoder (``encode_images``). The two share a space by construction (unCLIP is
    conditioned on it), so this judge is partly circular: the report says so."""

    def __init__(self, pipe: Any, batch_size: int = 8) -> None:
        self.pipe = pipe
        self.batch_size = batch_size
        self.name = f"imagebind-audio/unclip-image-encoder:{pipe.info.model}"
        self.circular = True  # the system was conditioned in this very space

    def embed_audio(self, items: Sequence[Any]) -> Any:
        """(N, D) ImageBind embeddings of the items' sounds."""
        import torch

        from sound2image.audio import load_audio

        rows = []
        items = list(items)
        for start in range(0, len(items), self.batch_size):  # a batch of decoded clips in memory at a time
            clips = [load_audio(item.audio, mono=False) for item in items[start : start + self.batch_size]]
            rows.append(self.pipe.encode_audio(clips, batch_size=self.batch_size))
        return torch.cat(rows) if rows else torch.zeros((0, self.pipe.embedding_dim))

    def embed_images(self, images: Sequence[Any]) -> Any:
        """(N, D) embeddings of PIL images through the pipeline's image encoder."""
        from sound2image.diffusion import encode_images

        return encode_images(self.pipe.unclip, [image.convert("RGB") for image in images])


class TransformerPairing:
    """AIS/IIS space of an Image Transformer: its own contrastive audio-image scorer (``DIR/reranker``)."""

    def __init__(self, directory: str, device: str = "cpu") -> None:
        from sound2image.transformer import ImageTransformer
        from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer
        from sound2image.transformer.runner import feature_config

        self.scorer = AudioImageScorer.from_pretrained(Path(directory) / RERANKER_DIR, map_location=device)
        self.features = feature_config(ImageTransformer.from_pretrained(directory, map_location="cpu"))
        self.device = device
        self.name = f"transformer-scorer:{directory}"

    def embed_audio(self, items: Sequence[Any]) -> Any:
        """(N, E) scorer embeddings of the items' FFT-section features."""
        import torch

        from sound2image.transformer.runner import prepare_audio

        features = torch.stack([prepare_audio(item.audio, self.features).features for item in items])
        with torch.no_grad():
            return self.scorer.embed_audio(features.to(self.device)).cpu()

    def embed_images(self, images: Sequence[Any]) -> Any:
        """(N, E) scorer embeddings of PIL images (grayscale, resized to the scorer's size)."""
        import numpy as np
        import torch
        from PIL import Image

        size = self.scorer.config.image_size
        pixels = np.stack(
            [
                np.asarray(image.convert("L").resize((size, size), Image.Resampling.BILINEAR))
                for image in images
            ]
        )
        with torch.no_grad():
            return self.scorer.embed_images(torch.from_numpy(pixels).to(self.device)).cpu()


def preflight(config: EvaluationConfig) -> dict[str, Any]:
    """The judges that need no SounDiff pipeline, loaded before any image is drawn, so that missing
    Inception weights or a broken classifier directory stop the run at once, not after hours of drawing:
    ``{"features": ...}`` for ``inception`` and ``classifier:DIR``, ``{"classifier": ...}`` for
    ``config.classifier``.

    Raises:
        WeightsError: the Inception weights or a classifier cannot be loaded (one line saying what to do).
    """
    loaded: dict[str, Any] = {}
    if config.features == "inception":
        from sound2image.metrics.features import inception_features

        loaded["features"] = inception_features()
    elif config.features.startswith(CLASSIFIER_PREFIX):
        from sound2image.metrics import ImageClassifier
        from sound2image.metrics.features import classifier_features

        folder = config.features[len(CLASSIFIER_PREFIX) :]
        loaded["features"] = classifier_features(ImageClassifier.from_pretrained(folder), config.features)
    if config.classifier is not None:
        from sound2image.metrics import ImageClassifier

        loaded["classifier"] = ImageClassifier.from_pretrained(config.classifier)
    return loaded


def build_judges(config: EvaluationConfig, loaded: dict[str, Any] | None = None) -> Any:
    """The contract's ``Judges``: FID/KID features (``config.features``), the AIC classifier and one
    AIS/IIS pairing per system (SounDiff: :class:`SounDiffPairing`; transformer: :class:`TransformerPairing`
    when its directory holds a scorer, else none). ``loaded``: what :func:`preflight` returned."""
    from sound2image.evaluation.scoring import Judges

    loaded = dict(loaded) if loaded is not None else preflight(config)
    pipe = None

    def judge_pipe() -> Any:
        nonlocal pipe
        if pipe is None:
            pipe = _judge_pipeline(config)
        return pipe

    features = loaded.get("features")
    if config.features == "clip":
        from sound2image.diffusion import encode_images
        from sound2image.metrics.features import encoder_features

        base = judge_pipe()
        features = encoder_features(
            lambda images: encode_images(base.unclip, list(images)), "clip", base.embedding_dim
        )
    classifier = loaded.get("classifier")
    pairings: dict[str, Any] = {}
    soundiff_pairing = None
    transformer_pairings: dict[str, Any] = {}
    for spec in config.systems:
        if spec.kind == "soundiff":
            if soundiff_pairing is None:
                soundiff_pairing = SounDiffPairing(judge_pipe(), config.generation.batch_size)
            pairings[spec.id] = soundiff_pairing
        elif spec.source is not None and (Path(spec.source) / "reranker" / "config.json").is_file():
            if spec.source not in transformer_pairings:
                transformer_pairings[spec.source] = TransformerPairing(spec.source)
            pairings[spec.id] = transformer_pairings[spec.source]
    return Judges(
        features=features,
        classifier=classifier,
        pairings=pairings,
        k=config.k,
        resamples=config.resamples,
        level=config.level,
        seed=config.bootstrap_seed,
    )


def _score(
    items: Sequence[Any], generated: dict[str, dict[str, list[Path]]], judges: Any, cache_dir: Path
) -> dict[str, Any]:
    """:func:`sound2image.evaluation.scoring.score` (contract B), keeping image features (real images
    included) in ``cache_dir`` between runs."""
    from sound2image.evaluation.scoring import score

    return score(items, generated, judges, cache_dir=cache_dir)


def _write_report(results: dict[str, Any], out: Path) -> Path:
    """:func:`sound2image.evaluation.report.write_report` (contract D)."""
    from sound2image.evaluation.report import write_report

    return write_report(results, out)


# ---------------------------------------------------------------------- the run


def evaluate(config: EvaluationConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run one evaluation: select the items, draw the missing images (sharded over processes), score them
    and write ``results.json`` and ``report.html`` into ``config.out``.

    Returns:
        The results (the content of ``results.json``) on the main process; ``{}`` on the others.

    Raises:
        UsageError: a setting out of range (naming it).
        DataError: the dataset or split cannot be used.
        WeightsError: a system's or judge's weights cannot be loaded.
    """
    config.check()
    out = Path(config.out)
    state = process_state()
    pairs, data_info = select_pairs(
        config.data, config.split, config.systems, config.max_items, config.split_by, config.holdout
    )
    items, bad_items = make_items(pairs)
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / CONFIG_FILE)
    loaded = preflight(config) if state.is_main_process else {}
    state.wait_for_everyone()
    generation = generate_images(
        items, config.systems, config.seeds, out, config.generation, progress=progress
    )
    if not state.is_main_process:
        return {}
    bad_items = bad_items + generation.bad_items
    # An item listed as bad with no image from any system (its sound failed) is skipped, not scored.
    listed_bad = {entry["item"] for entry in generation.bad_items}
    drawn_any = {item_id for images in generation.images.values() for item_id in images}
    items = [item for item in items if item.id not in listed_bad or item.id in drawn_any]
    generated = {
        spec.id: {
            item_id: [image.path for image in images]
            for item_id, images in generation.images[spec.id].items()
        }
        for spec in config.systems
    }
    judges = build_judges(config, loaded)
    scored = _score(items, generated, judges, out / CACHE_DIR / FEATURES_DIR)
    results = assemble_results(config, data_info, items, generation, scored, bad_items)
    _write_json(out / RESULTS_FILE, results)
    _write_report(results, out)
    print(
        f"evaluated {len(items)} item(s) x {len(config.seeds)} seed(s) x {len(config.systems)} system(s): "
        f"{generation.drawn} image(s) drawn, {generation.reused} reused; results in {out / RESULTS_FILE}",
        file=sys.stderr,
    )
    return results


def assemble_results(
    config: EvaluationConfig,
    data_info: dict[str, Any],
    items: Sequence[Any],
    generation: GenerationResult,
    scored: dict[str, Any],
    bad_items: list[dict[str, str]],
) -> dict[str, Any]:
    """The ``results.json`` dict (contract C) from the run's parts."""
    out = Path(config.out).resolve()
    systems = []
    for spec in config.systems:
        model = generation.models.get(spec.id) or _spec_model(spec)
        systems.append(
            {
                "id": spec.id,
                "label": spec.label,
                "kind": spec.kind,
                "source": spec.source
                if spec.kind == "transformer"
                else (spec.unet or spec.source or _default_model()),
                "condition": spec.condition,
                "fingerprint": generation.fingerprints.get(spec.id),
                "model": model,
                "candidates": spec.candidates,
                "best_of_flag": spec.candidates > 1,
            }
        )
    listed = []
    for item in items:
        images = {
            spec.id: [
                {"seed": image.seed, "path": Path(image.path).resolve().relative_to(out).as_posix()}
                for image in generation.images[spec.id].get(item.id, [])
            ]
            for spec in config.systems
        }
        listed.append(
            {
                "id": item.id,
                "label": item.label,
                "audio": str(Path(item.audio).resolve()),
                "real_image": str(Path(item.image).resolve()),
                "audio_sha256": item.audio_sha256,
                "images": images,
            }
        )
    return {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "package_version": __version__,
        "command": config.command or "sound2image.evaluation.evaluate(...)",
        "data": {**data_info, "n_items": len(items)},
        "settings": {
            "seeds": list(config.seeds),
            "max_items": config.max_items,
            "features": config.features,
            "classifier": config.classifier,
            "k": config.k,
            "bootstrap": {
                "resamples": config.resamples,
                "level": config.level,
                "seed": config.bootstrap_seed,
            },
            "generation": _generation_settings(config, generation),
        },
        "systems": systems,
        "metrics": scored.get("metrics", {}),
        "reference": scored.get("reference", {}),
        "metric_notes": scored.get("metric_notes", {}),
        "per_class_aic": scored.get("per_class_aic", {}),
        "items": listed,
        "bad_items": bad_items,
    }


def _generation_settings(config: EvaluationConfig, generation: GenerationResult) -> dict[str, Any]:
    """The generation settings as drawn: each one given, else what the first system's records say it
    resolved to (SounDiff's guidance 10 and native size, the model's scheduler; the transformer's saved
    sampling settings); None where no system drew anything of that kind."""
    gen = config.generation
    recorded: dict[str, Any] = {}
    for spec in config.systems:
        recorded = {**generation.drawn_with.get(spec.id, {}), **recorded}  # the first system's value wins
    return {
        "steps": gen.steps,
        "guidance_scale": gen.guidance_scale
        if gen.guidance_scale is not None
        else recorded.get("guidance_scale"),
        "size": gen.size if gen.size is not None else recorded.get("height"),
        "scheduler": gen.scheduler or recorded.get("scheduler"),
        "noise_level": gen.noise_level,
        "temperature": gen.temperature if gen.temperature is not None else recorded.get("temperature"),
        "top_k": gen.top_k if gen.top_k is not None else recorded.get("top_k"),
        "top_p": gen.top_p if gen.top_p is not None else recorded.get("top_p"),
        "device": gen.device,
        "dtype": gen.dtype,
    }


def _default_model() -> str:
    from sound2image.diffusion import DEFAULT_UNCLIP, UNCLIP_ENV

    return os.environ.get(UNCLIP_ENV) or DEFAULT_UNCLIP


def _spec_model(spec: SystemSpec) -> dict[str, Any]:
    """The model entry of a system none of whose images exist (its record would say the same)."""
    if spec.kind == "transformer":
        return {"type": "image-transformer", "path": spec.source}
    return {"pipeline": spec.source or _default_model(), "unet": spec.unet}
