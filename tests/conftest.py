"""Shared fixtures: seeded randomness and a check that the real data is present."""

from __future__ import annotations

import os
import random
from pathlib import Path

# The portable-kernel run (ATEN_CPU_CAPABILITY=default, see .ci/run) stands for a CPU without AVX-512, so
# oneDNN must not use AMX either: otherwise torch 2.13's CPU flash attention packs bfloat16 blocks for AMX
# and fails with "pack_vnni2 is only supported when avx512 is supported" on AMX machines. oneDNN reads this
# on first use, after conftest is imported.
if os.environ.get("ATEN_CPU_CAPABILITY") == "default":
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import numpy as np
import pytest
import torch

from tests.paths import DATA


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA}; set SOUND2IMAGE_SHARED")
    return DATA
