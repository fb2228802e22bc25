"""Fixtures shared by the SounDiff tests: the tiny pipeline (built once per session) and real audio."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sound2image.diffusion import EmbeddingCalibration
from tests.dummies import get_dummy_soundiff_pipeline, get_dummy_unclip_pipeline
from tests.paths import PSEUDO_ADVANCE

STEPS = 2  # denoising steps in tests: enough to exercise the loop, fast on CPU


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """One intra-op thread while this folder runs (restored after).

    On a small shared CPU, OpenMP threads spin-wait for descheduled siblings: the tiny model's call went
    from ~0.06 s on 1 thread to 0.2-7 s on 2 under load (measured).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def pipe():
    """The tiny SounDiff pipeline (32×32 images, real 1,024-d embeddings)."""
    return get_dummy_soundiff_pipeline()


@pytest.fixture(scope="session")
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


#: The calibration stored in the saved pipeline directory (a made-up but "measured" statistic).
SAVED_CALIBRATION = EmbeddingCalibration(target_norm=12.5, source="measured in test", num_images=4)


@pytest.fixture(scope="session")
def saved_dir(tmp_path_factory) -> Path:
    """The tiny pipeline written with ``save_pretrained`` (what ``--model DIR`` loads)."""
    directory = tmp_path_factory.mktemp("saved") / "tiny-soundiff"
    get_dummy_soundiff_pipeline(SAVED_CALIBRATION).save_pretrained(directory)
    return directory
