"""Where the real data lives: ../shared beside the project root (read-only in CI)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOUND2IMAGE_SHARED", PROJECT_ROOT.parent / "shared"))
DATA = SHARED / "data"
TESTDATA = SHARED / "testdata"
PSEUDO_ADVANCE = DATA / "pseudo-advance"
AV_DIGITS = DATA / "av-digits"
IMAGEBIND_REFERENCE = TESTDATA / "imagebind-reference"
