"""What `sound2image generate` accepts: its options, their checks and which path applies each.

One module holds the command's option definitions (as the ``hf`` CLI shares its own): both generation
paths (SounDiff, ``cli/generate.py``; the Image Transformer, ``cli/generate_transformer.py``) read the
same parser. :func:`generate_parser` builds it; the flag tables (``NUMBER_FLAGS``, ...) give each
numeric flag's bounds, checked before any weights load; ``SOUNDIFF_ONLY`` / ``TRANSFORMER_ONLY`` name
the options that only one path applies, so the other path refuses them rather than ignoring them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sound2image.audio.channels import parse_channel
from sound2image.cli.jobs import Plan
from sound2image.devices import DECODER_DTYPES, DTYPES
from sound2image.errors import UsageError
from sound2image.validation import check_flags, check_number

#: ``--model transformer:DIR`` selects the Image Transformer path.
TRANSFORMER_PREFIX = "transformer:"

#: ``--backbone`` choices (``sound2image.diffusion.backbones.BACKBONES``, spelled out: no torch import here).
BACKBONE_NAMES = ("unclip", "sd15-ip", "sdxl-ip")

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
  sound2image generate beach.wav --backbone sdxl-ip --prompt "an oil painting" -o out/   (SDXL, 1024 px)
  sound2image generate beach.wav --backbone sd15-ip --model DIR --ip-adapter ip-adapter_sd15.bin -o out/

Calibration: the conditioning vector is rescaled to the norm stored with the model
(sound2image_calibration.json: the mean norm of the pipeline's own image embeddings of real images,
measured with --calibrate-images). Without one it keeps ImageBind's own norm, 20 (uncalibrated: the
zero-shot baseline); --embedding-norm X overrides both.

Weights: the first run downloads stabilityai/stable-diffusion-2-1-unclip (~5 GB) and ImageBind-huge
(~4.5 GB) into the Hugging Face cache (HF_HOME). Offline, pass --model DIR (a local diffusers copy or
a directory written by SounDiffPipeline.save_pretrained) or set SOUND2IMAGE_UNCLIP=DIR, and
SOUND2IMAGE_IMAGEBIND_WEIGHTS=FILE for ImageBind.
"""


def generate_parser(
    subparsers: argparse._SubParsersAction, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """Add the `generate` command, run by ``handler``, with every option of both paths."""
    parser = subparsers.add_parser(
        "generate",
        help="turn sounds into images (SounDiff; or the Image Transformer with --model transformer:DIR)",
        description="Generate images from audio files or folders with SounDiff: ImageBind audio embeddings "
        "conditioning Stable Diffusion 2.1 unCLIP (zero-shot baseline, or a fine-tuned U-Net with --unet), "
        "or SD 1.5 / SDXL through a ViT-H IP-Adapter (--backbone sd15-ip|sdxl-ip).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_generate_arguments(parser)
    add_transformer_arguments(parser)
    parser.set_defaults(func=handler, option_defaults=option_defaults(parser))
    return parser


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
    "backbone": "--backbone",
    "ip_adapter": "--ip-adapter",
    "ip_scale": "--ip-scale",
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
    "decoder_dtype": "--decoder-dtype",
    "compile": "--compile",
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
    mix.add_argument(
        "--noise-level", type=int, default=0, help="unCLIP noise on the embedding, 0..999 (0; unclip only)"
    )
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
        "--guidance-scale",
        dest="guidance_scale",
        type=float,
        default=None,
        help="default: the backbone's (10 unclip, 7.5 sd15-ip, 5 sdxl-ip)",
    )
    sampling.add_argument("--steps", type=int, default=20, help="denoising steps (20)")
    sampling.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="default: the model's own (DDIM)")
    sampling.add_argument(
        "--size",
        type=int,
        help="square size in pixels (default: the model's: 768 unCLIP, 512 SD 1.5, 1024 SDXL)",
    )
    sampling.add_argument("--height", type=int, help="height in pixels (multiple of 8)")
    sampling.add_argument("--width", type=int, help="width in pixels (multiple of 8)")
    sampling.add_argument(
        "--storyboard", action="store_true", help="one image per time window + contact sheet"
    )
    sampling.add_argument("--window", type=float, default=5.0, help="storyboard window, seconds (5)")
    sampling.add_argument("--hop", type=float, help="storyboard hop, seconds (default: = window)")

    model = parser.add_argument_group("model and device")
    model.add_argument(
        "--backbone",
        choices=BACKBONE_NAMES,
        default="unclip",
        help="the image generator: unclip (SD 2.1 unCLIP, the default), sd15-ip (SD 1.5 + ViT-H IP-Adapter) "
        "or sdxl-ip (SDXL + ViT-H IP-Adapter); the same audio vector drives each",
    )
    model.add_argument(
        "--model",
        help="the backbone's pipeline: hub id or local dir (unclip: $SOUND2IMAGE_UNCLIP or SD 2.1 unCLIP; "
        "sd15-ip: any SD 1.5 checkpoint, default stable-diffusion-v1-5; sdxl-ip: any SDXL checkpoint, "
        "default stable-diffusion-xl-base-1.0)",
    )
    model.add_argument(
        "--ip-adapter",
        metavar="REPO|DIR|FILE",
        help="IP-Adapter of sd15-ip/sdxl-ip: a weight file (image_encoder/ beside it), a copy of "
        "h94/IP-Adapter or a hub id (default h94/IP-Adapter: models/ip-adapter_sd15.bin, "
        "sdxl_models/ip-adapter_sdxl_vit-h.bin); only ViT-H adapters (bigG/plus ones are refused)",
    )
    model.add_argument(
        "--ip-scale",
        type=float,
        default=None,
        help="IP-Adapter weight, >= 0 (default 1; the prompt's share grows as it drops)",
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
    group.add_argument(
        "--decoder-dtype",
        choices=DECODER_DTYPES,
        default="float32",
        help="the decoder's weights for sampling: float16 halves the bytes read per pixel, ~1.7x faster "
        "batch-1 sampling of large models on a CPU; the pixels differ slightly from float32's",
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="compile the sampling step with torch.compile: ~10 s once per batch size, then ~1.1-1.2x "
        "faster sampling on a CPU (worth it from a few images on; needs a C++ compiler, else it warns "
        "and samples eagerly)",
    )


#: The numeric flags of the SounDiff path and their bounds (the library checks the same parameters again,
#: naming them; here they are refused before any weights load, naming the flag).
NUMBER_FLAGS: dict[str, dict[str, Any]] = {
    "--max-duration": {"minimum": 0.0},  # seconds; 0 = no limit
    "--weights": {"minimum": 0.0},  # proportions (their sum is checked per job)
    "--image-weight": {"minimum": 0.0, "maximum": 1.0},
    "--embedding-norm": {"minimum": 0.0, "min_inclusive": False},
    "--guidance-scale": {"minimum": 0.0},
    "--ip-scale": {"minimum": 0.0},
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
    check_flags(args, NUMBER_FLAGS, INT_FLAGS)
    if args.backbone == "unclip" and (args.ip_scale is not None or args.ip_adapter is not None):
        flags = [
            f for f, v in (("--ip-adapter", args.ip_adapter), ("--ip-scale", args.ip_scale)) if v is not None
        ]
        raise UsageError(f"{', '.join(flags)}: only for --backbone sd15-ip or sdxl-ip; leave it out")
    for name in ("size", "height", "width"):
        value = getattr(args, name)
        if value is not None and value % 8:
            raise UsageError(f"--{name} must be a positive multiple of 8, got {value}")


def pipeline_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``SounDiffPipeline.from_pretrained``'s low-memory and backbone arguments from their flags
    (``--cpu-offload`` ..., ``--backbone``, ``--ip-adapter``, ``--ip-scale``)."""
    kwargs: dict[str, Any] = {"backbone": args.backbone, "ip_adapter": args.ip_adapter}
    kwargs.update({k: getattr(args, k) for k in ("cpu_offload", "attention_slicing", "vae_tiling")})
    if args.ip_scale is not None:
        kwargs["ip_scale"] = args.ip_scale
    return kwargs


def check_job_weights(plan: Plan) -> None:
    """Each blend's weights (``--weights`` or ``FILE:W``): each finite and >= 0, with a positive sum."""
    for job in plan.jobs:
        if job.weights is None:
            continue
        for weight in job.weights:
            check_number("audio weight (--weights or FILE:W)", weight, minimum=0.0)
        if sum(job.weights) <= 0:
            raise UsageError(
                f"audio weights (--weights or FILE:W) must have a positive sum, got {job.weights}"
            )


#: The numeric flags of the Image Transformer path and their bounds (SamplingConfig checks the same
#: fields again, naming them; here they are refused before the model loads, naming the flag).
TRANSFORMER_NUMBER_FLAGS: dict[str, dict[str, Any]] = {
    "--temperature": {"minimum": 0.0},
    "--top-p": {"minimum": 0.0, "maximum": 1.0, "min_inclusive": False},
    "--guidance-scale": {"minimum": 0.0},
}
TRANSFORMER_INT_FLAGS: dict[str, dict[str, Any]] = {"--top-k": {"minimum": 1}}


def check_transformer_args(args: argparse.Namespace) -> Path:
    """The Image Transformer path's checks, before the model loads: the model directory (``--model
    transformer:DIR``), or a UsageError naming the flag out of range or not supported."""
    directory = Path(args.model[len(TRANSFORMER_PREFIX) :])
    if not str(directory) or not directory.is_dir():
        raise UsageError(f"{directory}: no such model directory (expected --model transformer:DIR)")
    if not args.inputs:
        raise UsageError("no audio given; pass audio files or folders")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    # Finite and in range, before the model loads.
    check_flags(args, TRANSFORMER_NUMBER_FLAGS, TRANSFORMER_INT_FLAGS)
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
