"""Fixtures for the SounDiff training tests: 8 real pairs, a shared cache, tiny configs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.paths import PSEUDO_ADVANCE

#: Two pairs from each of four scenes (sorted ids), enough to overfit and to split in two processes.
SCENES = ("airport", "beach", "forest", "lake")


def write_manifest(path: Path, per_scene: int = 2) -> Path:
    """A CSV manifest of real pseudo-ADVANCE pairs (absolute paths; nothing is copied)."""
    rows = []
    for scene in SCENES:
        for audio in sorted((PSEUDO_ADVANCE / "sound" / scene).glob("*.wav"))[:per_scene]:
            image = PSEUDO_ADVANCE / "vision" / scene / f"{audio.stem}.jpg"
            rows.append({"audio": str(audio), "image": str(image), "label": scene})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def manifest8(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return write_manifest(tmp_path_factory.mktemp("data") / "pairs.csv")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session: the tiny VAE and encoder are identical in every test."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other test processes for the 2 cores).

    Module scope, so that module-scoped runs use it too: bit-exact comparisons need the same thread
    count on both sides (it changes the order of float sums).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def _base_soundiff():
    from tests.dummies import get_dummy_soundiff_pipeline

    return get_dummy_soundiff_pipeline()


@pytest.fixture
def soundiff(_base_soundiff):
    """A fresh copy of the tiny random SounDiff pipeline (training changes its U-Net in place)."""
    import copy

    return copy.deepcopy(_base_soundiff)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state (mixed precision...): start as a new process would."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
