"""Every setting of ``ImageBindAudioEncoder.embed`` and of ``sound2image embed``, checked where it acts.

``dtype`` must give exactly what a hand-cast model computes (and not what float32 computes); the
preprocessing keywords must give exactly the features of the config they name (and not the default's);
``batch_size`` must set the files per forward pass; ``--offline`` must prevent the download.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from sound2image.cli.main import main
from sound2image.encoders import ImageBindAudioConfig, ImageBindAudioEncoder
from sound2image.encoders.imagebind import load_embeddings
from sound2image.encoders.preprocess import preprocess_audio
from sound2image.errors import WeightsError

pytestmark = pytest.mark.numeric
CONFIG = ImageBindAudioConfig(embed_dim=32, num_blocks=1, num_heads=2, out_embed_dim=64)


def _model() -> ImageBindAudioEncoder:
    torch.manual_seed(0)
    return ImageBindAudioEncoder(CONFIG).eval()


def _tone(freq: float, seconds: float = 2.5, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 3.1 * freq * t)).astype(np.float32)


def hand_embedding(model: ImageBindAudioEncoder, item, dtype: torch.dtype, **preprocessing) -> torch.Tensor:
    """(D,) one file by hand: features of the named config, a cast copy of the model, L2 x scale, clip mean.

    The scale is ImageBind's exp(log(20)) in float32 whatever the compute dtype (log(20) rounded to
    bfloat16 would give norm 20.125): the expected norm is 20 for every dtype.
    """
    config = dataclasses.replace(model.config, **preprocessing)
    features = preprocess_audio(item, config)  # (clips, 1, mel, frames) float32
    cast = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        heads = cast(features.to(dtype)).float()  # (clips, D)
    scale = torch.tensor(math.log(20.0), dtype=torch.float32).exp()
    return (F.normalize(heads, dim=-1) * scale).mean(dim=0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_embed_dtype_runs_the_model_in_that_dtype(dtype: str) -> None:
    item = (_tone(440.0), 16000)
    model = _model()
    fp32 = model.embed([item])[0]
    cast = model.embed([item], device="cpu", dtype=dtype)[0]
    expected = hand_embedding(_model(), item, getattr(torch, dtype))
    # The same operations on the same numbers in the same order: equal to the last bit.
    assert torch.equal(cast, expected)
    # ... and not float32's: half precision moves the unit-norm x 20 output by far more than float32 eps.
    assert (cast - fp32).abs().max().item() > 1e-4
    assert cast.dtype == torch.float32  # returned as float32 whatever the compute dtype
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}  # cast in place (documented)


def test_embed_batch_size_sets_files_per_forward(monkeypatch) -> None:
    seen: list[int] = []
    original = ImageBindAudioEncoder.embed_features

    def spy(self, features, clips_per_file=None):
        seen.append(features.shape[0] // (clips_per_file or self.config.clips_per_file))
        return original(self, features, clips_per_file)

    monkeypatch.setattr(ImageBindAudioEncoder, "embed_features", spy)
    items = [(_tone(f), 16000) for f in (220.0, 440.0, 880.0, 1760.0, 3000.0)]
    _model().embed(items, batch_size=2)
    assert seen == [2, 2, 1]


@pytest.mark.parametrize(
    "preprocessing",
    [{"clips_per_file": 2}, {"clip_layout": "cover"}, {"clips_per_file": 5, "clip_layout": "cover"}],
)
def test_embed_clip_keywords_give_that_configs_features(preprocessing: dict) -> None:
    # 10 s whose last 2.5 s differ: every window placement sees a different mix of the two tones.
    item = (np.concatenate([_tone(440.0, 7.5), _tone(3000.0, 2.5)]), 16000)
    model = _model()
    ours = model.embed([item], **preprocessing)[0]
    torch.testing.assert_close(ours, hand_embedding(model, item, torch.float32, **preprocessing))
    default = model.embed([item])[0]
    assert (ours - default).abs().max().item() > 1e-3


def test_embed_resampler_keyword_resamples_with_that_method() -> None:
    item = (_tone(440.0, 3.0, sr=22050), 22050)
    model = _model()
    ours = model.embed([item], resampler="polyphase")[0]
    torch.testing.assert_close(ours, hand_embedding(model, item, torch.float32, resampler="polyphase"))
    sinc = model.embed([item])[0]
    torch.testing.assert_close(sinc, hand_embedding(model, item, torch.float32, resampler="sinc"))
    assert not torch.equal(ours, sinc)


def test_embed_progress_keyword_shows_a_bar(capsys) -> None:
    items = [(_tone(f), 16000) for f in (220.0, 440.0)]
    model = _model()
    model.embed(items, progress=False)
    assert "embedding" not in capsys.readouterr().err
    model.embed(items, progress=True)
    err = capsys.readouterr().err
    assert "embedding" in err and "2/2" in err


# --- the command ------------------------------------------------------------------------------------


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    _model().save_pretrained(path)
    return path


def _wav(path: Path, freq: float, seconds: float = 2.5) -> tuple[np.ndarray, int]:
    x = _tone(freq, seconds)
    sf.write(path, x, 16000, subtype="FLOAT")
    return x, 16000


def test_cli_dtype_flag_embeds_in_that_dtype(weights: Path, tmp_path: Path) -> None:
    item = _wav(tmp_path / "a.wav", 440.0)
    rows = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.safetensors"
        args = [
            "embed",
            str(tmp_path / "a.wav"),
            "-o",
            str(out),
            "--weights",
            str(weights),
            "--device",
            "cpu",
        ]
        assert main([*args, "--dtype", dtype]) == 0
        rows[dtype], _, metadata = load_embeddings(out)
        assert metadata["dtype"] == dtype
    assert torch.equal(rows["bfloat16"][0], hand_embedding(_model(), item, torch.bfloat16))
    assert torch.equal(rows["float32"][0], hand_embedding(_model(), item, torch.float32))


def test_cli_batch_size_flag_sets_files_per_forward(weights: Path, tmp_path: Path, monkeypatch) -> None:
    seen: list[int] = []
    original = ImageBindAudioEncoder.embed_features

    def spy(self, features, clips_per_file=None):
        seen.append(features.shape[0] // (clips_per_file or self.config.clips_per_file))
        return original(self, features, clips_per_file)

    monkeypatch.setattr(ImageBindAudioEncoder, "embed_features", spy)
    folder = tmp_path / "sounds"
    folder.mkdir()
    for index, freq in enumerate((220.0, 440.0, 880.0)):
        _wav(folder / f"{index}.wav", freq)
    out = tmp_path / "e.safetensors"
    assert main(["embed", str(folder), "-o", str(out), "--weights", str(weights), "--batch-size", "2"]) == 0
    assert seen == [2, 1]


def test_cli_clips_per_file_flag_gives_that_configs_features(weights: Path, tmp_path: Path) -> None:
    x = np.concatenate([_tone(440.0, 7.5), _tone(3000.0, 2.5)])
    sf.write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    out = tmp_path / "e.safetensors"
    args = ["embed", str(tmp_path / "long.wav"), "-o", str(out), "--weights", str(weights)]
    assert main([*args, "--clips-per-file", "4"]) == 0
    rows, _, _ = load_embeddings(out)
    # --clips-per-file N spreads N windows over the whole file (the "cover" layout).
    expected = hand_embedding(_model(), (x, 16000), torch.float32, clips_per_file=4, clip_layout="cover")
    torch.testing.assert_close(rows[0], expected)


def test_cli_offline_flag_never_downloads(tmp_path: Path, monkeypatch, capsys) -> None:
    from sound2image.encoders import weights as weights_module

    calls: list[object] = []

    def fake_download(*args, **kwargs):
        calls.append(args)
        raise WeightsError("imagebind_huge: (test) download attempted")

    monkeypatch.setattr(weights_module, "download", fake_download)
    monkeypatch.setenv("SOUND2IMAGE_CACHE", str(tmp_path / "empty-cache"))
    for name in (
        "SOUND2IMAGE_IMAGEBIND_WEIGHTS",
        "SOUND2IMAGE_OFFLINE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
    ):
        monkeypatch.delenv(name, raising=False)
    _wav(tmp_path / "a.wav", 440.0)
    args = ["embed", str(tmp_path / "a.wav"), "-o", str(tmp_path / "e.safetensors")]
    assert main([*args, "--offline"]) == 1
    assert calls == [] and "download attempted" not in capsys.readouterr().err
    assert main(args) == 1
    assert len(calls) == 1 and "download attempted" in capsys.readouterr().err


def test_from_pretrained_cache_dir_and_config_keywords(tmp_path: Path, monkeypatch) -> None:
    from sound2image.encoders.weights import HUGE_AUDIO_NAME

    monkeypatch.delenv("SOUND2IMAGE_IMAGEBIND_WEIGHTS", raising=False)
    monkeypatch.setenv("SOUND2IMAGE_CACHE", str(tmp_path / "empty-default-cache"))
    source = _model()
    source.save_pretrained(tmp_path / "my-cache" / HUGE_AUDIO_NAME)
    loaded = ImageBindAudioEncoder.from_pretrained(cache_dir=tmp_path / "my-cache", local_files_only=True)
    theirs = source.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in loaded.state_dict().items())
    # config= decides what the weights cannot tell (the preprocessing).
    config = dataclasses.replace(CONFIG, clips_per_file=5, clip_layout="cover")
    custom = ImageBindAudioEncoder.from_pretrained(tmp_path / "my-cache" / HUGE_AUDIO_NAME, config=config)
    assert (custom.config.clips_per_file, custom.config.clip_layout) == (5, "cover")
    item = (np.concatenate([_tone(440.0, 7.5), _tone(3000.0, 2.5)]), 16000)
    torch.testing.assert_close(
        custom.embed([item])[0],
        hand_embedding(source, item, torch.float32, clips_per_file=5, clip_layout="cover"),
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_embedding_norm_is_twenty_in_every_dtype(dtype: torch.dtype) -> None:
    """ImageBind vectors have norm exp(log 20) = 20; a cast model must not round the scale (bf16: 20.125)."""
    model = _model().to(dtype)
    assert model.log_logit_scale.dtype == torch.float32
    vector = model.embed([(_tone(440.0), 16000)], clips_per_file=1)[0]
    # One clip: no averaging, so the norm is the scale itself; float32 normalisation of 1024 terms ~1e-6.
    assert vector.norm().item() == pytest.approx(20.0, rel=1e-5)
