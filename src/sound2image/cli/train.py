"""`sound2image train` commands: one module per trainer (soundiff, transformer, classifier)."""

from __future__ import annotations

import argparse
import importlib

TRAINERS = ("train_soundiff", "train_transformer", "train_classifier")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model",
        description="Train or fine-tune a model. Each trainer saves its whole config with the run.",
        epilog="Examples:\n"
        "  sound2image train soundiff --data ADVANCE/ --variant S --output runs/s\n"
        "  sound2image train transformer --data ../shared/data/av-digits/pairs.csv --output runs/digits\n"
        "  sound2image train classifier --data ../shared/data/av-digits/pairs.csv --output runs/judge\n"
        "\nSeveral processes (soundiff only; --batch-size is per process, every trainer prints its process\n"
        "count and global batch when it starts):\n"
        "  # GPUs\n"
        "  accelerate launch --multi_gpu --num_processes 2 -m sound2image.cli.main train soundiff ...\n"
        "  # CPUs (--cpu alone starts ONE process)\n"
        "  ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 \\\n"
        "      -m sound2image.cli.main train soundiff ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    trainers = parser.add_subparsers(dest="trainer", metavar="MODEL", parser_class=type(parser))
    for name in TRAINERS:
        importlib.import_module(f"sound2image.cli.{name}").register(trainers)
