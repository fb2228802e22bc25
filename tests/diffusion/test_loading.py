"""Weights: the saved local pipeline directory, fine-tuned U-Net exports, and the missing-weights error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sound2image.diffusion import EmbeddingCalibration, SounDiffPipeline
from sound2image.diffusion.loading import resolve_pipeline_source, resolve_unet_source
from sound2image.errors import UsageError, WeightsError
from tests.diffusion.conftest import STEPS


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    """No network, an empty Hugging Face cache, no override variable."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SOUND2IMAGE_UNCLIP", raising=False)
    return tmp_path / "hf-home"


def test_missing_default_weights_offline_is_one_clear_line(offline_empty_cache):
    with pytest.raises(WeightsError) as info:
        SounDiffPipeline.from_pretrained()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("stabilityai/stable-diffusion-2-1-unclip: ")
    assert str(offline_empty_cache / "hub") in message  # where we looked
    for remedy in ("HF_HUB_OFFLINE", "--model DIR", "SOUND2IMAGE_UNCLIP=DIR"):
        assert remedy in message
    assert info.value.exit_code == 1


def test_env_variable_pointing_nowhere_names_the_directory(offline_empty_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUND2IMAGE_UNCLIP", str(tmp_path / "nope"))
    with pytest.raises(WeightsError, match=r"nope: pipeline directory not found"):
        resolve_pipeline_source()
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        WeightsError, match=r"empty: not a diffusers pipeline directory \(no model_index.json\)"
    ):
        resolve_pipeline_source(str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="not a local directory nor a hub id"):
        resolve_pipeline_source("stabilityai/")


def test_saved_local_pipeline_loads_offline_and_generates_the_same_image(
    saved_dir, pipe, wavs, offline_empty_cache
):
    loaded = SounDiffPipeline.from_pretrained(saved_dir)
    assert (saved_dir / "model_index.json").is_file()  # diffusers format, loadable by diffusers alone
    assert loaded.calibration == EmbeddingCalibration(12.5, "measured in test", 4)
    assert loaded.info.model == str(saved_dir.resolve())
    for name, tensor in pipe.audio_encoder.state_dict().items():
        assert torch.equal(loaded.audio_encoder.state_dict()[name], tensor), name
    embeds = torch.randn(1, 1024) * 12.5
    ours = loaded(image_embeds=embeds, seed=3, num_inference_steps=STEPS, output_type="np").images
    original = pipe(image_embeds=embeds, seed=3, num_inference_steps=STEPS, output_type="np").images
    assert np.array_equal(ours, original)
    from_audio = loaded(str(wavs[0]), seed=3, num_inference_steps=STEPS, output_type="np")
    assert from_audio.image_embeds.norm().item() == pytest.approx(12.5, rel=1e-6)


def _export(directory, pipe, scale: float, norm: float):
    """A training export written by the training engineer's own exporter (the real contract)."""
    import copy

    from sound2image.training.export import export_soundiff

    unet = copy.deepcopy(pipe.unclip.unet)
    with torch.no_grad():
        unet.conv_out.weight.mul_(scale)
    calibration = EmbeddingCalibration(norm, "training", 8)
    export_soundiff(unet, directory, calibration=calibration, record={"variant": "S", "prompt": "x"})
    return unet.conv_out.weight.detach().clone()


def test_fine_tuned_unet_from_a_training_export(saved_dir, pipe, tmp_path, offline_empty_cache):
    expected_weight = _export(tmp_path / "export", pipe, scale=1.5, norm=9.0)
    assert resolve_unet_source(str(tmp_path / "export"))[1] == "unet"
    tuned = SounDiffPipeline.from_pretrained(saved_dir, unet=tmp_path / "export", load_audio_encoder=False)
    assert torch.equal(tuned.unclip.unet.conv_out.weight, expected_weight)
    assert tuned.calibration.target_norm == 9.0  # training and generation must share the scale
    assert tuned.info.unet == str((tmp_path / "export").resolve())
    assert (tuned.info.training_config["variant"], tuned.info.training_config["prompt"]) == ("S", "x")
    assert tuned.audio_encoder is None


def test_fine_tuned_unet_from_a_whole_pipeline_directory(saved_dir, offline_empty_cache):
    source, subfolder = resolve_unet_source(str(saved_dir))
    assert (source.path, subfolder) == (saved_dir.resolve(), "unet")


def test_a_folder_without_a_unet_is_refused(tmp_path, offline_empty_cache):
    with pytest.raises(WeightsError, match="no U-Net here"):
        resolve_unet_source(str(tmp_path))


def test_uncached_unet_hub_id_offline_is_a_weights_error(offline_empty_cache):
    with pytest.raises(WeightsError, match="someone/soundiff-l: fine-tuned U-Net weights are not in"):
        resolve_unet_source("someone/soundiff-l")


def test_a_saved_fine_tuned_pipeline_is_self_contained(saved_dir, pipe, tmp_path, offline_empty_cache):
    expected_weight = _export(tmp_path / "export", pipe, scale=2.0, norm=6.0)
    tuned = SounDiffPipeline.from_pretrained(saved_dir, unet=tmp_path / "export")
    tuned.save_pretrained(tmp_path / "tuned-pipeline")
    (tmp_path / "export" / "unet" / "config.json").unlink()  # the export is gone; the saved copy suffices
    again = SounDiffPipeline.from_pretrained(tmp_path / "tuned-pipeline")
    assert torch.equal(again.unclip.unet.conv_out.weight, expected_weight)
    assert again.calibration.target_norm == 6.0
    assert again.info.unet is None and again.info.extra["saved_unet"] == str((tmp_path / "export").resolve())
