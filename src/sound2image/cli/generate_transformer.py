"""`sound2image generate --model transformer:DIR AUDIO...`: the Image Transformer path of `generate`.

The options (the common ones and this path's sampling options) are defined in ``cli/options.py``;
this module runs the generation. Every image is reproducible from its own seed alone: each row of a
batch draws from its own generator, so batching does not change the pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sound2image.cli.options import check_transformer_args
from sound2image.errors import Sound2ImageError


def run_transformer(args: argparse.Namespace) -> int:
    """Generate one 32×32 image per (audio, seed) through the library's
    :func:`~sound2image.transformer.runner.iter_images`; write PNGs with metadata, plus upscaled views."""
    from sound2image.cli.generate import write_outputs
    from sound2image.cli.jobs import pick_device
    from sound2image.cli.run import IMAGE_ERRORS, begin, check_free, start
    from sound2image.transformer import ImageTransformer
    from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer
    from sound2image.transformer.runner import feature_config, iter_images, prepare_audio, sampling_config

    # 1. Check inputs and refuse existing outputs before any work.
    directory = check_transformer_args(args)
    plan, seeds = start(args.inputs, None, False, args.seed, args.num_images)
    out = Path(args.out)
    views = [f"_x{args.upscale}.png"] if args.upscale > 1 else []
    check_free(
        out, [f"{job.name}_seed{s}" for job in plan.jobs for s in seeds], [".png", *views], args.overwrite
    )
    tally = begin(plan)

    # 2. Model and features (a bad audio file is reported; the others go on).
    device = pick_device(args.device)
    model = ImageTransformer.from_pretrained(directory, map_location=device)
    if args.decoder_dtype != "float32":
        model.half_decoder(args.decoder_dtype)
    if args.compile:
        model.compile_decode_step()
    scorer = None
    if args.candidates > 1:
        scorer = AudioImageScorer.from_pretrained(directory / RERANKER_DIR, map_location=device)
    channel = getattr(args, "channel", None)  # --channel overrides the model's channel policy
    features = feature_config(model, channel)
    jobs, items = [], []
    for job in plan.jobs:
        try:
            items.append(prepare_audio(job.audio[0], features))
            jobs.append(job)
        except Sound2ImageError as error:
            tally.input_problems.append(str(error))
            print(f"skipped: {error}", file=sys.stderr)
    sampling = sampling_config(
        model, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        guidance_scale=args.guidance_scale, seed=seeds[0],
    )  # fmt: skip

    # 3. Sample in batches of (audio, seed) rows: a failing batch loses its own rows only, a failing write
    # its own image; the summary counts the 32×32 images written (upscaled views are extra files).
    runs = iter_images(
        model, items, seeds, sampling, scorer=scorer, candidates=args.candidates, batch_size=args.batch_size,
        features=features if channel is not None else None, model_path=directory, progress=True,
    )  # fmt: skip
    for rows, images in runs:
        try:
            drawn = list(images)
        except IMAGE_ERRORS as error:
            for index, seed in rows:
                tally.image_failed(jobs[index].name, seed, error)
            continue
        for image in drawn:
            name, before = jobs[image.index].name, len(tally.written)
            image.record.device = device  # the device used, as --device resolved it
            try:
                write_outputs(out, f"{name}_seed{image.seed}", image.image, image.record, args, tally.written)
            except IMAGE_ERRORS as error:
                tally.image_failed(name, image.seed, error)
            tally.count_input(name, before)
    return tally.summary(len(plan.jobs) + len(plan.problems), out)
