"""The web app's jobs: a page's inputs -> library calls -> PNG files in a per-request temporary folder.

No Gradio here (the page lives in :mod:`sound2image.webui.app`): a job takes plain values (file paths,
numbers, strings), goes through the library's runners (:func:`sound2image.diffusion.iter_images`,
:func:`sound2image.transformer.runner.iter_images`) and regenerators, and writes each image with
:func:`sound2image.outputs.save_png` so that the download is our file with its full metadata.

State lives in objects the app owns (a :class:`ModelCache`, :class:`Limits`), never in module globals:
two requests share only the loaded weights, each behind its model's lock (a pipeline's scheduler is
stateful, so one model draws one image at a time; different models run side by side).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sound2image.errors import AudioTooLongError, Sound2ImageError, UsageError
from sound2image.seeds import MAX_SEED

#: Model choice that stands for SounDiff's default (zero-shot) pipeline.
BASELINE = "baseline"
#: Prefix of an Image Transformer run directory in a model choice.
TRANSFORMER_PREFIX = "transformer:"
#: Prefix of every per-request temporary folder.
REQUEST_PREFIX = "sound2image-request-"
#: The word that asks for a random seed.
RANDOM_SEED = "random"

#: ``(done, total, description)``: where a job is; called from the job's thread.
ProgressCallback = Callable[[int, int, str], None]


class JobCancelled(Sound2ImageError):
    """The user cancelled the job (raised inside the denoising or pixel loop at the next step)."""


# ---------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the page's model list.

    Attributes:
        label: what the dropdown shows (unique).
        family: ``"soundiff"`` or ``"transformer"``.
        model: SounDiff: the pipeline (a hub id or a directory; None for the default); Image Transformer:
            the run's model directory.
        unet: SounDiff: a fine-tuned U-Net directory (None for the pipeline's own).
    """

    label: str
    family: str
    model: str | None = None
    unet: str | None = None


def model_choices(models: Sequence[str] = (), unets: Sequence[str] = ()) -> list[ModelChoice]:
    """The dropdown's models: each of ``models`` (``"baseline"``, ``"transformer:DIR"`` or a SounDiff
    pipeline, a hub id or directory), then one fine-tuned SounDiff per ``unets`` directory on the first
    SounDiff pipeline given (else the baseline). No model at all means the baseline alone.

    Raises:
        UsageError: an empty ``transformer:`` directory or a model given twice (naming ``models``).
    """
    choices: list[ModelChoice] = []
    base: str | None = None
    base_found = False
    for item in models or ([] if unets else [BASELINE]):
        if item.startswith(TRANSFORMER_PREFIX):
            directory = item[len(TRANSFORMER_PREFIX) :]
            if not directory:
                raise UsageError(
                    "models: transformer: needs a directory (transformer:DIR)", parameters=["models"]
                )
            choices.append(ModelChoice(f"Image Transformer: {directory}", "transformer", directory))
            continue
        pipeline = None if item == BASELINE else item
        if not base_found:
            base, base_found = pipeline, True
        label = "SounDiff baseline" if pipeline is None else f"SounDiff: {pipeline}"
        choices.append(ModelChoice(label, "soundiff", pipeline))
    for unet in unets:
        choices.append(ModelChoice(f"SounDiff fine-tuned: {unet}", "soundiff", base, unet))
    labels = [c.label for c in choices]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UsageError(f"models: {repeated[0]} is given twice", parameters=["models"])
    return choices


@dataclass
class LoadedModel:
    """A loaded model of one :class:`ModelChoice`: the SounDiff pipeline or the Image Transformer (with
    its best-of-N scorer when the run has one), and the lock every draw with it holds."""

    choice: ModelChoice
    model: Any
    scorer: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelCache:
    """Loads each model choice once, on first use, and keeps it (a lock per choice: two requests for a
    model that is not loaded yet wait for one load).

    Args:
        choices: the dropdown's models (:func:`model_choices`).
        device, dtype: where and in which precision to load (``from_pretrained``'s ``device``/``dtype``;
            the Image Transformer takes ``device`` only).
        decoder_dtype: the Image Transformer's decoder weights (``float32``, or ``float16``/``bfloat16``:
            :meth:`ImageTransformer.half_decoder`, ~1.7x faster one-image sampling on a CPU).
        compile: compile an Image Transformer's sampling step when it loads
            (:meth:`ImageTransformer.compile_decode_step`).
        loader: ``(choice, device, dtype) -> LoadedModel``; default :func:`load_model` with
            ``decoder_dtype`` and ``compile`` (tests count the loads with it).
    """

    def __init__(
        self,
        choices: Sequence[ModelChoice],
        device: str = "auto",
        dtype: str = "auto",
        loader: Callable[[ModelChoice, str, str], LoadedModel] | None = None,
        decoder_dtype: str = "float32",
        compile: bool = False,
    ) -> None:
        from sound2image.devices import DECODER_DTYPES

        if decoder_dtype not in DECODER_DTYPES:
            raise UsageError(
                f"decoder_dtype: {decoder_dtype!r} is not one of {', '.join(DECODER_DTYPES)}",
                parameters=["decoder_dtype"],
            )
        self.choices = {c.label: c for c in choices}
        self.device, self.dtype, self.decoder_dtype, self.compile = device, dtype, decoder_dtype, compile
        self._loader = loader or functools.partial(load_model, decoder_dtype=decoder_dtype, compile=compile)
        self._loaded: dict[str, LoadedModel] = {}
        self._locks = {label: threading.Lock() for label in self.choices}

    @property
    def labels(self) -> list[str]:
        return list(self.choices)

    def get(self, label: str) -> LoadedModel:
        """The loaded model of ``label`` (loading it now if this is its first use).

        Raises:
            UsageError: no such model choice; WeightsError: the weights cannot be loaded.
        """
        if label not in self.choices:
            raise UsageError(
                f"model: {label!r} is not one of {', '.join(self.choices)}", parameters=["model"]
            )
        with self._locks[label]:
            if label not in self._loaded:
                self._loaded[label] = self._loader(self.choices[label], self.device, self.dtype)
            return self._loaded[label]

    def loaded(self) -> list[str]:
        """The labels loaded so far."""
        return list(self._loaded)


def load_model(
    choice: ModelChoice,
    device: str = "auto",
    dtype: str = "auto",
    decoder_dtype: str = "float32",
    compile: bool = False,
) -> LoadedModel:
    """Load one model choice through the library (``SounDiffPipeline.from_pretrained`` or
    ``ImageTransformer.from_pretrained`` plus its reranker when the run has one; an Image Transformer's
    decoder weights in ``decoder_dtype``, see :meth:`ImageTransformer.half_decoder`, and its sampling step
    compiled when ``compile``, see :meth:`ImageTransformer.compile_decode_step`)."""
    if choice.family == "transformer":
        from sound2image.devices import resolve_device
        from sound2image.transformer import ImageTransformer
        from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer

        target = resolve_device(device, "device")
        directory = Path(choice.model or "")
        model = ImageTransformer.from_pretrained(directory, map_location=target)
        if decoder_dtype != "float32":
            model.half_decoder(decoder_dtype)
        if compile:
            model.compile_decode_step()
        scorer = None
        if (directory / RERANKER_DIR).is_dir():
            scorer = AudioImageScorer.from_pretrained(directory / RERANKER_DIR, map_location=target)
        return LoadedModel(choice, model, scorer)
    from sound2image.diffusion import SounDiffPipeline

    pipe = SounDiffPipeline.from_pretrained(choice.model, unet=choice.unet, device=device, dtype=dtype)
    return LoadedModel(choice, pipe)


# ---------------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What the app accepts: files up to ``max_upload_mb`` megabytes (10**6 bytes) and sounds up to
    ``max_minutes`` minutes; ``max_images`` images per request (seeds × windows × 1)."""

    max_upload_mb: float = 50.0
    max_minutes: float = 10.0
    max_images: int = 64

    def __post_init__(self) -> None:
        from sound2image.validation import check_number

        check_number("max_upload_mb", self.max_upload_mb, minimum=0.0, min_inclusive=False)
        check_number("max_minutes", self.max_minutes, minimum=0.0, min_inclusive=False)

    @property
    def max_seconds(self) -> float:
        return self.max_minutes * 60.0

    def check_size(self, path: str | os.PathLike[str]) -> None:
        """Refuse a file larger than ``max_upload_mb``: a one-line UsageError naming the file."""
        size = Path(path).stat().st_size
        if size > self.max_upload_mb * 1e6:
            raise UsageError(
                f"{Path(path).name}: {size / 1e6:.1f} MB, more than the "
                f"{self.max_upload_mb:g} MB upload limit"
            )

    def check_audio(self, path: str | os.PathLike[str]) -> None:
        """Refuse an upload that is too large, not audio, damaged or longer than ``max_minutes``, from its
        size and header only (the loader's own one-line errors, naming the file as uploaded)."""
        from sound2image.audio import probe_audio

        self.check_size(path)
        name = Path(path).name
        info = probe_audio(path, name=name)
        if info.duration > self.max_seconds:
            raise AudioTooLongError(
                f"{name}: {info.duration:.1f} s long, more than the {self.max_minutes:g} minute limit "
                f"({self.max_seconds:g} s)"
            )


# ---------------------------------------------------------------------------------------- requests


@dataclass
class GenerateRequest:
    """Everything one "Generate" press asks for (the page's values, checked by :func:`check_request`).

    ``sounds``: the sound files; ``weights``: one per sound (None: equal); ``seed``: an integer or
    ``"random"``; ``window``/``hop`` (seconds) make a storyboard when ``storyboard`` is on; ``image``: a
    reference image file mixed in with ``image_weight``; ``size``: the square side in pixels (SounDiff;
    None: the model's own); ``scheduler``: a SounDiff scheduler name (None: the model's own).
    """

    model: str
    sounds: list[str]
    weights: list[float] | None = None
    prompt: str = ""
    negative_prompt: str | None = None
    image: str | None = None
    image_weight: float = 0.5
    steps: int = 20
    guidance_scale: float = 10.0
    noise_level: int = 0
    scheduler: str | None = None
    size: int | None = None
    num_images: int = 1
    candidates: int = 1
    seed: int | str = RANDOM_SEED
    storyboard: bool = False
    window: float = 5.0
    hop: float | None = None


@dataclass(frozen=True)
class OutputImage:
    """One image a job wrote: its PNG (with metadata), seed, score (cosine of the image's embedding with
    the conditioning for SounDiff; the scorer's for a best-of-N Image Transformer; else None) and the
    one-line caption the gallery shows."""

    path: Path
    seed: int
    score: float | None
    caption: str
    record: Any = None


@dataclass
class JobResult:
    """A job's files: the images, the storyboard's contact sheets, and the seeds used (resolved)."""

    images: list[OutputImage] = field(default_factory=list)
    sheets: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every PNG, images first."""
        return [i.path for i in self.images] + list(self.sheets)


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """``"0.7, 0.3"`` -> ``[0.7, 0.3]`` (one weight per sound); blank -> None (equal weights).

    Raises:
        UsageError: not numbers, or not one per sound (naming ``weights``).
    """
    if text is None or not str(text).strip():
        return None
    try:
        values = [float(v) for v in str(text).replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"weights: {text!r} is not a list of numbers", parameters=["weights"]) from None
    if len(values) != count:
        raise UsageError(f"weights: {len(values)} value(s) for {count} sound(s)", parameters=["weights"])
    return values


def resolve_seed(seed: int | float | str | None) -> int:
    """An integer seed; ``"random"``, blank or None draw one (0 .. 2**31 - 1), recorded with the image.

    Raises:
        UsageError: not an integer in 0 .. 2**63 - 1 (naming ``seed``).
    """
    from sound2image.seeds import expand_seeds

    text = "" if seed is None else str(seed).strip()
    if text.lower() in ("", RANDOM_SEED):
        return expand_seeds(None, 1)[0]
    try:
        number = float(text)
    except ValueError:
        raise UsageError(
            f"seed: {text!r} is not an integer or {RANDOM_SEED!r}", parameters=["seed"]
        ) from None
    # digits are read exactly (a float has 53 bits; seeds go to 2**63 - 1); "12.0" from a number box too
    value = int(text) if re.fullmatch(r"\+?\d+", text) else int(number) if number.is_integer() else None
    if value is None or not 0 <= value <= MAX_SEED:
        raise UsageError(f"seed: {text} is not an integer in 0..{MAX_SEED}", parameters=["seed"])
    return value


def check_request(request: GenerateRequest, limits: Limits) -> None:
    """Refuse a request before any model loads: no sound, too many images, or a file over the limits
    (each sound: size, audio header, duration; the reference image: size)."""
    if not request.sounds:
        raise UsageError("no sound given: upload a file or record one", parameters=["sounds"])
    if request.storyboard and len(request.sounds) != 1:
        raise UsageError("storyboard takes one sound; remove the sounds to blend", parameters=["storyboard"])
    from sound2image.validation import check_int

    check_int("num_images", request.num_images, minimum=1, maximum=limits.max_images)
    check_int("candidates", request.candidates, minimum=1, maximum=limits.max_images)
    for sound in request.sounds:
        limits.check_audio(sound)
    if request.image:
        limits.check_size(request.image)


# ---------------------------------------------------------------------------------------- folders


@contextlib.contextmanager
def request_folder(root: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A fresh temporary folder for one request (under ``root``, default the system's temp folder),
    removed with everything in it when the block ends, however it ends."""
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def keep_copies(files: Sequence[Path], out: str | os.PathLike[str] | None) -> list[Path]:
    """Copy a request's files into a new ``out/<request id>/`` folder (nothing when ``out`` is None)."""
    if out is None:
        return []
    folder = Path(out) / f"request-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True, exist_ok=False)
    return [Path(shutil.copy2(f, folder / f.name)) for f in files]


# ---------------------------------------------------------------------------------------- progress


class _Steps:
    """Stands in for diffusers' ``progress_bar(iterable)`` during one draw: counts each denoising step
    into ``on_step`` and stops the loop with :class:`JobCancelled` when ``cancel`` is set."""

    def __init__(self, on_step: Callable[[int, int], None], cancel: threading.Event | None) -> None:
        self.on_step, self.cancel = on_step, cancel

    def __call__(self, iterable: Any = None, total: int | None = None) -> Any:
        items = list(iterable) if iterable is not None else list(range(total or 0))
        return self._steps(items)

    def _steps(self, items: list[Any]) -> Iterator[Any]:
        for index, item in enumerate(items):
            _check_cancel(self.cancel)
            yield item
            self.on_step(index + 1, len(items))
        _check_cancel(self.cancel)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise JobCancelled("cancelled")


@contextlib.contextmanager
def _step_hook(
    pipe: Any, on_step: Callable[[int, int], None], cancel: threading.Event | None
) -> Iterator[None]:
    """Route the unCLIP pipeline's step loop through :class:`_Steps` (held under the model's lock: the
    instance attribute shadows diffusers' ``progress_bar`` method, and is removed afterwards)."""
    unclip = pipe.unclip
    unclip.progress_bar = _Steps(on_step, cancel)
    try:
        yield
    finally:
        del unclip.progress_bar


# ---------------------------------------------------------------------------------------- generation


def _settings_line(record: Any) -> str:
    """A one-line summary of a SounDiff record's settings, for the gallery caption."""
    s = record.settings
    parts = [f"{s.num_inference_steps} steps", f"guidance {s.guidance_scale:g}", f"noise {s.noise_level}"]
    parts += [f"{s.width}×{s.height}", s.scheduler or "default scheduler"]
    if s.prompt:
        parts.append(f"prompt {s.prompt!r}")
    return ", ".join(parts)


def file_stem(path: str | os.PathLike[str]) -> str:
    """A safe output name from an upload's file name: ``"my sound (2).wav"`` -> ``"my_sound_2"``."""
    return re.sub(r"[^\w.+-]+", "_", Path(path).stem).strip("._")[:60] or "sound"


def _private(entry: dict[str, Any]) -> dict[str, Any]:
    """A record entry without the server's temporary path (file name and SHA-256 stay)."""
    return {k: v for k, v in entry.items() if k != "path"}


def run_job(
    request: GenerateRequest,
    models: ModelCache,
    folder: Path,
    limits: Limits | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> JobResult:
    """Run one request: check it, load (or reuse) its model, draw every image through the library's
    runner and write each as ``folder/NAME.png`` with its record as metadata.

    Args:
        request: the page's values.
        models: the app's model cache.
        folder: the request's own temporary folder (:func:`request_folder`).
        limits: the upload limits (checked before any model loads).
        progress: called with ``(done, total, description)`` per denoising step (SounDiff) or per image
            (Image Transformer, whose pixel loop then also shows its own tqdm bar, which a page that
            tracks tqdm shows too).
        cancel: set by the page's Cancel button; the job stops at the next step with :class:`JobCancelled`.

    Raises:
        Sound2ImageError: one line for the user (a bad file, a bad setting, missing weights, cancelled).
    """
    limits = limits or Limits()
    check_request(request, limits)
    seed = resolve_seed(request.seed)
    seeds = [seed + i for i in range(request.num_images)]
    if seeds[-1] > MAX_SEED:
        raise UsageError(f"seed: {seed} + {request.num_images} images passes {MAX_SEED}", parameters=["seed"])
    loaded = models.get(request.model)
    report = progress or (lambda done, total, text: None)
    if loaded.choice.family == "transformer":
        return _run_transformer(request, loaded, seeds, folder, limits, report, cancel, progress is not None)
    return _run_soundiff(request, loaded, seeds, folder, limits, report, cancel)


def _run_soundiff(
    request: GenerateRequest,
    loaded: LoadedModel,
    seeds: list[int],
    folder: Path,
    limits: Limits,
    report: ProgressCallback,
    cancel: threading.Event | None,
) -> JobResult:
    import torch

    from sound2image.audio import load_audio
    from sound2image.diffusion import GenerationSettings, iter_images
    from sound2image.diffusion.record import audio_file_record, load_reference_image
    from sound2image.diffusion.storyboard import storyboard_sheet, storyboard_windows
    from sound2image.outputs import save_png

    pipe = loaded.model
    weights = request.weights
    clips = [
        load_audio(s, max_duration=limits.max_seconds, mono=False, name=Path(s).name) for s in request.sounds
    ]
    listed = weights or [None] * len(clips)
    sources = [
        _private(audio_file_record(Path(s), c, w))
        for s, c, w in zip(request.sounds, clips, listed, strict=True)
    ]
    windows = None
    if request.storyboard:
        windows = storyboard_windows(clips[0], request.window, request.hop or request.window)
    total_images = len(seeds) * (len(windows) if windows else 1)
    if total_images > limits.max_images:
        raise UsageError(
            f"{total_images} images asked for (seeds × windows), more than the {limits.max_images} allowed; "
            "use a longer window or hop",
            parameters=["window"],
        )
    size = request.size or pipe.default_size
    stem = file_stem(request.sounds[0]) if len(request.sounds) == 1 else "mix"
    result = JobResult(seeds=list(seeds))
    total_steps = total_images * request.candidates * request.steps  # best-of-N: a full loop per draw
    done = [0]

    def on_step(step: int, steps: int) -> None:
        done[0] += 1
        report(min(done[0], total_steps), total_steps, "denoising")

    with loaded.lock:
        previous = pipe.unclip.scheduler
        try:
            scheduler = pipe.set_scheduler(request.scheduler) if request.scheduler else pipe.scheduler_name
            settings = GenerationSettings(
                prompt=request.prompt or "",
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale,
                noise_level=request.noise_level,
                height=size,
                width=size,
                scheduler=scheduler,
            )
            reference: dict[str, Any] = {}
            if request.image:
                picture, entry = load_reference_image(request.image, request.image_weight)
                reference = {"image": pipe.encode_image(picture), "image_record": _private(entry)}
            runs = iter_images(
                pipe,
                clips,
                seeds,
                audio_weights=weights,
                sources=sources,
                windows=windows,
                candidates=request.candidates,
                image_weight=request.image_weight,
                **reference,
                **settings.call_kwargs(),
            )
            with _step_hook(pipe, on_step, cancel):
                for seed, draws in runs:
                    frames, names = [], []
                    for drawn in draws:
                        name = (
                            f"{stem}_seed{seed}"
                            if drawn.window is None
                            else f"{stem}_{drawn.window.tag}_seed{seed}"
                        )
                        path = save_png(drawn.image, folder / f"{name}.png", drawn.record.to_metadata())
                        embed = pipe.encode_image(drawn.image)  # (1, D)
                        score = float(
                            torch.nn.functional.cosine_similarity(embed, drawn.record.image_embeds)[0]
                        )
                        where = "" if drawn.window is None else f", {drawn.window.label}"
                        caption = f"seed {seed}{where}, score {score:.3f}: {_settings_line(drawn.record)}"
                        result.images.append(OutputImage(path, seed, score, caption, drawn.record))
                        frames.append(drawn)
                        names.append(path.name)
                    if windows is not None:
                        sheet, metadata = storyboard_sheet(frames, names, sources[0])
                        result.sheets.append(
                            save_png(sheet, folder / f"{stem}_storyboard_seed{seed}.png", metadata)
                        )
        finally:
            pipe.unclip.scheduler = previous
    return result


def _run_transformer(
    request: GenerateRequest,
    loaded: LoadedModel,
    seeds: list[int],
    folder: Path,
    limits: Limits,
    report: ProgressCallback,
    cancel: threading.Event | None,
    pixel_bar: bool = False,
) -> JobResult:
    from PIL import Image

    from sound2image.outputs import save_png
    from sound2image.transformer.runner import feature_config, iter_images, prepare_audio, sampling_config

    if len(request.sounds) != 1 or request.storyboard or request.image:
        raise UsageError(
            "the Image Transformer draws from one sound: no blending, reference image or storyboard",
            parameters=["model"],
        )
    model = loaded.model
    features = feature_config(model)
    prepared = prepare_audio(request.sounds[0], features)
    prepared = dataclasses.replace(prepared, source=_private(prepared.source))
    sampling = sampling_config(model, seed=seeds[0])
    result = JobResult(seeds=list(seeds))
    with loaded.lock:
        runs = iter_images(
            model,
            [prepared],
            seeds,
            sampling,
            scorer=loaded.scorer,
            candidates=request.candidates,
            batch_size=1,
            model_path=loaded.choice.model,
            progress=pixel_bar,  # the pixel loop's own tqdm bar (the page tracks tqdm)
        )
        report(0, len(seeds), "images")
        for _, images in runs:
            _check_cancel(cancel)
            for drawn in images:
                path = save_png(
                    Image.fromarray(drawn.image, mode="L"),
                    folder / f"{file_stem(request.sounds[0])}_seed{drawn.seed}.png",
                    drawn.record.to_metadata(),
                )
                score = None
                if drawn.record.best_of:
                    best = drawn.record.best_of
                    score = float(best["scores"][int(best["kept"])])
                shown = "—" if score is None else f"{score:.3f}"
                s = drawn.record.sampling
                caption = (
                    f"seed {drawn.seed}, score {shown}: temperature {s.temperature:g}, top-k {s.top_k}, "
                    f"top-p {s.top_p}, guidance {s.guidance_scale:g}"
                )
                result.images.append(OutputImage(path, drawn.seed, score, caption, drawn.record))
                report(len(result.images), len(seeds), "images")
    return result


# ---------------------------------------------------------------------------------------- regeneration


def regenerate_png(
    png: str | os.PathLike[str],
    models: ModelCache,
    folder: Path,
    model: str | None = None,
    sound: str | None = None,
    limits: Limits | None = None,
) -> OutputImage:
    """Draw the image of a PNG written by this app (or ``sound2image generate``) again, from its metadata,
    with the library's regenerator, and write it as ``folder/STEM_regen.png``.

    SounDiff PNGs hold their conditioning vector: ``model`` (a choice label; default: the first SounDiff
    choice) must be the model the PNG names. Image Transformer PNGs need their ``sound`` again (the
    SHA-256 is checked against the record) and are drawn with the choice whose directory they name.

    Raises:
        UsageError: not a PNG with our metadata, the wrong model, or a sound that is not the recorded one.
    """
    from sound2image.outputs import file_sha256, read_png_metadata, save_png

    limits = limits or Limits()
    path = Path(png)
    limits.check_size(path)
    try:
        metadata = read_png_metadata(path)
    except Sound2ImageError:
        raise
    except Exception:  # noqa: BLE001 - PIL's many reasons for "not a PNG" become one line
        raise UsageError(f"{path.name}: not a PNG image") from None
    recorded = metadata.get("model") if isinstance(metadata.get("model"), dict) else {}
    stem = file_stem(path)
    if recorded.get("type") == "image-transformer":
        from PIL import Image

        from sound2image.transformer.runner import (
            TransformerRecord,
            iter_images,
            load_for_record,
            prepare_audio,
        )

        record = TransformerRecord.from_metadata(metadata, path.name)
        choice = next(
            (
                c
                for c in models.choices.values()
                if c.family == "transformer" and c.model == record.model.get("path")
            ),
            None,
        )
        if choice is None:
            raise UsageError(
                f"{path.name}: made with {record.model.get('path')}, which this app does not serve"
            )
        if not sound:
            raise UsageError(
                f"{path.name}: an Image Transformer PNG needs its sound again; add it", parameters=["sound"]
            )
        limits.check_audio(sound)
        wanted = (record.audio[0] if record.audio else {}).get("sha256")
        if wanted and file_sha256(sound) != wanted:
            raise UsageError(f"{Path(sound).name}: not the sound this image was made from (SHA-256 differs)")
        loaded = models.get(choice.label)
        from sound2image.audio.sections import SectionFeatureConfig

        features = SectionFeatureConfig.from_dict(record.model.get("features") or {})
        prepared = prepare_audio(sound, features)
        prepared = dataclasses.replace(prepared, source=_private(prepared.source))
        candidates = int(record.best_of["candidates"]) if record.best_of else 1
        network = loaded.model
        if network.decoder_dtype != record.decoder_dtype:  # drawn in another precision: that one again
            network = load_for_record(record, choice.model, device=str(next(network.parameters()).device))
        with loaded.lock:
            runs = iter_images(
                network,
                [prepared],
                [record.seed],
                dataclasses.replace(record.sampling, seed=record.seed),
                scorer=loaded.scorer,
                candidates=candidates,
                features=features,
                model_path=choice.model,
            )
            drawn = next(next(runs)[1])
        drawn.record.extra["regenerated_from"] = path.name
        out = save_png(
            Image.fromarray(drawn.image, mode="L"), folder / f"{stem}_regen.png", drawn.record.to_metadata()
        )
        return OutputImage(
            out, drawn.seed, None, f"seed {drawn.seed}, redrawn from {path.name}", drawn.record
        )

    from sound2image.diffusion import GenerationRecord, regenerate

    record = GenerationRecord.from_metadata(metadata, path.name)
    soundiff = [c for c in models.choices.values() if c.family == "soundiff"]
    if not soundiff:
        raise UsageError(f"{path.name}: a SounDiff PNG, but this app serves no SounDiff model")
    label = (
        model if model in models.choices and models.choices[model].family == "soundiff" else soundiff[0].label
    )
    loaded = models.get(label)
    info = loaded.model.info
    want = (record.model.get("pipeline"), record.model.get("unet"))
    if want != (info.model, info.unet):
        names = " + ".join(str(p) for p in want if p)
        raise UsageError(
            f"{path.name}: made with {names}; choose that model in the list", parameters=["model"]
        )
    with loaded.lock:
        output = regenerate(record, loaded.model)
    again = output.records[0]
    again.extra["regenerated_from"] = path.name
    out = save_png(output.images[0], folder / f"{stem}_regen.png", again.to_metadata())
    seed = record.seed if record.seed is not None else -1
    return OutputImage(
        out, seed, None, f"seed {seed}, redrawn from {path.name}: {_settings_line(again)}", again
    )
