"""`sound2image generate --model transformer:DIR AUDIO...`: the Image Transformer path of `generate`.

The common options (inputs, ``--out``, ``--seed``, ``--num-images``, ``--overwrite``, ``--device``,
``--guidance-scale``, ``--batch-size``) belong to ``cli/generate.py``; this module adds the sampling
options and runs the generation. Every image is reproducible from its own seed alone: each row of a
batch draws from its own generator, so batching does not change the pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sound2image.errors import Sound2ImageError, UsageError
from sound2image.validation import check_flags

PREFIX = "transformer:"

#: The numeric flags this path reads and their bounds (SamplingConfig checks the same fields again,
#: naming them; here they are refused before the model loads, naming the flag).
NUMBER_FLAGS: dict[str, dict[str, Any]] = {
    "--temperature": {"minimum": 0.0},
    "--top-p": {"minimum": 0.0, "maximum": 1.0, "min_inclusive": False},
    "--guidance-scale": {"minimum": 0.0},
}
INT_FLAGS: dict[str, dict[str, Any]] = {"--top-k": {"minimum": 1}}


def add_transformer_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Image Transformer's sampling options to the `generate` parser."""
    group = parser.add_argument_group("Image Transformer (--model transformer:DIR)")
    group.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="softmax temperature; 0 = greedy (default: the model's)",
    )
    group.add_argument(
        "--top-k", dest="top_k", type=int, default=None, help="sample among the k likeliest pixels"
    )
    group.add_argument("--top-p", dest="top_p", type=float, default=None, help="nucleus sampling mass, 0..1")
    group.add_argument(
        "--candidates",
        type=int,
        default=1,
        metavar="N",
        help="draw N images per sound and keep the one the model's audio-image scorer ranks first "
        "(needs DIR/reranker; N times the sampling time)",
    )
    group.add_argument(
        "--upscale",
        type=int,
        default=0,
        metavar="N",
        help="also write an N-times larger view (nearest pixels)",
    )


def _sampling(args: argparse.Namespace, record: dict[str, Any], seed: int) -> Any:
    from sound2image.transformer import SamplingConfig

    saved = record.get("sampling", {})
    config = SamplingConfig(
        temperature=args.temperature if args.temperature is not None else saved.get("temperature", 1.0),
        top_k=args.top_k if args.top_k is not None else saved.get("top_k"),
        top_p=args.top_p if args.top_p is not None else saved.get("top_p"),
        guidance_scale=args.guidance_scale
        if args.guidance_scale is not None
        else saved.get("guidance_scale", 1.0),
        seed=seed,
    )
    config.check()
    return config


def _check_args(args: argparse.Namespace) -> Path:
    """The model directory; UsageError for options this path does not support."""
    directory = Path(args.model[len(PREFIX) :])
    if not str(directory) or not directory.is_dir():
        raise UsageError(f"{directory}: no such model directory (expected --model transformer:DIR)")
    if not args.inputs:
        raise UsageError("no audio given; pass audio files or folders")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_flags(args, NUMBER_FLAGS, INT_FLAGS)  # finite and in range, before the model loads
    if args.upscale < 0 or args.upscale > 64:
        raise UsageError(f"--upscale must be between 0 and 64, got {args.upscale}")
    if args.candidates < 1:
        raise UsageError(f"--candidates must be at least 1, got {args.candidates}")
    # "reranker" is transformer.reranker.RERANKER_DIR, spelled out: this module must not import torch.
    if args.candidates > 1 and not (directory / "reranker" / "config.json").is_file():
        raise UsageError(
            f"--candidates {args.candidates}: {directory} has no reranker/ scorer "
            "(train with --preset av-digits or --reranker-epochs N)"
        )
    return directory


def run_transformer(args: argparse.Namespace) -> int:
    """Generate one 32×32 image per (audio, seed); write PNGs with metadata, plus upscaled views."""
    import torch

    from sound2image.audio.sections import SectionFeatureConfig, load_for_features, section_spectra
    from sound2image.cli.jobs import expand_seeds, pick_device, plan_jobs, report_skipped
    from sound2image.outputs import resolve_output_path
    from sound2image.transformer import ImageTransformer
    from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer

    # 1. Check inputs and refuse existing outputs before any work.
    directory = _check_args(args)
    plan = plan_jobs(args.inputs, None, False)
    report_skipped(plan)  # files a folder scan left out for their suffix: warnings, not failures
    seeds = expand_seeds(args.seed, args.num_images)
    out = Path(args.out)
    names = [f"{job.name}_seed{seed}" for job in plan.jobs for seed in seeds]
    for name in names:
        resolve_output_path(out, f"{name}.png", args.overwrite)
        if args.upscale > 1:
            resolve_output_path(out, f"{name}_x{args.upscale}.png", args.overwrite)
    problems = list(plan.problems)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not plan.jobs:
        raise UsageError(f"nothing to generate: {problems[0]}" if problems else "nothing to generate")

    # 2. Model and features (a bad audio file is reported; the others go on).
    device = pick_device(args.device)
    model = ImageTransformer.from_pretrained(directory, map_location=device)
    record = model.saved_metadata
    scorer = None
    if args.candidates > 1:
        scorer = AudioImageScorer.from_pretrained(directory / RERANKER_DIR, map_location=device)
    features_config = SectionFeatureConfig.from_dict(record.get("features", {}))
    if getattr(args, "channel", None) is not None:  # --channel overrides the model's channel policy
        overridden = {**features_config.to_dict(), "channel": args.channel}
        features_config = SectionFeatureConfig.from_dict(overridden)
        record = {**record, "features": features_config.to_dict()}  # the PNG records what was used
    items = []
    for job in plan.jobs:
        try:
            clip = load_for_features(job.audio[0], features_config)
        except Sound2ImageError as error:
            problems.append(str(error))
            print(f"skipped: {error}", file=sys.stderr)
            continue
        items.append((job, clip, torch.from_numpy(section_spectra(clip.samples, features_config))))

    # 3. Sample in batches of (audio, seed) rows, one generator per row (per candidate with --candidates).
    # A failing batch loses its own rows only, a failing write its own image; the summary counts the
    # 32×32 images actually written (upscaled views are extra files of the same image).
    from sound2image.cli.generate import IMAGE_ERRORS, Tally

    _sampling(args, record, seeds[0])  # the model's recorded settings are checked once, up front
    rows = [(job, clip, feats, seed) for job, clip, feats in items for seed in seeds]
    tally = Tally(input_problems=problems)
    for start in range(0, len(rows), args.batch_size):
        chunk = rows[start : start + args.batch_size]
        try:
            sampling = _sampling(args, record, chunk[0][3])
            features = torch.stack([feats for _, _, feats, _ in chunk]).to(device)
            images, ranking = _sample(model, scorer, features, sampling, [seed for *_, seed in chunk], args)
        except IMAGE_ERRORS as error:
            for job, _, _, seed in chunk:
                tally.image_failed(job.name, seed, error)
            continue
        for (job, clip, _, seed), pixels, rank in zip(chunk, images, ranking, strict=True):
            before = len(tally.written)
            try:
                sampling = _sampling(args, record, seed)
                _write(
                    out,
                    job,
                    clip,
                    seed,
                    pixels,
                    sampling,
                    directory,
                    record,
                    args,
                    rank,
                    tally.written,
                    device,
                )
            except IMAGE_ERRORS as error:
                tally.image_failed(job.name, seed, error)
            tally.count_input(job.name, before)
    return tally.summary(len(plan.jobs) + len(plan.problems), out)


def _sample(
    model: Any, scorer: Any, features: Any, sampling: Any, seeds: list[int], args: argparse.Namespace
) -> tuple[Any, list[dict[str, Any] | None]]:
    """(B, size, size) uint8 images for the rows of ``features`` (one generator per row), and each
    row's best-of-N ranking (None without ``--candidates``)."""
    import torch

    from sound2image.transformer import generate, tokens_to_images
    from sound2image.transformer.reranker import generate_best_of

    ranking: list[dict[str, Any] | None] = [None] * len(seeds)
    if scorer is None:
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        tokens = generate(model, features, sampling, generator=generators, progress=True)
    else:
        best = generate_best_of(
            model, scorer, features, sampling, args.candidates, seeds=seeds, progress=True
        )
        tokens = best.tokens
        ranking = [
            {"candidates": args.candidates, "kept": int(k), "scores": [round(float(v), 4) for v in row]}
            for k, row in zip(best.chosen, best.scores, strict=True)
        ]
    return tokens_to_images(tokens, model.config.image_size).numpy(), ranking


def _write(
    out: Path,
    job: Any,
    clip: Any,
    seed: int,
    pixels: Any,
    sampling: Any,
    directory: Path,
    record: dict[str, Any],
    args: argparse.Namespace,
    ranking: dict[str, Any] | None = None,
    written: list[Path] | None = None,
    device: str | None = None,
) -> list[Path]:
    """The 32×32 PNG and, with ``--upscale N``, an N-times larger nearest-neighbour view.

    The 32×32 PNG is appended to ``written`` (when given) as soon as it exists; the view is not (it is
    another file of the same image). Returns both paths.
    """
    import dataclasses

    from PIL import Image

    from sound2image.cli.jobs import audio_record
    from sound2image.outputs import resolve_output_path, save_png

    name = f"{job.name}_seed{seed}"
    metadata = {
        "tool": "sound2image generate",
        "model": {
            "type": "image-transformer",
            "path": str(directory),
            "config": record.get("model"),
            "features": record.get("features"),
            "classes": record.get("classes"),
        },
        **{k: v for k, v in dataclasses.asdict(sampling).items() if k != "seed"},
        "seed": seed,
        **({"best_of": ranking} if ranking else {}),
        "audio": [audio_record(job.audio[0], clip, None)],
        "device": device or str(args.device),  # the device used, not the request ("auto")
    }
    image = Image.fromarray(pixels, mode="L")
    paths = [
        save_png(image, resolve_output_path(out, f"{name}.png", args.overwrite), metadata, args.overwrite)
    ]
    if written is not None:
        written.append(paths[0])
    if args.upscale > 1:
        big = image.resize(
            (image.width * args.upscale, image.height * args.upscale), Image.Resampling.NEAREST
        )
        view = {**metadata, "view": f"upscaled x{args.upscale} (nearest) of {name}.png"}
        target = resolve_output_path(out, f"{name}_x{args.upscale}.png", args.overwrite)
        paths.append(save_png(big, target, view, args.overwrite))
    return paths
