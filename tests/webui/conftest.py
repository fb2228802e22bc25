"""Fixtures of the web app tests: the tiny SounDiff pipeline saved to a folder, a tiny trained Image
Transformer run, real recordings, bad files, and a served app (in-process, on a free loopback port)."""

from __future__ import annotations

import socket
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.paths import PSEUDO_ADVANCE

STEPS = 2  # denoising steps: enough to run the loop, fast on CPU
SIZE = 32  # pixels: the tiny U-Net's native size


@pytest.fixture(scope="package", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread (restored after): the tiny models' ops are many times slower on two threads
    of a shared 2-core machine (see tests/diffusion/conftest.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SounDiff pipeline written with ``save_pretrained`` (what ``--model DIR`` loads)."""
    from tests.dummies import get_dummy_soundiff_pipeline

    directory = tmp_path_factory.mktemp("soundiff") / "tiny"
    get_dummy_soundiff_pipeline().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def transformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Image Transformer trained for 3 steps on two tones (with its best-of-N scorer)."""
    from sound2image.cli.main import main
    from tests.transformer.test_cli import TINY
    from tests.transformer.test_training import make_dataset

    root = tmp_path_factory.mktemp("transformer")
    make_dataset(root, count=2)
    assert main(["train", "transformer", "--data", str(root), "--out", str(root / "run"), *TINY]) == 0
    return root / "run" / "model"


@pytest.fixture(scope="session")
def wavs() -> list[Path]:
    """Real 10 s ADVANCE-layout recordings (22,050 Hz mono)."""
    files = sorted((PSEUDO_ADVANCE / "sound" / "beach").glob("*.wav"))[:2]
    assert len(files) == 2, f"pseudo-advance audio missing under {PSEUDO_ADVANCE}"
    return files


def write_tone(path: Path, seconds: float, rate: int = 8000) -> Path:
    """A 440 Hz 16-bit mono WAV of ``seconds`` seconds."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return path


@pytest.fixture
def bad_files(tmp_path: Path, wavs: list[Path]) -> dict[str, Path]:
    """A text file named .wav, a corrupt WAV (a real recording's header, then its data cut to 100
    bytes) and a 1.5 MB valid WAV (over a 1 MB limit)."""
    folder = tmp_path / "bad"
    folder.mkdir()
    text = folder / "notes.wav"
    text.write_text("these are my notes, not a sound\n" * 20)
    corrupt = folder / "broken.wav"
    corrupt.write_bytes(wavs[0].read_bytes()[:144])
    big = write_tone(folder / "big.wav", seconds=94.0)  # 94 s × 8000 Hz × 2 bytes = 1.504 MB
    return {"text": text, "corrupt": corrupt, "big": big}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[Any, str]]]:
    """``serve(models, **config)`` -> ``(demo, url)``: the app on 127.0.0.1 and a free port, with Gradio's
    cache in ``tmp_path/gradio`` and the requests' folders in ``tmp_path/requests``; closed after."""
    from sound2image.webui.app import PageDefaults, ServeConfig, build_app, start
    from sound2image.webui.jobs import ModelCache, model_choices

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    started: list[Any] = []

    def run(models: list[str], **options: Any) -> tuple[Any, str]:
        cache = ModelCache(model_choices(models), device="cpu", dtype="float32")
        options.setdefault("defaults", PageDefaults(steps=STEPS, size=SIZE))
        config = ServeConfig(port=free_port(), temp_root=str(tmp_path / "requests"), **options)
        demo = build_app(cache, config)
        started.append(demo)
        return demo, start(demo, config)

    yield run
    for demo in started:
        demo.close()
