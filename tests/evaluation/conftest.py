"""Fixtures for the evaluation tests: the tiny SounDiff pipeline saved to a directory (the base model),
two "fine-tuned" exports of it (its U-Net with seeded perturbations), real pseudo-ADVANCE pairs, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sound2image.diffusion import EmbeddingCalibration
from tests.paths import PSEUDO_ADVANCE

#: Stored with the saved base model (and the exports): a made-up "measured" scale.
CALIBRATION = EmbeddingCalibration(target_norm=12.5, source="measured in test", num_images=4)
STEPS = 2  # denoising steps: enough to run the loop, fast on CPU


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Offline with an empty hub cache: only the saved directories can load."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SOUND2IMAGE_UNCLIP", raising=False)


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """One intra-op thread (as tests/diffusion): tiny models run fastest so; pixels compare bit-exactly."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def stubbed(monkeypatch):
    """The stand-ins of scoring/report (tests/evaluation/stubs.py), for the generation tests only;
    returns the list of the stand-in score's calls."""
    from tests.evaluation import stubs

    stubs.SCORED.clear()
    stubs.install(monkeypatch.setattr)
    return stubs.SCORED


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """The tiny pipeline written with ``save_pretrained`` (what ``--model DIR`` loads)."""
    from tests.dummies import get_dummy_soundiff_pipeline

    directory = tmp_path_factory.mktemp("models") / "tiny-base"
    get_dummy_soundiff_pipeline(CALIBRATION).save_pretrained(directory)
    return directory


def export_perturbed(directory: Path, seed: int, variant: str) -> Path:
    """A SounDiff export (``unet/`` + training record + calibration) whose U-Net is the tiny one with every
    weight moved by 5 % of its tensor's standard deviation, in a seeded random direction."""
    from sound2image.training.export import export_soundiff
    from tests.dummies import get_dummy_unclip_components

    unet = get_dummy_unclip_components()["unet"]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in unet.parameters():
            scale = float(parameter.std()) if parameter.numel() > 1 else 0.0
            parameter.add_(0.05 * scale * torch.randn(parameter.shape, generator=generator))
    record = {"base_model": "tests/dummies:tiny-random", "variant": variant, "training_config": {}}
    return export_soundiff(unet, directory, calibration=CALIBRATION, record=record)


@pytest.fixture(scope="session")
def soundiff_l(tmp_path_factory) -> Path:
    return export_perturbed(tmp_path_factory.mktemp("runs") / "soundiff-l", seed=1, variant="L")


@pytest.fixture(scope="session")
def soundiff_s(tmp_path_factory) -> Path:
    return export_perturbed(tmp_path_factory.mktemp("runs") / "soundiff-s", seed=2, variant="S")


def pairs(
    count: int, scenes: tuple[str, ...] = ("beach", "airport", "forest")
) -> list[tuple[Path, Path, str]]:
    """Real pseudo-ADVANCE (audio, image, scene) triples, round-robin over ``scenes`` (sorted ids)."""
    found = {s: sorted((PSEUDO_ADVANCE / "sound" / s).glob("*.wav")) for s in scenes}
    out = []
    for index in range(count):
        scene = scenes[index % len(scenes)]
        audio = found[scene][index // len(scenes)]
        out.append((audio, PSEUDO_ADVANCE / "vision" / scene / f"{audio.stem}.jpg", scene))
    return out
