"""Entry point for ``accelerate launch`` in the multi-process test: tiny pipeline, config from JSON.

Usage: ``accelerate launch --cpu --num_processes 2 tests/training/launch_train.py CONFIG.json``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, for tests.dummies

from sound2image.training.soundiff import SounDiffTrainConfig, train  # noqa: E402
from tests.dummies import get_dummy_soundiff_pipeline  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)  # as the in-process tests: bit-level float order
    config = SounDiffTrainConfig.load(sys.argv[1])
    train(config, pipeline=get_dummy_soundiff_pipeline())


if __name__ == "__main__":
    main()
