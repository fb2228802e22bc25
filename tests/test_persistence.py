"""The one persistence contract (sound2image.persistence), checked for every model class that uses it.

Each class saves with ``save_pretrained(dir)`` and loads with ``from_pretrained(dir)``, which returns the
model itself. For each: a round trip gives bit-identical outputs, and a damaged directory gives one
line naming the file and the problem. The expected messages are built from the tensors the test itself
removed, added or reshaped, not from the loader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from sound2image.diffusion.pipeline import load_saved_audio_encoder, save_audio_encoder
from sound2image.encoders import ImageBindAudioEncoder
from sound2image.encoders.imagebind import FORMAT as ENCODER_FORMAT
from sound2image.errors import WeightsError
from sound2image.metrics.classifier import FORMAT as CLASSIFIER_FORMAT
from sound2image.metrics.classifier import ClassifierConfig, ImageClassifier, SmallCNN
from sound2image.persistence import FORMAT_VERSION, check_state_dict
from sound2image.transformer.model import FORMAT as TRANSFORMER_FORMAT
from sound2image.transformer.model import ImageTransformer
from sound2image.transformer.reranker import FORMAT as SCORER_FORMAT
from sound2image.transformer.reranker import AudioImageScorer, RerankerConfig
from tests.dummies import get_dummy_audio_encoder
from tests.transformer.tiny import tiny_model


def _classifier() -> ImageClassifier:
    torch.manual_seed(0)
    config = ClassifierConfig(classes=["a", "b", "c"], image_size=16, width=8)
    classifier = ImageClassifier(SmallCNN(3, 8), config)
    for module in classifier.model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return classifier


def _scorer() -> AudioImageScorer:
    torch.manual_seed(0)
    config = RerankerConfig(
        audio_sections=6, audio_bins=10, image_size=8, embed_dim=16, audio_channels=16, image_width=8
    )
    scorer = AudioImageScorer(config).eval()
    scorer.feature_mean.fill_(0.5)
    return scorer


def _transformer() -> ImageTransformer:
    model = tiny_model()
    model.feature_mean.fill_(0.5)
    return model


@dataclass
class Case:
    cls: type
    make: Callable[[], Any]
    output: Callable[[Any], torch.Tensor]
    marker: str
    what: str


CASES = {
    "transformer": Case(
        ImageTransformer,
        _transformer,
        lambda m: m(torch.linspace(-1, 1, 60).view(1, 6, 10), torch.arange(64).view(1, 64) % 257)[0],
        TRANSFORMER_FORMAT,
        "an Image Transformer",
    ),
    "scorer": Case(
        AudioImageScorer,
        _scorer,
        lambda m: m.score(
            torch.linspace(-2, 2, 120).view(2, 6, 10), (torch.arange(128) * 7 % 256).view(2, 8, 8).byte()
        ),
        SCORER_FORMAT,
        "an audio-image scorer",
    ),
    "classifier": Case(
        ImageClassifier,
        _classifier,
        lambda m: m.model(torch.linspace(0, 1, 512).view(2, 1, 16, 16)),
        CLASSIFIER_FORMAT,
        "an image classifier",
    ),
    "encoder": Case(
        ImageBindAudioEncoder,
        get_dummy_audio_encoder,
        lambda m: m(torch.linspace(-3, 3, 128 * 204).view(1, 1, 128, 204)),
        ENCODER_FORMAT,
        "an ImageBind audio encoder",
    ),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture
def saved(case: Case, tmp_path: Path) -> Path:
    directory = tmp_path / "saved"
    case.make().save_pretrained(directory)
    return directory


def _rewrite_weights(directory: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(str(directory / "model.safetensors"))
    change(state)
    save_file(state, str(directory / "model.safetensors"))


def _rewrite_config(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    record = json.loads((directory / "config.json").read_text())
    change(record)
    (directory / "config.json").write_text(json.dumps(record))


@torch.no_grad()
def test_round_trip_is_bit_identical_and_returns_the_model(case: Case, tmp_path: Path) -> None:
    model = case.make()
    assert model.save_pretrained(tmp_path / "m") == tmp_path / "m"
    loaded = case.cls.from_pretrained(tmp_path / "m")
    assert type(loaded) is case.cls
    assert torch.equal(case.output(loaded), case.output(model))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.config == model.config
    record = json.loads((tmp_path / "m" / "config.json").read_text())
    assert record["format"] == case.marker and record["format_version"] == FORMAT_VERSION == 1
    assert loaded.saved_metadata == record
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_missing_tensor(case: Case, saved: Path) -> None:
    key = sorted(case.make().state_dict())[0]
    _rewrite_weights(saved, lambda state: state.pop(key))
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(saved)
    assert str(error.value) == f"{saved / 'model.safetensors'}: 1 missing ({key})"


def test_unexpected_tensor(case: Case, saved: Path) -> None:
    _rewrite_weights(saved, lambda state: state.update({"stray.weight": torch.zeros(2)}))
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(saved)
    assert str(error.value) == f"{saved / 'model.safetensors'}: 1 unexpected (stray.weight)"


def test_mis_shaped_tensor(case: Case, saved: Path) -> None:
    state = case.make().state_dict()
    key = next(k for k in sorted(state) if state[k].ndim >= 1)
    shape = tuple(state[key].shape)
    wrong = (shape[0] + 1, *shape[1:])
    _rewrite_weights(saved, lambda s: s.update({key: torch.zeros(wrong)}))
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(saved)
    assert str(error.value) == f"{saved / 'model.safetensors'}: 1 mis-shaped ({key}: {wrong} vs {shape})"


def test_all_three_problems_in_one_line(case: Case, saved: Path) -> None:
    state = case.make().state_dict()
    keys = [k for k in sorted(state) if state[k].ndim >= 1]
    gone, bent = keys[:2], keys[2]

    def damage(s: dict[str, torch.Tensor]) -> None:
        for key in gone:
            s.pop(key)
        s["stray.weight"] = torch.zeros(1)
        s[bent] = torch.zeros(3, 4, 5, 6, 7)

    _rewrite_weights(saved, damage)
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(saved)
    assert str(error.value) == (
        f"{saved / 'model.safetensors'}: 2 missing ({gone[0]}, {gone[1]}), 1 unexpected (stray.weight), "
        f"1 mis-shaped ({bent}: (3, 4, 5, 6, 7) vs {tuple(state[bent].shape)})"
    )


def test_unknown_config_key_is_refused(case: Case, saved: Path) -> None:
    _rewrite_config(saved, lambda record: record["model"].update(mystery=1, also_new="x"))
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(saved)
    assert str(error.value) == (
        f"{saved / 'config.json'}: unknown config keys also_new, mystery (written by a newer sound2image?)"
    )


def test_wrong_marker(case: Case, saved: Path) -> None:
    _rewrite_config(saved, lambda record: record.update(format="someone-elses-model"))
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(saved)
    assert str(error.value) == (
        f"{saved / 'config.json'}: not {case.what} config (format 'someone-elses-model', "
        f"expected {case.marker!r})"
    )


def test_newer_format_version_is_refused(case: Case, saved: Path) -> None:
    _rewrite_config(saved, lambda record: record.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(WeightsError, match=r"config\.json: format version 2, this sound2image reads 1\.\.1"):
        case.cls.from_pretrained(saved)


def test_pickle_in_place_of_the_weights_is_refused(case: Case, saved: Path) -> None:
    weights = saved / "model.safetensors"
    torch.save(case.make().state_dict(), weights)
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(saved)
    assert (
        str(error.value) == f"{weights}: a pickle (torch.save) file, not safetensors; pickles are not loaded"
    )


def test_pickle_beside_the_config_is_refused(case: Case, saved: Path) -> None:
    (saved / "model.safetensors").unlink()
    torch.save(case.make().state_dict(), saved / "pytorch_model.bin")
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(saved)
    assert str(error.value) == (
        f"{saved / 'pytorch_model.bin'}: a pickle file; only model.safetensors (safetensors) is loaded"
    )


def test_damaged_weights_and_missing_config(case: Case, saved: Path, tmp_path: Path) -> None:
    (saved / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    damaged = r"saved/model\.safetensors: cannot read \(not a complete safetensors"
    with pytest.raises(WeightsError, match=damaged):
        case.cls.from_pretrained(saved)
    with pytest.raises(WeightsError) as error:
        case.cls.from_pretrained(tmp_path)
    if case.cls is ImageBindAudioEncoder:  # a folder without config.json is looked up like the cache
        assert str(error.value).startswith(f"{tmp_path}: weights path is a folder without imagebind_huge.pth")
    else:
        assert str(error.value) == f"{tmp_path / 'config.json'}: missing (not {case.what} directory?)"


def test_check_state_dict_lists_a_few_names_then_a_count() -> None:
    expected = {f"w{i}": torch.Size([1]) for i in range(8)}
    with pytest.raises(WeightsError) as error:
        check_state_dict("f.safetensors", {}, expected)
    assert str(error.value) == "f.safetensors: 8 missing (w0, w1, w2, w3, w4, ... 3 more)"
    check_state_dict("f.safetensors", {k: torch.zeros(1) for k in expected}, expected)  # no error


@torch.no_grad()
def test_pipeline_saves_its_audio_encoder_in_the_encoders_own_format(tmp_path: Path) -> None:
    encoder = get_dummy_audio_encoder()
    save_audio_encoder(encoder, tmp_path / "by-pipeline")
    encoder.save_pretrained(tmp_path / "by-encoder")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "by-pipeline" / name).read_bytes() == (tmp_path / "by-encoder" / name).read_bytes()
    loaded = load_saved_audio_encoder(tmp_path / "by-pipeline")
    features = torch.linspace(-3, 3, 128 * 204).view(1, 1, 128, 204)
    assert torch.equal(loaded(features), encoder(features))


@torch.no_grad()
def test_encoder_folder_saved_before_the_contract_still_loads(tmp_path: Path) -> None:
    """The audio_encoder/ folder of a pipeline saved by an older sound2image: config.json is the bare
    config dict (no format marker), model.safetensors holds our tensor names."""
    encoder = get_dummy_audio_encoder()
    old = tmp_path / "audio_encoder"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(encoder.config.to_dict()))
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(old / "model.safetensors"))
    loaded = ImageBindAudioEncoder.from_pretrained(old)
    features = torch.linspace(-3, 3, 128 * 204).view(1, 1, 128, 204)
    assert torch.equal(loaded(features), encoder(features))
    assert loaded.config == encoder.config and loaded.weights_source == str(old)
