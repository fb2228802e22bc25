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

from sound2image.audio.channels import parse_channel
from sound2image.cli.generate_transformer import add_transformer_arguments
from sound2image.cli.jobs import Job, Plan, audio_record, pick_device
from sound2image.cli.run import IMAGE_ERRORS, Tally, begin, check_free, drop_unreadable, progress_bar, start
from sound2image.devices import DTYPES
from sound2image.errors import Sound2ImageError, UsageError

SCHEDULER_NAMES = (
    "ddim",
    "ddpm",
    "pndm",
    "lms",
    "euler",
    "euler-a",
    "heun",
    "dpm++",
    "dpm++-karras",
    "unipc",
)

EPILOG = """\
Examples:
  sound2image generate examples/waves.flac --out images/
  sound2image generate sounds/ --out images/ --seed 1 2 3 --steps 30
  sound2image generate rain.wav:0.7 birds.wav:0.3 --out images/        (blend two sounds 70/30)
  sound2image generate beach.wav --prompt "a satellite image" --image ref.jpg --image-weight 0.3 -o out/
  sound2image generate walk.wav --storyboard --window 5 --hop 2.5 --out story/
  sound2image generate --from-metadata images/beach_seed7.png --out again/
  sound2image generate --calibrate-images my_photos/ --out calib/     (then --calibration calib/)
  sound2image generate beach.wav --unet runs/soundiff-s --out images/
  sound2image generate beach.wav --cpu-offload --attention-slicing --vae-tiling -o out/   (8 GB GPUs)

Calibration: the conditioning vector is rescaled to the norm stored with the model
(sound2image_calibration.json: the mean norm of the pipeline's own image embeddings of real images,
measured with --calibrate-images). Without one it keeps ImageBind's own norm, 20 (uncalibrated: the
zero-shot baseline); --embedding-norm X overrides both.

Weights: the first run downloads stabilityai/stable-diffusion-2-1-unclip (~5 GB) and ImageBind-huge
(~4.5 GB) into the Hugging Face cache (HF_HOME). Offline, pass --model DIR (a local diffusers copy or
a directory written by SounDiffPipeline.save_pretrained) or set SOUND2IMAGE_UNCLIP=DIR, and
SOUND2IMAGE_IMAGEBIND_WEIGHTS=FILE for ImageBind.
"""


# ---------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `generate` command."""
    parser = subparsers.add_parser(
        "generate",
        help="turn sounds into images (SounDiff; or the Image Transformer with --model transformer:DIR)",
        description="Generate images from audio files or folders with SounDiff: ImageBind audio embeddings "
        "conditioning Stable Diffusion 2.1 unCLIP (zero-shot baseline, or a fine-tuned U-Net with --unet).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_generate_arguments(parser)
    add_transformer_arguments(parser)
    parser.set_defaults(func=handler, option_defaults=option_defaults(parser))


# Options that only one generation path applies (argparse dest -> flag). Every other option of the
# command is applied by both paths. An option of the other path set away from its default is refused,
# never silently ignored.
SOUNDIFF_ONLY = {
    "save_embedding": "--save-embedding",
    "from_metadata": "--from-metadata",
    "max_duration": "--max-duration",
    "weights": "--weights",
    "mix": "--mix",
    "prompt": "--prompt",
    "negative_prompt": "--negative-prompt",
    "image": "--image",
    "image_weight": "--image-weight",
    "noise_level": "--noise-level",
    "calibration": "--calibration",
    "embedding_norm": "--embedding-norm",
    "calibrate_images": "--calibrate-images",
    "steps": "--steps",
    "scheduler": "--scheduler",
    "size": "--size",
    "height": "--height",
    "width": "--width",
    "storyboard": "--storyboard",
    "window": "--window",
    "hop": "--hop",
    "unet": "--unet",
    "imagebind_weights": "--imagebind-weights",
    "variant": "--variant",
    "dtype": "--dtype",
    "cpu_offload": "--cpu-offload",
    "attention_slicing": "--attention-slicing",
    "vae_tiling": "--vae-tiling",
}
TRANSFORMER_ONLY = {
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "upscale": "--upscale",
}


def option_defaults(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Each path-specific option's default, to tell which ones the user set."""
    return {dest: parser.get_default(dest) for dest in (*SOUNDIFF_ONLY, *TRANSFORMER_ONLY)}


def refuse_other_path_options(args: argparse.Namespace, other: dict[str, str], owner: str, path: str) -> None:
    """UsageError naming each of owner's options (``other``) that ``args`` sets away from its default."""
    defaults = getattr(args, "option_defaults", {})
    given = [
        flag for dest, flag in other.items() if dest in defaults and getattr(args, dest) != defaults[dest]
    ]
    if given:
        them = "them" if len(given) > 1 else "it"
        raise UsageError(f"{', '.join(given)}: only for {owner}, not used by {path}; leave {them} out")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by both generation paths plus SounDiff's own."""
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument(
        "inputs", nargs="*", metavar="AUDIO", help="audio files or folders; FILE:W gives a weight"
    )
    io.add_argument("--out", "-o", dest="out", default="outputs", help="output folder (default: ./outputs)")
    io.add_argument("--overwrite", action="store_true", help="replace existing output files")
    io.add_argument("--save-embedding", action="store_true", help="also write the conditioning as NAME.npy")
    io.add_argument("--from-metadata", metavar="PNG", help="regenerate an image from its PNG metadata alone")
    io.add_argument(
        "--max-duration", type=float, default=600.0, help="longest audio accepted, s (0: no limit)"
    )
    io.add_argument("--batch-size", type=int, default=8, help="audio files per encoder pass (default 8)")

    mix = parser.add_argument_group("conditioning")
    mix.add_argument(
        "--weights", type=float, nargs="+", metavar="W", help="blend all inputs with these weights"
    )
    mix.add_argument("--mix", action="store_true", help="blend all inputs into one image (equal weights)")
    mix.add_argument("--prompt", default="", help='text prompt (default "": unconditional)')
    mix.add_argument("--negative-prompt", dest="negative_prompt", default=None, help="negative text prompt")
    mix.add_argument("--image", metavar="REF", help="reference image mixed into the conditioning")
    mix.add_argument("--image-weight", type=float, default=0.5, help="reference image proportion 0..1 (0.5)")
    mix.add_argument("--noise-level", type=int, default=0, help="unCLIP noise on the embedding, 0..999 (0)")
    mix.add_argument(
        "--calibration", metavar="FILE", help="sound2image_calibration.json (or its folder) to use"
    )
    mix.add_argument("--embedding-norm", type=float, help="override the calibrated embedding norm")
    mix.add_argument(
        "--calibrate-images", metavar="DIR", help="measure the calibration on real images into --out"
    )
    mix.add_argument(
        "--channel",
        type=parse_channel,
        default=None,
        metavar="{mean,first,N}",
        help="channels the audio encoder hears: mean (down-mix; the default unless the model stores another "
        "policy), first (channel 0, as ImageBind's reference) or N (channel N)",
    )

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument(
        "--seed",
        type=int,
        nargs="+",
        help="one or several seeds, 0..2**63-1 (default: random, recorded); a seed given or reached twice "
        "is made once (a one-line note says so)",
    )
    sampling.add_argument(
        "--num-images",
        dest="num_images",
        type=int,
        default=1,
        help="images per seed (1): seed S gives seeds S, S+1, ..., S+N-1; --seed 1 2 --num-images 2 "
        "makes seeds 1, 2, 3",
    )
    sampling.add_argument(
        "--guidance-scale", dest="guidance_scale", type=float, default=None, help="default: the model's (10)"
    )
    sampling.add_argument("--steps", type=int, default=20, help="denoising steps (20)")
    sampling.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="default: the model's own (DDIM)")
    sampling.add_argument("--size", type=int, help="square size in pixels (default: the model's, 768)")
    sampling.add_argument("--height", type=int, help="height in pixels (multiple of 8)")
    sampling.add_argument("--width", type=int, help="width in pixels (multiple of 8)")
    sampling.add_argument(
        "--storyboard", action="store_true", help="one image per time window + contact sheet"
    )
    sampling.add_argument("--window", type=float, default=5.0, help="storyboard window, seconds (5)")
    sampling.add_argument("--hop", type=float, help="storyboard hop, seconds (default: = window)")

    model = parser.add_argument_group("model and device")
    model.add_argument(
        "--model", help="unCLIP hub id or local dir (default: $SOUND2IMAGE_UNCLIP or SD 2.1 unCLIP)"
    )
    model.add_argument("--unet", help="fine-tuned U-Net: training export dir, pipeline dir or hub id")
    model.add_argument(
        "--imagebind-weights", metavar="FILE", help="imagebind_huge.pth (or audio .safetensors)"
    )
    model.add_argument("--variant", help='weight variant to download, e.g. "fp16" (half the download)')
    model.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, cuda:1, mps, cpu")
    model.add_argument(
        "--dtype", choices=("auto", *DTYPES), default="auto", help="auto: fp16 on CUDA, else fp32"
    )
    model.add_argument("--cpu-offload", action="store_true", help="keep idle models in CPU memory (CUDA)")
    model.add_argument("--attention-slicing", action="store_true", help="compute attention in slices")
    model.add_argument("--vae-tiling", action="store_true", help="decode the image in tiles")


# ---------------------------------------------------------------------- entry point


def handler(args: argparse.Namespace) -> int:
    """Dispatch: transformer path, regeneration, calibration, or SounDiff generation."""
    if args.model and args.model.startswith("transformer:"):
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
    """The library's pipeline with the flags' device, dtype, low-memory options and channel policy."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from sound2image.diffusion import SounDiffPipeline

    # Our own progress bar counts images; the libraries' per-component loading bars are noise here.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    from sound2image.devices import resolve_dtype

    device = pick_device(args.device)  # checked here so that an error names --device (and --dtype:)
    resolve_dtype(args.dtype, device, "--dtype")
    if args.cpu_offload and not device.startswith("cuda"):
        raise UsageError(f"--cpu-offload needs a CUDA device (the device is {device}); leave it out")
    return SounDiffPipeline.from_pretrained(
        model,
        unet=unet,
        device=device,
        dtype=args.dtype,
        variant=args.variant,
        audio_encoder_weights=args.imagebind_weights,
        calibration=calibration,
        load_audio_encoder=audio,
        channel=args.channel,
        cpu_offload=args.cpu_offload,
        attention_slicing=args.attention_slicing,
        vae_tiling=args.vae_tiling,
    )


def settings_from_args(args: argparse.Namespace, pipe: Any) -> Any:
    from sound2image.diffusion import GenerationSettings

    height = args.height or args.size or pipe.default_size
    width = args.width or args.size or pipe.default_size
    return GenerationSettings(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=10.0 if args.guidance_scale is None else args.guidance_scale,
        noise_level=args.noise_level,
        height=height,
        width=width,
        scheduler=pipe.set_scheduler(args.scheduler) if args.scheduler else pipe.scheduler_name,
    )


# ---------------------------------------------------------------------- metadata


def write_outputs(
    out: Path, name: str, image: Any, record: Any, args: argparse.Namespace, written: list[Path] | None = None
) -> list[Path]:
    """The PNG holding ``record`` (+ the embedding file), each refused if it exists without ``--overwrite``.

    Each path is appended to ``written`` (when given) as soon as its file exists, so a failure on the
    embedding file still counts the PNG already on disk. Returns the paths written by this call.
    """
    import numpy as np

    from sound2image.outputs import resolve_output_path, save_png

    written = [] if written is None else written
    start = len(written)
    target = resolve_output_path(out, f"{name}.png", args.overwrite)
    written.append(save_png(image, target, record.to_metadata(), args.overwrite))
    if args.save_embedding:
        target = resolve_output_path(out, f"{name}.npy", args.overwrite)
        np.save(target, record.image_embeds.float().numpy())
        written.append(target)
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
    reference = _load_reference(args.image)
    calibration = _calibration(args)
    plan = drop_unreadable(plan, args.max_duration)
    tally = begin(plan)

    pipe = load_pipeline(args, args.model, args.unet, audio=True, calibration=calibration)
    settings = settings_from_args(args, pipe)
    image = {}  # the reference image: embedded once, recorded with every image
    if reference:
        entry = {**reference[0], "weight": args.image_weight}
        image = {"image": pipe.encode_image(reference[1]), "image_record": entry}

    bar = progress_bar(len(plan.jobs) * len(seeds))
    for job in plan.jobs:
        try:  # a failure before any image (audio, embedding) loses this input only
            _run(pipe, job, seeds, settings, image, out, args, bar, tally)
        except Sound2ImageError as error:
            tally.input_problems.append(str(error))
            bar.write(f"skipped: {error}", file=sys.stderr)
    bar.close()
    return tally.summary(len(plan.jobs) + len(plan.problems), out)


#: The numeric flags of the SounDiff path and their bounds (the library checks the same parameters again,
#: naming them; here they are refused before any weights load, naming the flag).
NUMBER_FLAGS: dict[str, dict[str, Any]] = {
    "--max-duration": {"minimum": 0.0},  # seconds; 0 = no limit
    "--weights": {"minimum": 0.0},  # proportions (their sum is checked per job)
    "--image-weight": {"minimum": 0.0, "maximum": 1.0},
    "--embedding-norm": {"minimum": 0.0, "min_inclusive": False},
    "--guidance-scale": {"minimum": 0.0},
    "--window": {"minimum": 0.0, "min_inclusive": False},  # seconds
    "--hop": {"minimum": 0.0, "min_inclusive": False},  # seconds
}
INT_FLAGS: dict[str, dict[str, Any]] = {
    "--batch-size": {"minimum": 1},
    "--candidates": {"minimum": 1},
    "--steps": {"minimum": 1},
    "--noise-level": {"minimum": 0, "maximum": 999},  # SD 2.1 unCLIP's 1,000 noising timesteps
    "--size": {"minimum": 8},
    "--height": {"minimum": 8},
    "--width": {"minimum": 8},
}


def check_settings(args: argparse.Namespace) -> None:
    """Settings shared by every item, checked once before any work (not reported once per item).

    Raises:
        UsageError: one line naming the flag (``--guidance-scale must be finite and >= 0, got nan``).
    """
    from sound2image.validation import check_flags

    check_flags(args, NUMBER_FLAGS, INT_FLAGS)
    for name in ("size", "height", "width"):
        value = getattr(args, name)
        if value is not None and value % 8:
            raise UsageError(f"--{name} must be a positive multiple of 8, got {value}")


def check_job_weights(plan: Plan) -> None:
    """Each blend's weights (``--weights`` or ``FILE:W``): each finite and >= 0, with a positive sum."""
    from sound2image.validation import check_number

    for job in plan.jobs:
        if job.weights is None:
            continue
        for weight in job.weights:
            check_number("audio weight (--weights or FILE:W)", weight, minimum=0.0)
        if sum(job.weights) <= 0:
            raise UsageError(
                f"audio weights (--weights or FILE:W) must have a positive sum, got {job.weights}"
            )


def _check_free(out: Path, names: Sequence[str], args: argparse.Namespace) -> None:
    check_free(out, names, [".png", ".npy"] if args.save_embedding else [".png"], args.overwrite)


def _calibration(args: argparse.Namespace) -> Any:
    """``--embedding-norm`` beats ``--calibration``; None means "what the model directory stores"."""
    from sound2image.diffusion import EmbeddingCalibration, load_calibration

    if args.embedding_norm is not None:
        return EmbeddingCalibration(target_norm=args.embedding_norm, source="--embedding-norm override")
    return load_calibration(args.calibration)


def _load_reference(image: str | None) -> tuple[dict[str, Any], Any] | None:
    if not image:
        return None
    from sound2image.data import load_image
    from sound2image.outputs import file_sha256

    picture = load_image(image)
    return {"file": Path(image).name, "path": str(image), "sha256": file_sha256(image)}, picture


def _load_clip(path: Path, args: argparse.Namespace) -> Any:
    from sound2image.audio import load_audio

    # All channels: the audio encoder applies the channel policy (--channel), as every entry point does.
    return load_audio(path, max_duration=args.max_duration or None, mono=False)


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
    from sound2image.diffusion import iter_images
    from sound2image.diffusion.storyboard import storyboard_windows

    clips = [_load_clip(path, args) for path in job.audio]
    weights = job.weights or [None] * len(job.audio)
    sources = [audio_record(p, c, w) for p, c, w in zip(job.audio, clips, weights, strict=True)]
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
            if windows is not None:
                tally.written.append(_write_sheet(out, job.name, seed, frames, sources[0], args))
        except IMAGE_ERRORS as error:
            tally.image_failed(job.name, seed, error, bar)
            bar.update(len(windows or [None]) - len(frames))
        tally.count_input(job.name, before)


def _write_sheet(
    out: Path, name: str, seed: int, frames: list[Any], source: dict[str, Any], args: argparse.Namespace
) -> Path:
    """A storyboard's contact sheet: the frames in time order, captioned, with the library's sheet record."""
    from sound2image.diffusion.storyboard import contact_sheet, sheet_record
    from sound2image.outputs import resolve_output_path, save_png

    names = [f"{name}_{f.window.tag}_seed{seed}.png" for f in frames]
    metadata = sheet_record(frames, names, source).to_metadata()
    del metadata["embedding"]  # each frame's PNG holds its own
    target = resolve_output_path(out, f"{name}_storyboard_seed{seed}.png", args.overwrite)
    return save_png(contact_sheet(frames), target, metadata, args.overwrite)


def regenerate(args: argparse.Namespace) -> int:
    """``--from-metadata PNG``: the library's :func:`~sound2image.diffusion.regenerate` of the PNG's record
    (``--model``/``--unet``/``--device``/``--dtype`` and low-memory flags override what it recorded); an
    Image Transformer PNG is redrawn by its own family's regenerate."""
    from sound2image.cli.generate_transformer import is_transformer_png, regenerate_transformer
    from sound2image.diffusion import GenerationRecord
    from sound2image.diffusion import regenerate as redraw

    source = Path(args.from_metadata)
    if is_transformer_png(source):
        return regenerate_transformer(args, source)
    record = GenerationRecord.from_png(source)
    out = Path(args.out)
    target_name = f"{source.stem}_regen"
    _check_free(out, [target_name], args)
    output = redraw(
        record,
        model=args.model,
        unet=args.unet,
        device=args.device if args.device == "auto" else pick_device(args.device),
        dtype=args.dtype,
        variant=args.variant,
        cpu_offload=args.cpu_offload,
        attention_slicing=args.attention_slicing,
        vae_tiling=args.vae_tiling,
    )
    again = output.records[0]
    again.extra["regenerated_from"] = source.name
    paths = write_outputs(out, target_name, output.images[0], again, args)
    print(f"wrote {paths[0]}")
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
