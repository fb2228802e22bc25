"""`sound2image train transformer`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train transformer` (being built)."""
