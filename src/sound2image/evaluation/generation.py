"""The evaluation's image cache: every (system, sound, seed) image drawn once, through the library runners.

Each image lives at ``<out>/cache/<system fingerprint[:16]>/<key>.png`` where the key hashes the system
fingerprint (:func:`~sound2image.evaluation.systems.system_fingerprint`), the sound's SHA-256, the seed
and the generation settings (:func:`cache_key`). The PNG is written atomically (temporary file +
rename, :func:`sound2image.outputs.save_png`) with the image's full record as metadata, so

* a killed run resumes without drawing any image again (an image is on disk whole, or not at all);
* adding a system, a seed or an item draws only what is new: the other images are found by their keys;
* a changed setting, seed, sound or weight file changes the key, so a stale image is never reused.

With several processes (``accelerate launch``), process ``r`` of ``w`` draws the missing images of the
items ``items[r::w]``; :func:`generate_images` returns after every process is done, so the main process
then reads a cache that holds exactly what a one-process run would have drawn (each image depends only
on its own sound, seed and settings). ``out`` must be a folder every process sees (one machine, or a
shared file system). Only the main process shows the progress bar (it counts that process's share).

Images are drawn ONLY by :func:`sound2image.diffusion.iter_images` (SounDiff) and
:func:`sound2image.transformer.runner.iter_images` (Image Transformer).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sound2image.devices import DECODER_DTYPES
from sound2image.errors import Sound2ImageError, UsageError
from sound2image.evaluation.systems import SystemSpec, needs_download, system_fingerprint

CACHE_DIR = "cache"
#: Sampling settings read back from a system's records (both families' metadata keys).
_RECORDED = (
    "num_inference_steps",
    "guidance_scale",
    "height",
    "width",
    "scheduler",
    "temperature",
    "top_k",
    "top_p",
)
#: Where each process lists the items it could not use (read and removed by the main process).
_SHARD_DIR = ".shards"
#: What one image may fail with and the run still go on (as ``sound2image generate``).
IMAGE_ERRORS = (Sound2ImageError, RuntimeError, OSError)


@dataclass(frozen=True)
class GenerationOptions:
    """How images are drawn (the same for every system of one evaluation).

    Attributes:
        steps: SounDiff denoising steps.
        guidance_scale: classifier-free guidance (None: SounDiff's 10, the transformer's saved value).
        size: SounDiff square image size in pixels, a multiple of 8 (None: the model's native size).
        scheduler: SounDiff scheduler name (None: the model's own).
        noise_level: SounDiff's unCLIP noise level on the embedding.
        temperature, top_k, top_p: Image Transformer sampling (None: the model's saved values).
        decoder_dtype: the Image Transformer decoder's weights, "float32" (default), "float16" or "bfloat16"
            (:meth:`ImageTransformer.half_decoder`: faster batch-1 sampling on a CPU, other pixels).
        compile: compile the Image Transformer's sampling step (:meth:`ImageTransformer.compile_decode_step`):
            an execution option like the thread count, not part of an image's cache key.
        batch_size: sounds per audio-encoder pass / transformer rows per sampling pass.
        device: "auto", "cpu", "cuda", "cuda:1", "mps" (with several processes, "auto" is each
            process's own device).
        dtype: SounDiff weights dtype ("auto", "fp32", "fp16", "bf16").
        variant: diffusers weight variant to load.
        imagebind_weights: ImageBind weights file (when the base model holds no audio encoder).
    """

    steps: int = 20
    guidance_scale: float | None = None
    size: int | None = None
    scheduler: str | None = None
    noise_level: int = 0
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    decoder_dtype: str = "float32"
    compile: bool = False
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    variant: str | None = None
    imagebind_weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Raises UsageError naming the setting out of range."""
        from sound2image.validation import check_int, check_number

        check_int("steps", self.steps, minimum=1)
        check_int("noise_level", self.noise_level, minimum=0, maximum=999)
        check_int("batch_size", self.batch_size, minimum=1)
        if self.decoder_dtype not in DECODER_DTYPES:
            message = f"decoder_dtype must be one of {', '.join(DECODER_DTYPES)}, got {self.decoder_dtype!r}"
            raise UsageError(message, parameters=["decoder_dtype"])
        if self.guidance_scale is not None:
            check_number("guidance_scale", self.guidance_scale, minimum=0.0)
        if self.size is not None:
            check_int("size", self.size, minimum=8)
            if self.size % 8:
                raise UsageError(
                    f"size must be a positive multiple of 8, got {self.size}", parameters=["size"]
                )


@dataclass(frozen=True)
class CachedImage:
    """One image of the evaluation: its seed and its PNG (absolute path)."""

    seed: int
    path: Path


@dataclass
class GenerationResult:
    """What :func:`generate_images` found and made.

    Attributes:
        images: system id -> item id -> the item's images, in seed order (only images on disk).
        bad_items: ``{"item": id, "problem": one line}`` for every sound or image that failed.
        drawn: images drawn by this process in this call.
        reused: images of this process's share that were already in the cache.
        fingerprints: system id -> fingerprint.
        models: system id -> the record's ``model`` entry (from a cached PNG), when one exists.
        drawn_with: system id -> the sampling settings its record holds (steps, guidance, size,
            scheduler; temperature, top-k, top-p), from the same PNG: the values defaults resolved to.
    """

    images: dict[str, dict[str, list[CachedImage]]] = field(default_factory=dict)
    bad_items: list[dict[str, str]] = field(default_factory=list)
    drawn: int = 0
    reused: int = 0
    fingerprints: dict[str, str] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    drawn_with: dict[str, dict[str, Any]] = field(default_factory=dict)


def sampling_settings(spec: SystemSpec, options: GenerationOptions, device: str) -> dict[str, Any]:
    """The settings that change a system's pixels besides weights, sound and seed (keyed in the cache):
    the condition, candidates and the kind of device; SounDiff's steps, guidance, size, scheduler,
    noise level and resolved dtype; the transformer's temperature, top-k, top-p and guidance.

    Raises:
        UsageError: a dtype the device cannot run (half precision on the CPU).
    """
    common = {"candidates": spec.candidates, "device": device.split(":")[0]}
    if spec.kind == "transformer":
        return {
            **common,
            "temperature": options.temperature,
            "top_k": options.top_k,
            "top_p": options.top_p,
            "guidance_scale": options.guidance_scale,
            # only when set: images cached before the option existed keep their key
            **({"decoder_dtype": options.decoder_dtype} if options.decoder_dtype != "float32" else {}),
        }
    return {
        **common,
        "prompt": spec.condition or "",
        "steps": options.steps,
        "guidance_scale": _guidance(spec, options),
        "size": options.size,
        "scheduler": options.scheduler,
        "noise_level": options.noise_level,
        "dtype": _dtype_name(options.dtype, device),
    }


def _guidance(spec: SystemSpec, options: GenerationOptions) -> float:
    """The guidance scale: the option, else the backbone's own (unCLIP 10, SD 1.5 7.5, SDXL 5)."""
    from sound2image.diffusion.backbones import backbone_class

    if options.guidance_scale is not None:
        return float(options.guidance_scale)
    return float(backbone_class(spec.backbone).default_guidance_scale)


def _dtype_name(dtype: str, device: str) -> str:
    """The weights dtype ``dtype`` resolves to on ``device`` ("auto" -> "float16" on CUDA, "float32" on
    the CPU), so that "auto" and its explicit value share cached images."""
    from sound2image.devices import resolve_dtype

    return str(resolve_dtype(dtype, device)).removeprefix("torch.")


def cache_key(fingerprint: str, audio_sha256: str, seed: int, settings: dict[str, Any]) -> str:
    """The cache path of one image, relative to ``<out>/cache``:
    ``<fingerprint[:16]>/<sha256(fingerprint, audio, seed, settings)[:32]>.png``."""
    record = json.dumps(
        {"system": fingerprint, "audio": audio_sha256, "seed": int(seed), "settings": settings},
        sort_keys=True,
    )
    return f"{fingerprint[:16]}/{hashlib.sha256(record.encode()).hexdigest()[:32]}.png"


def process_state() -> Any:
    """accelerate's ``PartialState`` for this launch (one process when not launched).

    On a machine without an accelerator, or under ``accelerate launch --cpu`` (``ACCELERATE_USE_CPU``), the
    state is made with ``cpu=True``: ``PartialState()`` alone reads neither, finds no GPU backend and
    leaves every launched process non-distributed -- each one its own "main process", drawing every image
    and writing the results (a two-process CPU launch did exactly that until 2026-12-02).
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    no_accelerator = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or no_accelerator)


def _device(options: GenerationOptions, state: Any) -> str:
    from sound2image.devices import resolve_device

    if options.device == "auto" and state.num_processes > 1:
        return str(state.device)  # each launched process on its own accelerator (or the CPU)
    return str(resolve_device(options.device))


def generate_images(
    items: Sequence[Any],
    systems: Sequence[SystemSpec],
    seeds: Sequence[int],
    out: str | Path,
    options: GenerationOptions | None = None,
    *,
    progress: bool = True,
    on_image: Callable[[str, str, int], None] | None = None,
) -> GenerationResult:
    """Draw every missing (system, item, seed) image into ``<out>/cache`` and list what is there.

    Args:
        items: the evaluation items (:class:`~sound2image.evaluation.scoring.EvalItem`-like: ``id``,
            ``audio``, ``audio_sha256``).
        systems: the columns.
        seeds: one image per item and seed.
        out: the output folder (nothing is written outside it).
        options: how to draw (default :class:`GenerationOptions`).
        progress: show a progress bar (images per second, ETA) on the main process.
        on_image: called with (system id, item id, seed) after each image is written (tests, UIs).

    Returns:
        :class:`GenerationResult` — on every process, after all processes finished drawing.

    Raises:
        WeightsError: a system's weights cannot be loaded (nothing is drawn for it).
    """
    options = options or GenerationOptions()
    options.check()
    state = process_state()
    device = _device(options, state)
    cache = Path(out) / CACHE_DIR
    result = GenerationResult()
    shard = list(items)[state.process_index :: state.num_processes]
    plans: list[tuple[SystemSpec, dict[str, Any], list[tuple[Any, int, Path]]]] = []
    for spec in systems:
        if needs_download(spec):  # the fingerprint names the downloaded commit, so download first
            _load(spec, options, device)
            gc.collect()
        fingerprint = system_fingerprint(spec, imagebind_weights=options.imagebind_weights)
        result.fingerprints[spec.id] = fingerprint
        settings = sampling_settings(spec, options, device)
        paths = {
            (item.id, seed): cache / cache_key(fingerprint, item.audio_sha256, seed, settings)
            for item in items
            for seed in seeds
        }
        missing = [
            (item, seed, paths[item.id, seed])
            for item in shard
            for seed in seeds
            if not paths[item.id, seed].is_file()
        ]
        result.reused += len(shard) * len(seeds) - len(missing)
        plans.append((spec, paths, missing))

    total = sum(len(missing) for _, _, missing in plans)
    bar = _progress_bar(total, progress and state.is_main_process)
    bad: dict[str, list[str]] = {}  # item id -> its problems (a failed sound, or single failed images)
    unusable: set[str] = set()  # items whose sound failed: no system draws them
    done_models: dict[tuple[Any, ...], Any] = {}
    try:
        for position, (spec, _, missing) in enumerate(plans):
            todo = [(item, seed, path) for item, seed, path in missing if item.id not in unusable]
            bar.update(len(missing) - len(todo))
            if not todo:
                continue
            if spec.model_key not in done_models:
                done_models.clear()  # one set of weights in memory at a time
                gc.collect()
                done_models[spec.model_key] = _load(spec, options, device)
            model = done_models[spec.model_key]
            draw = _draw_soundiff if spec.kind == "soundiff" else _draw_transformer
            for item_id, seed, problem in draw(spec, model, todo, options, bar, on_image):
                result.drawn += problem is None
                if problem is not None:
                    text = problem if seed is None else f"{spec.id} seed {seed}: {problem}"
                    if seed is None:
                        unusable.add(item_id)
                    bad.setdefault(item_id, []).append(text)
                    bar.write(f"skipped: {item_id}: {text}", file=sys.stderr)
            # Release weights no later system needs.
            if all(other.model_key != spec.model_key for other, _, _ in plans[position + 1 :]):
                done_models.clear()
                gc.collect()
    finally:
        bar.close()
    done_models.clear()

    # Every process lists its bad items; the main process reads them all after the barrier.
    shards = Path(out) / _SHARD_DIR
    shards.mkdir(parents=True, exist_ok=True)
    mine = shards / f"bad-{state.process_index}-of-{state.num_processes}.json"
    mine.write_text(json.dumps(bad))
    state.wait_for_everyone()
    for rank in range(state.num_processes):
        listed = json.loads((shards / f"bad-{rank}-of-{state.num_processes}.json").read_text())
        for key, problems in sorted(listed.items()):
            result.bad_items.extend({"item": key, "problem": problem} for problem in problems)
    state.wait_for_everyone()  # every process has read the lists before the main one removes them
    if state.is_main_process:
        for path in shards.glob("bad-*.json"):
            path.unlink(missing_ok=True)
        if not any(shards.iterdir()):
            shards.rmdir()

    for spec, paths, _ in plans:
        per_item: dict[str, list[CachedImage]] = {}
        for item in items:
            found = [
                CachedImage(seed, paths[item.id, seed]) for seed in seeds if paths[item.id, seed].is_file()
            ]
            if found:
                per_item[item.id] = found
        result.images[spec.id] = per_item
        first = next((images[0].path for images in per_item.values()), None)
        if first is not None:
            from sound2image.outputs import read_png_metadata

            metadata = read_png_metadata(first)
            result.models[spec.id] = dict(metadata.get("model") or {})
            result.drawn_with[spec.id] = {key: metadata[key] for key in _RECORDED if key in metadata}
    return result


def _progress_bar(total: int, show: bool) -> Any:
    """tqdm counting images on stderr: rate (images/s) and ETA; hidden when stderr is not a terminal."""
    from tqdm.auto import tqdm

    # Redrawn after every image (an image takes seconds; the redraw microseconds), so the rate and ETA
    # are always those of the last image, even for fast tiny models.
    return tqdm(
        total=total,
        unit="image",
        desc="generating",
        file=sys.stderr,
        disable=None if show else True,
        leave=False,
        mininterval=0,
        miniters=1,
    )


def _load(spec: SystemSpec, options: GenerationOptions, device: str) -> Any:
    """The system's weights: a :class:`SounDiffPipeline` (scheduler set) or ``(transformer, scorer)``."""
    if spec.kind == "transformer":
        from sound2image.transformer import ImageTransformer
        from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer

        directory = Path(spec.source or ".")
        model = ImageTransformer.from_pretrained(directory, map_location=device)
        if options.decoder_dtype != "float32":
            model.half_decoder(options.decoder_dtype)
        if options.compile:
            model.compile_decode_step()
        scorer = None
        if spec.candidates > 1:
            if not (directory / RERANKER_DIR / "config.json").is_file():
                raise UsageError(
                    f"candidates {spec.candidates}: {directory} has no {RERANKER_DIR}/ scorer",
                    parameters=["candidates"],
                )
            scorer = AudioImageScorer.from_pretrained(directory / RERANKER_DIR, map_location=device)
        return model, scorer
    from sound2image.diffusion import SounDiffPipeline

    _quiet_loading_bars()
    backbone = {}  # unCLIP systems load as before; IP-Adapter ones name their backbone and adapter
    if spec.backbone != "unclip":
        backbone = {"backbone": spec.backbone, "ip_adapter": spec.ip_adapter, "ip_scale": spec.ip_scale}
    pipe = SounDiffPipeline.from_pretrained(
        spec.source,
        unet=spec.unet,
        device=device,
        dtype=options.dtype,
        variant=options.variant,
        audio_encoder_weights=options.imagebind_weights,
        **backbone,
    )
    if options.scheduler:
        pipe.set_scheduler(options.scheduler)
    return pipe


def _quiet_loading_bars() -> None:
    """The libraries' per-component loading bars would interleave with ours."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _draw_soundiff(
    spec: SystemSpec,
    pipe: Any,
    todo: list[tuple[Any, int, Path]],
    options: GenerationOptions,
    bar: Any,
    on_image: Callable[[str, str, int], None] | None,
) -> Any:
    """Yield ``(item id, seed, problem or None)`` per image of ``todo`` (grouped by item)."""
    from sound2image.audio import load_audio
    from sound2image.diffusion import iter_images
    from sound2image.diffusion.record import audio_file_record
    from sound2image.outputs import save_png

    size = options.size or pipe.default_size
    settings = {
        "prompt": spec.condition or "",
        "num_inference_steps": options.steps,
        "guidance_scale": _guidance(spec, options),
        "noise_level": options.noise_level,
        "height": size,
        "width": size,
    }
    for item, jobs in _by_item(todo):
        try:  # all channels: the audio encoder applies its channel policy, as `generate` does
            clip = load_audio(item.audio, mono=False)
            runs = iter_images(
                pipe,
                [clip],
                [seed for seed, _ in jobs],
                sources=[audio_file_record(Path(item.audio), clip, None)],
                candidates=spec.candidates,
                batch_size=options.batch_size,
                **settings,
            )
            targets = dict(jobs)
            for seed, draws in runs:
                try:
                    for drawn in draws:
                        metadata = drawn.record.to_metadata()
                        metadata["evaluation"] = {"system": spec.id, "item": item.id}
                        save_png(drawn.image, targets[seed], metadata, overwrite=True)
                        if on_image is not None:
                            on_image(spec.id, item.id, seed)
                    yield item.id, seed, None
                except IMAGE_ERRORS as error:
                    yield item.id, seed, _one_line(error)
                bar.update(1)
        except Sound2ImageError as error:  # the sound itself: every image of this item is lost
            bar.update(len(jobs))
            yield item.id, None, _one_line(error)


def _draw_transformer(
    spec: SystemSpec,
    loaded: Any,
    todo: list[tuple[Any, int, Path]],
    options: GenerationOptions,
    bar: Any,
    on_image: Callable[[str, str, int], None] | None,
) -> Any:
    """Yield ``(item id, seed, problem or None)`` per image of ``todo``."""
    from PIL import Image

    from sound2image.outputs import save_png
    from sound2image.transformer.runner import feature_config, iter_images, prepare_audio, sampling_config

    model, scorer = loaded
    features = feature_config(model)
    sampling = sampling_config(
        model,
        temperature=options.temperature,
        top_k=options.top_k,
        top_p=options.top_p,
        guidance_scale=options.guidance_scale,
    )
    groups: dict[tuple[int, ...], list[tuple[Any, Any, dict[int, Path]]]] = {}
    for item, jobs in _by_item(todo):
        try:
            prepared = prepare_audio(item.audio, features)
        except Sound2ImageError as error:
            bar.update(len(jobs))
            yield item.id, None, _one_line(error)
            continue
        targets = dict(jobs)
        groups.setdefault(tuple(sorted(targets)), []).append((item, prepared, targets))
    for seeds, members in groups.items():
        runs = iter_images(
            model,
            [prepared for _, prepared, _ in members],
            list(seeds),
            sampling,
            scorer=scorer,
            candidates=spec.candidates,
            batch_size=options.batch_size,
            model_path=spec.source,
        )
        for rows, images in runs:
            try:
                drawn = list(images)
            except IMAGE_ERRORS as error:
                for index, seed in rows:
                    yield members[index][0].id, seed, _one_line(error)
                bar.update(len(rows))
                continue
            for image in drawn:
                item, _, targets = members[image.index]
                try:
                    metadata = image.record.to_metadata()
                    metadata["evaluation"] = {"system": spec.id, "item": item.id}
                    save_png(
                        Image.fromarray(image.image, mode="L"), targets[image.seed], metadata, overwrite=True
                    )
                    if on_image is not None:
                        on_image(spec.id, item.id, image.seed)
                    yield item.id, image.seed, None
                except IMAGE_ERRORS as error:
                    yield item.id, image.seed, _one_line(error)
                bar.update(1)


def _by_item(todo: list[tuple[Any, int, Path]]) -> list[tuple[Any, list[tuple[int, Path]]]]:
    """``todo`` grouped by item, in order: ``[(item, [(seed, path), ...]), ...]``."""
    grouped: dict[str, tuple[Any, list[tuple[int, Path]]]] = {}
    for item, seed, path in todo:
        grouped.setdefault(item.id, (item, []))[1].append((seed, path))
    return list(grouped.values())


def _one_line(error: BaseException) -> str:
    text = str(error) if isinstance(error, Sound2ImageError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split()) or type(error).__name__
