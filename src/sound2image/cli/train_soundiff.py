"""`sound2image train soundiff`: fine-tune the unCLIP U-Net on paired audio/image data (SounDiff-L/-S),
or, with ``--backbone sd15-ip|sdxl-ip``, only the ViT-H IP-Adapter of an SD 1.5 / SDXL pipeline.

A thin layer over :func:`sound2image.training.soundiff.train`: flags map one to one onto
:class:`~sound2image.training.soundiff.SounDiffTrainConfig` fields; a flag left out keeps the paper's
default (or the variant's: batch 4 / 2, 80 / 280 epochs, empty / satellite prompt).
"""

from __future__ import annotations

import argparse

from sound2image.audio.channels import parse_channel

EPILOG = """\
Examples:
  sound2image train soundiff --data ADVANCE/ --variant L --output runs/soundiff-l
  sound2image train soundiff --data ADVANCE/ --variant S --classes "train station" --output runs/soundiff-s
  sound2image train soundiff --data pairs.csv --variant L --output runs/mine --resume latest
  sound2image train soundiff --data ADVANCE/ --output runs/small-gpu --lora-rank 16 --use-8bit-adam \\
      --mixed-precision bf16 --gradient-checkpointing
  accelerate launch --num_processes 4 -m sound2image.cli.main train soundiff --data ADVANCE/ --output runs/l4
  sound2image generate beach.wav --unet runs/soundiff-l --out images/      (use the result)
  sound2image train soundiff --data ADVANCE/ --backbone sdxl-ip --resolution 1024 --learning-rate 1e-4 \
      --final-learning-rate 1e-5 --output runs/sdxl-ip
  sound2image generate beach.wav --backbone sdxl-ip --ip-adapter runs/sdxl-ip/ip-adapter.safetensors \
      --out images/                                                      (use the trained adapter)

The run directory receives training_config.json, split.json, the cache (unless --cache-dir), checkpoints/,
validation/ grids, logs/ (TensorBoard), metrics.jsonl and, at the end, the export: unet/ (with
--backbone sd15-ip/sdxl-ip: ip-adapter.safetensors, the adapter alone), sound2image_soundiff.json and
sound2image_calibration.json.
"""


def _classes(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train soundiff`."""
    parser = subparsers.add_parser(
        "soundiff",
        help="fine-tune SounDiff (the unCLIP U-Net) on audio/image pairs",
        description="Fine-tune the SD 2.1 unCLIP U-Net to follow ImageBind audio embeddings "
        "(SounDiff-L: all classes, empty prompt; SounDiff-S: a class subset with a satellite prompt).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to train")
    what.add_argument(
        "--data", required=True, help="dataset folder (ADVANCE layout, same-stem folder) or manifest"
    )
    what.add_argument("--variant", choices=("L", "S"), default="L", help="paper variant (default: L)")
    what.add_argument("--output", "--out", "-o", required=True, dest="output_dir", help="run directory")
    what.add_argument(
        "--classes", type=_classes, default=None, help='comma-separated classes, e.g. "train station"'
    )
    what.add_argument(
        "--prompt", default=None, help="training prompt (default: L '', S the satellite prompt)"
    )
    what.add_argument("--model", dest="base_model", default=None, help="base pipeline: hub id or directory")
    what.add_argument(
        "--backbone",
        choices=("unclip", "sd15-ip", "sdxl-ip"),
        default="unclip",
        help="unclip: fine-tune the SD 2.1 unCLIP U-Net (default); sd15-ip / sdxl-ip: train only the ViT-H "
        "IP-Adapter (image projection + decoupled cross-attention) of the SD 1.5 / SDXL pipeline --model",
    )
    what.add_argument(
        "--ip-adapter",
        default=None,
        help="the IP-Adapter to start from: weight file, local h94/IP-Adapter copy or hub id "
        "(default: h94/IP-Adapter's ViT-H weights for the backbone)",
    )
    what.add_argument(
        "--ip-scale", type=float, default=1.0, help="the adapter's weight while training (default: 1.0)"
    )
    what.add_argument("--calibration", default=None, help="directory with sound2image_calibration.json")
    what.add_argument(
        "--calibration-images", type=int, default=256, help="training images to measure the scale on"
    )
    what.add_argument("--val-fraction", type=float, default=0.1, help="validation share (default: 0.1)")
    what.add_argument(
        "--seed", type=int, default=42, help="seed of the split, data order and noise (default: 42)"
    )

    opt = parser.add_argument_group("optimisation (paper defaults)")
    opt.add_argument("--resolution", type=int, default=768, help="image size (default: 768)")
    opt.add_argument("--batch-size", type=int, default=None, help="per process (default: L 4, S 2)")
    opt.add_argument("--epochs", type=int, default=None, help="default: L 80, S 280")
    opt.add_argument("--max-steps", type=int, default=None, help="optimizer updates (overrides --epochs)")
    opt.add_argument("--learning-rate", type=float, default=1e-6, help="start (default: 1e-6)")
    opt.add_argument("--final-learning-rate", type=float, default=1e-7, help="end (default: 1e-7)")
    opt.add_argument("--lr-schedule", choices=("linear", "cosine", "constant"), default="linear")
    opt.add_argument("--lr-warmup-steps", type=int, default=0)
    opt.add_argument("--weight-decay", type=float, default=0.01)
    opt.add_argument("--adam-beta1", type=float, default=0.9)
    opt.add_argument("--adam-beta2", type=float, default=0.999)
    opt.add_argument("--adam-epsilon", type=float, default=1e-8)
    opt.add_argument("--max-grad-norm", type=float, default=1.0, help="clip (after unscaling); 0 disables")
    opt.add_argument("--gradient-accumulation-steps", type=int, default=1)
    opt.add_argument(
        "--conditioning-dropout", type=float, default=0.25, help="unconditional share (default: 0.25)"
    )
    opt.add_argument(
        "--keep-prompt-on-dropout",
        dest="drop_prompt_with_condition",
        action="store_false",
        help="dropped samples keep the training prompt (default: they get the empty prompt, as guidance)",
    )
    opt.add_argument("--max-noise-level", type=int, default=1000, help="embedding noise augmentation range")
    opt.add_argument("--snr-gamma", type=float, default=None, help="Min-SNR weighting (e.g. 5.0)")
    opt.add_argument("--no-flip", dest="random_flip", action="store_false", help="no horizontal flips")

    mem = parser.add_argument_group("memory and speed")
    mem.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    mem.add_argument("--gradient-checkpointing", action="store_true")
    mem.add_argument("--ema", action="store_true", help="keep and export an EMA of the weights")
    mem.add_argument("--ema-decay", type=float, default=0.9999)
    mem.add_argument("--use-8bit-adam", action="store_true", help="bitsandbytes AdamW8bit (extra: bnb)")
    mem.add_argument(
        "--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (extra: lora)"
    )
    mem.add_argument("--cache-dir", default=None, help="latent/embedding cache to share between runs")
    mem.add_argument("--cache-batch-size", type=int, default=8)
    mem.add_argument(
        "--channel",
        dest="audio_channel",
        type=parse_channel,
        default="mean",
        metavar="{mean,first,N}",
        help="channels of the training audio: mean (down-mix, default), first (channel 0, as ImageBind) or N",
    )
    mem.add_argument(
        "--cache-dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="cached latents"
    )

    run = parser.add_argument_group("checkpoints, validation, logging")
    run.add_argument("--checkpointing-steps", type=int, default=500)
    run.add_argument("--checkpoints-total-limit", type=int, default=None, help="keep only the newest N")
    run.add_argument("--resume", default=None, help="'latest' or a checkpoint directory")
    run.add_argument("--validation-steps", type=int, default=None, help="validation images every N steps")
    run.add_argument(
        "--validation-audios", nargs="+", default=[], help="fixed audios (default: from the split)"
    )
    run.add_argument("--num-validation-audios", type=int, default=4, help="taken from the split (default: 4)")
    run.add_argument("--validation-inference-steps", type=int, default=20)
    run.add_argument(
        "--validation-guidance-scale", type=float, default=None, help="default: the backbone's (10, 7.5, 5)"
    )
    run.add_argument("--report-to", choices=("tensorboard", "none"), default="tensorboard")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=handler)


def config_from_args(args: argparse.Namespace) -> object:
    """The :class:`SounDiffTrainConfig` the parsed flags describe."""
    from dataclasses import fields

    from sound2image.training.soundiff import SounDiffTrainConfig

    names = {f.name for f in fields(SounDiffTrainConfig)}
    values = {name: value for name, value in vars(args).items() if name in names}
    return SounDiffTrainConfig(**values).resolved()


def handler(args: argparse.Namespace) -> int:
    from sound2image.training.soundiff import train

    config = config_from_args(args)
    result = train(config)
    if result.model_dir is not None:
        print(f"exported {result.steps} steps to {result.model_dir}")
        if config.is_ip_adapter:
            from sound2image.training.export import IP_ADAPTER_FILE

            adapter = result.model_dir / IP_ADAPTER_FILE
            use = f"--backbone {config.backbone} --ip-adapter {adapter}"
            print(f"generate with: sound2image generate SOUND {use} --out images/")
        else:
            print(f"generate with: sound2image generate SOUND --unet {result.model_dir} --out images/")
    return 0
