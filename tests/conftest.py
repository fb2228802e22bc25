"""Shared fixtures: where the real data lives, seeded randomness, temporary outputs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the project root (read-only in CI); overridable for other checkouts.
SHARED = Path(os.environ.get("SOUND2IMAGE_SHARED", PROJECT_ROOT.parent / "shared"))
DATA = SHARED / "data"
TESTDATA = SHARED / "testdata"
PSEUDO_ADVANCE = DATA / "pseudo-advance"
AV_DIGITS = DATA / "av-digits"
IMAGEBIND_REFERENCE = TESTDATA / "imagebind-reference"


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA}; set SOUND2IMAGE_SHARED")
    return DATA
