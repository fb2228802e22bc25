"""Entry point for ``accelerate launch`` in the two-process test: ``sound2image evaluate`` with its flags.

Usage: ``accelerate launch --multi_gpu --num_processes 2 tests/evaluation/launch_evaluate.py evaluate ...``

Until ``sound2image.evaluation.scoring`` exists (it is built on another branch), scoring and the report are
the stand-ins of tests/evaluation/stubs.py, exactly as in the one-process run the test compares with.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, for tests.*

from sound2image.cli.main import main  # noqa: E402
from tests.evaluation import stubs  # noqa: E402


def run() -> int:
    torch.set_num_threads(1)  # as the in-process run: the same float order, the same pixels
    if not stubs.scoring_available():
        stubs.install(setattr)
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(run())
