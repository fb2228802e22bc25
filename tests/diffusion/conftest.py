"""Fixtures shared by the SounDiff tests: the tiny pipeline (built once per module) and real audio."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dummies import get_dummy_soundiff_pipeline, get_dummy_unclip_pipeline
from tests.paths import PSEUDO_ADVANCE

STEPS = 2  # denoising steps in tests: enough to exercise the loop, fast on CPU


@pytest.fixture(scope="module")
def pipe():
    """The tiny SounDiff pipeline (32×32 images, real 1,024-d embeddings)."""
    return get_dummy_soundiff_pipeline()


@pytest.fixture(scope="module")
def plain():
    """An independent plain diffusers StableUnCLIPImg2ImgPipeline with the same tiny weights."""
    return get_dummy_unclip_pipeline()


@pytest.fixture(scope="session")
def wavs() -> list[Path]:
    """Real 10 s ADVANCE-layout recordings (22,050 Hz mono) from two scenes."""
    files = sorted((PSEUDO_ADVANCE / "sound" / "beach").glob("*.wav"))[:2]
    files += sorted((PSEUDO_ADVANCE / "sound" / "airport").glob("*.wav"))[:1]
    assert len(files) == 3, f"pseudo-advance audio missing under {PSEUDO_ADVANCE}"
    return files


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real 512×512 aerial photographs."""
    files = sorted((PSEUDO_ADVANCE / "vision" / "beach").glob("*.jpg"))[:3]
    assert len(files) == 3
    return files
