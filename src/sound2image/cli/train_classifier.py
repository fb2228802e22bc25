"""`sound2image train classifier`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train classifier` (being built)."""
