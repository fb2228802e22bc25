"""`sound2image generate --model transformer:DIR`: the Image Transformer path of `generate` (being built)."""

from __future__ import annotations

import argparse

from sound2image.errors import UsageError


def add_transformer_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Image Transformer's sampling options to the `generate` parser."""


def run_transformer(args: argparse.Namespace) -> int:
    raise UsageError("the Image Transformer generation path is not available yet")
