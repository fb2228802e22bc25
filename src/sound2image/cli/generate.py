"""`sound2image generate`: sounds -> images with SounDiff (Image Transformer: `--model transformer:DIR`).

Thin layer over :class:`sound2image.diffusion.SounDiffPipeline`: it turns files and folders into jobs,
runs them with a progress bar (a bad item is reported, the rest continue), and writes PNGs whose
metadata holds every setting plus the exact conditioning vector, so ``--from-metadata`` can
regenerate an image from the PNG alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sound2image.cli.jobs import Job, pick_device
from sound2image.cli.options import (
    SOUNDIFF_ONLY,
    TRANSFORMER_ONLY,
    TRANSFORMER_PREFIX,
    check_job_weights,
    check_settings,
    generate_parser,
    pipeline_kwargs,
    refuse_other_path_options,
)
from sound2image.cli.run import IMAGE_ERRORS, Tally, begin, check_free, drop_unreadable, progress_bar, start
from sound2image.errors import Sound2ImageError, UsageError

# ---------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `generate` command (its options: :mod:`sound2image.cli.options`)."""
    generate_parser(subparsers, handler)


# ---------------------------------------------------------------------- entry point


def handler(args: argparse.Namespace) -> int:
    """Dispatch: transformer path, regeneration, calibration, or SounDiff generation."""
    if args.model and args.model.startswith(TRANSFORMER_PREFIX):
        from sound2image.cli.generate_transformer import run_transformer

        refuse_other_path_options(args, SOUNDIFF_ONLY, "SounDiff", "the Image Transformer")
        return run_transformer(args)
    refuse_other_path_options(
        args, TRANSFORMER_ONLY, "the Image Transformer (--model transformer:DIR)", "SounDiff"
    )
    if args.from_metadata:
        return regenerate(args)
    if args.calibrate_images:
        return calibrate(args)
    return generate(args)


# ---------------------------------------------------------------------- model setup


def load_pipeline(
    args: argparse.Namespace, model: str | None, unet: str | None, audio: bool, calibration: Any = None
) -> Any:
    """The library's pipeline with the flags' device, dtype, low-memory options and channel policy (its
    errors name parameters, which the CLI's error boundary writes as these flags)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from sound2image.diffusion import SounDiffPipeline

    # Our own progress bar counts images; the libraries' per-component loading bars are noise here.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    return SounDiffPipeline.from_pretrained(
        model,
        unet=unet,
        device=args.device,
        dtype=args.dtype,
        variant=args.variant,
        audio_encoder_weights=args.imagebind_weights,
        calibration=calibration,
        load_audio_encoder=audio,
        channel=args.channel,
        **pipeline_kwargs(args),
    )


def settings_from_args(args: argparse.Namespace, pipe: Any) -> Any:
    from sound2image.diffusion import GenerationSettings

    height = args.height or args.size or pipe.default_size
    width = args.width or args.size or pipe.default_size
    return GenerationSettings(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=pipe.default_guidance_scale if args.guidance_scale is None else args.guidance_scale,
        noise_level=args.noise_level,
        height=height,
        width=width,
        scheduler=pipe.set_scheduler(args.scheduler) if args.scheduler else pipe.scheduler_name,
    )


# ---------------------------------------------------------------------- metadata


def write_outputs(
    out: Path, name: str, image: Any, record: Any, args: argparse.Namespace, written: list[Path] | None = None
) -> list[Path]:
    """The PNG holding ``record`` (either family's), plus ``--save-embedding``'s ``.npy`` (SounDiff) or
    ``--upscale N``'s nearest-neighbour view (Image Transformer: the same image, not counted as one); each
    file is refused if it exists without ``--overwrite``.

    Each counted path is appended to ``written`` (when given) as soon as its file exists, so a failure on
    a later file still counts the PNG already on disk. Returns the paths appended by this call.
    """
    import numpy as np
    from PIL import Image

    from sound2image.outputs import resolve_output_path, save_png

    def save(suffix: str, picture: Any, metadata: dict[str, Any]) -> Path:
        target = resolve_output_path(out, name + suffix, args.overwrite)
        return save_png(picture, target, metadata, args.overwrite)

    written = [] if written is None else written
    start, metadata = len(written), record.to_metadata()
    if isinstance(image, np.ndarray):  # an Image Transformer image: (H, W) uint8
        image = Image.fromarray(image, mode="L")
    written.append(save(".png", image, metadata))
    if args.save_embedding:
        target = resolve_output_path(out, f"{name}.npy", args.overwrite)
        np.save(target, record.image_embeds.float().numpy())
        written.append(target)
    if args.upscale > 1:
        size = (image.width * args.upscale, image.height * args.upscale)
        view = f"upscaled x{args.upscale} (nearest) of {name}.png"
        save(
            f"_x{args.upscale}.png", image.resize(size, Image.Resampling.NEAREST), {**metadata, "view": view}
        )
    return written[start:]


# ---------------------------------------------------------------------- commands


def generate(args: argparse.Namespace) -> int:
    """The main job: every input -> images in ``--out``; bad items are reported, the rest continue."""
    if not args.inputs:
        raise UsageError(
            "no audio given; pass audio files or folders (or --from-metadata / --calibrate-images)"
        )
    check_settings(args)
    plan, seeds = start(args.inputs, args.weights, args.mix, args.seed, args.num_images)
    check_job_weights(plan)
    out = Path(args.out)
    if not args.storyboard:  # names are known now: refuse before any work rather than half-way
        _check_free(out, [f"{job.name}_seed{s}" for job in plan.jobs for s in seeds], args)
    from sound2image.diffusion.record import load_reference_image

    reference = None if not args.image else load_reference_image(args.image, args.image_weight)
    calibration = _calibration(args)
    plan = drop_unreadable(plan, args.max_duration)
    tally = begin(plan)

    pipe = load_pipeline(args, args.model, args.unet, audio=True, calibration=calibration)
    settings = settings_from_args(args, pipe)
    image = {}  # the reference image: embedded once, recorded with every image
    if reference:
        image = {"image": pipe.encode_image(reference[0]), "image_record": reference[1]}

    bar = progress_bar(len(plan.jobs) * len(seeds))
    for job in plan.jobs:
        try:  # a failure before any image (audio, embedding) loses this input only
            _run(pipe, job, seeds, settings, image, out, args, bar, tally)
        except Sound2ImageError as error:
            tally.input_problems.append(str(error))
            bar.write(f"skipped: {error}", file=sys.stderr)
    bar.close()
    return tally.summary(len(plan.jobs) + len(plan.problems), out)


def _check_free(out: Path, names: Sequence[str], args: argparse.Namespace) -> None:
    check_free(out, names, [".png", ".npy"] if args.save_embedding else [".png"], args.overwrite)


def _calibration(args: argparse.Namespace) -> Any:
    """``--embedding-norm`` beats ``--calibration``; None means "what the model directory stores"."""
    from sound2image.diffusion import EmbeddingCalibration, load_calibration

    if args.embedding_norm is not None:
        return EmbeddingCalibration(target_norm=args.embedding_norm, source="--embedding-norm override")
    return load_calibration(args.calibration)


def _run(
    pipe: Any,
    job: Job,
    seeds: Sequence[int],
    settings: Any,
    reference: dict[str, Any],
    out: Path,
    args: argparse.Namespace,
    bar: Any,
    tally: Tally,
) -> None:
    """One input's images through the library's :func:`~sound2image.diffusion.iter_images`: one per seed,
    or with ``--storyboard`` one per window plus a contact sheet per seed. A failing image is reported
    and the input's other seeds go on."""
    from sound2image.audio import load_audio
    from sound2image.diffusion import iter_images
    from sound2image.diffusion.record import audio_file_record
    from sound2image.diffusion.storyboard import storyboard_sheet, storyboard_windows
    from sound2image.outputs import resolve_output_path, save_png

    # All channels: the audio encoder applies the channel policy (--channel), as every entry point does.
    clips = [load_audio(p, max_duration=args.max_duration or None, mono=False) for p in job.audio]
    weights = job.weights or [None] * len(job.audio)
    sources = [audio_file_record(p, c, w) for p, c, w in zip(job.audio, clips, weights, strict=True)]
    windows, hop = None, args.hop or args.window
    if args.storyboard:
        if len(job.audio) != 1:
            raise UsageError(
                "--storyboard takes one audio per image sequence; do not combine it with --mix/--weights"
            )
        windows = storyboard_windows(clips[0], args.window, hop)
        names = [f"{job.name}_{w.tag}_seed{s}" for s in seeds for w in windows]
        _check_free(out, names + [f"{job.name}_storyboard_seed{s}" for s in seeds], args)
        bar.total += len(seeds) * (len(windows) - 1)
        bar.refresh()
    runs = iter_images(
        pipe,
        clips,
        seeds,
        audio_weights=job.weights,
        sources=sources,
        windows=windows,
        candidates=args.candidates,
        batch_size=args.batch_size,
        image_weight=args.image_weight,
        **reference,
        **settings.call_kwargs(),
    )
    for seed, draws in runs:
        frames, before = [], len(tally.written)
        try:
            for drawn in draws:
                name = f"{job.name}_seed{seed}"
                if drawn.window is not None:
                    name = f"{job.name}_{drawn.window.tag}_seed{seed}"
                write_outputs(out, name, drawn.image, drawn.record, args, tally.written)
                frames.append(drawn)
                bar.update(1)
            if windows is not None:  # the contact sheet of this seed's frames
                names = [f"{job.name}_{f.window.tag}_seed{seed}.png" for f in frames]
                sheet, metadata = storyboard_sheet(frames, names, sources[0])
                target = resolve_output_path(out, f"{job.name}_storyboard_seed{seed}.png", args.overwrite)
                tally.written.append(save_png(sheet, target, metadata, args.overwrite))
        except IMAGE_ERRORS as error:
            tally.image_failed(job.name, seed, error, bar)
            bar.update(len(windows or [None]) - len(frames))
        tally.count_input(job.name, before)


def regenerate(args: argparse.Namespace) -> int:
    """``--from-metadata PNG``: the library's regenerate of the PNG's record, by the family it names
    (SounDiff: :func:`~sound2image.diffusion.regenerate`, where ``--model``/``--unet``/``--device``/
    ``--dtype`` and the low-memory flags override what it recorded; Image Transformer:
    :func:`~sound2image.transformer.runner.regenerate`, same model, sound, settings and seed), written as
    ``--out/STEM_regen.png`` with ``regenerated_from`` in its record."""
    from sound2image.diffusion import GenerationRecord
    from sound2image.diffusion import regenerate as redraw
    from sound2image.outputs import read_png_metadata
    from sound2image.transformer.runner import MODEL_TYPE
    from sound2image.transformer.runner import regenerate as redraw_transformer

    source, out = Path(args.from_metadata), Path(args.out)
    _check_free(out, [f"{source.stem}_regen"], args)
    model = read_png_metadata(source).get("model")
    if isinstance(model, dict) and model.get("type") == MODEL_TYPE:
        given = [flag for flag, value in (("--model", args.model), ("--unet", args.unet)) if value]
        if given:
            raise UsageError(
                f"{', '.join(given)}: not used for an Image Transformer PNG (it names its model)"
            )
        drawn = redraw_transformer(source, device=pick_device(args.device))
        image, record = drawn.image, drawn.record
        record.device = pick_device(args.device)
    else:
        low_memory = {k: getattr(args, k) for k in ("cpu_offload", "attention_slicing", "vae_tiling")}
        output = redraw(
            GenerationRecord.from_png(source), model=args.model, unet=args.unet, device=args.device,
            dtype=args.dtype, variant=args.variant, ip_adapter=args.ip_adapter, **low_memory,
        )  # fmt: skip
        image, record = output.images[0], output.records[0]
    record.extra["regenerated_from"] = source.name
    print(f"wrote {write_outputs(out, f'{source.stem}_regen', image, record, args)[0]}")
    return 0


def calibrate(args: argparse.Namespace) -> int:
    """Measure the embedding norm on real images and store it as ``--out/sound2image_calibration.json``."""
    from sound2image.diffusion.calibration import CALIBRATION_FILE
    from sound2image.diffusion.conditioning import measure_calibration
    from sound2image.outputs import resolve_output_path

    out = Path(args.out)
    resolve_output_path(out, CALIBRATION_FILE, args.overwrite)
    pipe = load_pipeline(args, args.model, None, audio=False)
    calibration, problems = measure_calibration(pipe.unclip, args.calibrate_images, args.batch_size)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    path = calibration.save(out)
    print(f"target norm {calibration.target_norm:.4f} over {calibration.num_images} images -> {path}")
    print(f"use it with: --calibration {path}")
    return 2 if problems else 0
