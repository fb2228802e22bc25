"""`sound2image train soundiff`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train soundiff` (being built)."""
