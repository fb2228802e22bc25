"""The SounDiff trainer loads its base pipeline in float32 on the CPU, whatever the library defaults are."""

from __future__ import annotations

import inspect

import pytest

from sound2image.diffusion import SounDiffPipeline
from sound2image.training.soundiff import SounDiffTrainConfig, load_base_pipeline


def test_the_library_places_the_pipeline_by_default() -> None:
    parameters = inspect.signature(SounDiffPipeline.from_pretrained).parameters
    assert (parameters["device"].default, parameters["dtype"].default) == ("auto", "auto")


def test_the_trainer_asks_for_cpu_float32_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[tuple, dict]] = []

    def record(*args: object, **kwargs: object) -> str:
        seen.append((args, kwargs))
        return "pipeline"

    monkeypatch.setattr(SounDiffPipeline, "from_pretrained", record)
    config = SounDiffTrainConfig(data="d", output_dir="o", base_model="some/base")
    assert load_base_pipeline(config) == "pipeline"
    assert seen == [(("some/base",), {"device": "cpu", "dtype": "float32"})]


def test_the_trainer_gets_float32_weights_on_the_cpu(tmp_path) -> None:
    import torch

    from tests.dummies import get_dummy_soundiff_pipeline

    get_dummy_soundiff_pipeline().save_pretrained(tmp_path / "base")
    config = SounDiffTrainConfig(data="d", output_dir="o", base_model=str(tmp_path / "base"))
    pipe = load_base_pipeline(config)
    for part in ("unet", "vae", "text_encoder", "image_encoder"):
        parameters = list(getattr(pipe.unclip, part).parameters())
        assert {(p.device.type, p.dtype) for p in parameters} == {("cpu", torch.float32)}, part
