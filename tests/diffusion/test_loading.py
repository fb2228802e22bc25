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
    for remedy in ("HF_HUB_OFFLINE", "pass model=DIR", "SOUND2IMAGE_UNCLIP=DIR"):
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


@pytest.mark.numeric
def test_saved_local_pipeline_loads_offline_and_generates_the_same_image(
    saved_dir, pipe, wavs, offline_empty_cache
):
    loaded = SounDiffPipeline.from_pretrained(saved_dir, device="cpu")
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
    # Two float32 norms of 1024 terms, (log2(1024) / 2 + 1) eps each, and the rescale: <= 13 eps ~ 1.6e-6.
    assert from_audio.image_embeds.norm().item() == pytest.approx(12.5, rel=2e-6)


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
    tuned = SounDiffPipeline.from_pretrained(
        saved_dir, device="cpu", unet=tmp_path / "export", load_audio_encoder=False
    )
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
    tuned = SounDiffPipeline.from_pretrained(saved_dir, device="cpu", unet=tmp_path / "export")
    tuned.save_pretrained(tmp_path / "tuned-pipeline")
    (tmp_path / "export" / "unet" / "config.json").unlink()  # the export is gone; the saved copy suffices
    again = SounDiffPipeline.from_pretrained(tmp_path / "tuned-pipeline", device="cpu")
    assert torch.equal(again.unclip.unet.conv_out.weight, expected_weight)
    assert again.calibration.target_norm == 6.0
    assert again.info.unet is None and again.info.extra["saved_unet"] == str((tmp_path / "export").resolve())


# --- one offline rule for every loader (issue 11, E and B8) -------------------------------------------

#: Every variable that switches downloads off, each with a spelling huggingface_hub reads as true.
OFFLINE_SETTINGS = [
    ("SOUND2IMAGE_OFFLINE", "1"),
    ("HF_HUB_OFFLINE", "true"),
    ("TRANSFORMERS_OFFLINE", "YES"),
    ("SOUND2IMAGE_OFFLINE", "On"),
]


@pytest.fixture
def empty_cache_online(tmp_path, monkeypatch):
    """An empty Hugging Face cache and no offline variable set (each test sets the one it checks)."""
    from sound2image.hub import OFFLINE_VARIABLES

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("SOUND2IMAGE_UNCLIP", raising=False)
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "hf-home" / "hub"


@pytest.fixture
def network_attempts(monkeypatch):
    """Every host-name lookup or socket connection made during the test (each one is also refused)."""
    import socket

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[:2])
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.mark.parametrize(("variable", "value"), OFFLINE_SETTINGS)
def test_each_offline_variable_stops_the_unclip_download_with_one_line(
    variable, value, empty_cache_online, network_attempts, monkeypatch
):
    monkeypatch.setenv(variable, value)
    from sound2image.diffusion.loading import hub_kwargs

    assert hub_kwargs()["local_files_only"] is True
    with pytest.raises(WeightsError) as info:
        SounDiffPipeline.from_pretrained()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "stabilityai/stable-diffusion-2-1-unclip: unCLIP pipeline weights are not in the Hugging Face "
        f"cache ({empty_cache_online}) and downloads are off ({variable}={value}); "
    )
    assert "pass model=DIR" in message and "SOUND2IMAGE_UNCLIP=DIR" in message
    assert network_attempts == []


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_false_values_leave_downloads_on(value, empty_cache_online, monkeypatch):
    from sound2image.diffusion.loading import hub_kwargs, is_offline
    from sound2image.encoders import weights

    for variable in ("SOUND2IMAGE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, value)
    assert not is_offline() and not weights.is_offline()
    assert hub_kwargs()["local_files_only"] is False
    assert is_offline(local_files_only=True) and weights.is_offline(local_files_only=True)  # --offline


def _cache_model_index(hub: object, repo_id: str) -> None:
    """Put only ``model_index.json`` of ``repo_id`` in a hub cache laid out as huggingface_hub writes it."""
    from pathlib import Path

    repo = Path(str(hub)) / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    index = repo / "snapshots" / commit / "model_index.json"
    index.write_text('{"_class_name": "StableUnCLIPImg2ImgPipeline"}')


@pytest.mark.parametrize(("variable", "value"), [*OFFLINE_SETTINGS, (None, None)])
def test_diffusers_is_asked_for_local_files_only_whenever_we_are_offline(
    variable, value, empty_cache_online, monkeypatch
):
    # The model's index is cached (our early check passes), so the decision reaches diffusers itself.
    import diffusers

    if variable is not None:
        monkeypatch.setenv(variable, value)
    _cache_model_index(empty_cache_online, "someone/unclip")
    seen: dict[str, object] = {}

    def fake_from_pretrained(location: str, **kwargs: object) -> None:
        seen.update(kwargs, location=location)
        raise OSError("some files are not in the cache\nsecond line of detail")

    monkeypatch.setattr(diffusers.StableUnCLIPImg2ImgPipeline, "from_pretrained", fake_from_pretrained)
    with pytest.raises(WeightsError) as info:
        SounDiffPipeline.from_pretrained("someone/unclip")
    assert seen["location"] == "someone/unclip" and seen["cache_dir"] == str(empty_cache_online)
    assert seen["local_files_only"] is (variable is not None)
    assert str(info.value) == (
        "someone/unclip: could not load the unCLIP pipeline (some files are not in the cache); "
        "download it once with network access (it is cached under HF_HOME), pass model=DIR with a local "
        "diffusers copy, or set SOUND2IMAGE_UNCLIP=DIR"
    )
    assert info.value.parameters == ("model",)


@pytest.mark.parametrize(("variable", "value"), OFFLINE_SETTINGS[:3])
def test_generate_offline_without_weights_prints_only_our_line(
    variable, value, wavs, tmp_path, empty_cache_online, network_attempts, monkeypatch, capfd
):
    from sound2image.cli.main import main

    monkeypatch.setenv(variable, value)
    capfd.readouterr()
    assert main(["generate", str(wavs[0]), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 1
    captured = capfd.readouterr()
    assert captured.err == (
        "error: stabilityai/stable-diffusion-2-1-unclip: unCLIP pipeline weights are not in the Hugging "
        f"Face cache ({empty_cache_online}) and downloads are off ({variable}={value}); download it once "
        "with network access (it is cached under HF_HOME), pass --model=DIR with a local diffusers copy, "
        "or set SOUND2IMAGE_UNCLIP=DIR\n"
    )
    assert network_attempts == [] and not (tmp_path / "out").exists()


def test_library_log_lines_are_dropped_before_our_error_and_kept_otherwise(monkeypatch):
    import logging

    from sound2image.hub import LIBRARY_LOGGERS, held_library_logs

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            shown.append(f"{record.name}: {record.getMessage()}")

    shown: list[str] = []
    for name in LIBRARY_LOGGERS:  # stand-ins for the handlers the libraries install on their root loggers
        monkeypatch.setattr(logging.getLogger(name), "handlers", [Collect()])
    hub_logger = logging.getLogger("huggingface_hub.file_download")
    diffusers_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    ours = logging.getLogger("sound2image.test")
    ours.addHandler(Collect())
    try:
        with pytest.raises(WeightsError), held_library_logs():
            hub_logger.warning("Couldn't connect to the Hub: no network.")
            diffusers_logger.warning("Will try to load from local cache.")
            ours.warning("our own warning")
            raise WeightsError("x: missing")
        assert shown == ["sound2image.test: our own warning"]  # the libraries' lines are dropped
        shown.clear()
        with held_library_logs():
            hub_logger.warning("first held line")
            diffusers_logger.warning("second held line")
            assert shown == []  # held while loading
        assert shown == [
            "huggingface_hub.file_download: first held line",
            "diffusers.pipelines.pipeline_utils: second held line",
        ]  # replayed, in order, once
        shown.clear()
        with pytest.raises(RuntimeError), held_library_logs():
            hub_logger.warning("kept before a bug")
            raise RuntimeError("a bug, not a missing file")
        assert shown == ["huggingface_hub.file_download: kept before a bug"]
    finally:
        ours.handlers.clear()
    assert all(
        type(h).__name__ == "Collect" for name in LIBRARY_LOGGERS for h in logging.getLogger(name).handlers
    )  # the loggers' own handlers are back


def test_an_unreachable_hub_is_named_in_our_words_not_the_librarys() -> None:
    """diffusers' "not fully cached locally ... see the stacktrace above" becomes one plain line."""
    from sound2image.diffusion.loading import ModelSource, hub_cache_dir, weights_error

    inner = ConnectionError("Failed to establish a new connection")
    try:
        try:
            raise inner
        except ConnectionError as cause:
            raise OSError(
                "Cannot load model org/name: the model is not fully cached locally (...) and an error "
                "occurred while trying to fetch metadata from the Hub. Please check out the root cause in "
                "the stacktrace above."
            ) from cause
    except OSError as error:
        message = str(weights_error(ModelSource("org/name"), "unCLIP pipeline", error))
    assert message.startswith(
        f"org/name: unCLIP pipeline weights are not in the Hugging Face cache ({hub_cache_dir()}) "
        "and the Hub cannot be reached; download it once"
    )
    assert "stacktrace" not in message and "\n" not in message
    # Any other failure keeps the library's first line as the detail.
    other = weights_error(ModelSource("org/name"), "unCLIP pipeline", ValueError("bad config\nmore"))
    assert "could not load the unCLIP pipeline (bad config)" in str(other)
