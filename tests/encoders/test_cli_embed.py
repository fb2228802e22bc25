"""`sound2image embed`: rows per file, names stored, bad files reported, no silent overwrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from sound2image.cli.main import main
from sound2image.encoders import ImageBindAudioConfig, ImageBindAudioEncoder
from sound2image.encoders.imagebind import load_embeddings
from sound2image.encoders.weights import write_audio_safetensors

pytestmark = pytest.mark.numeric
CONFIG = ImageBindAudioConfig(embed_dim=32, num_blocks=1, num_heads=2, out_embed_dim=24)


@pytest.fixture()
def weights(tmp_path: Path) -> tuple[Path, ImageBindAudioEncoder]:
    torch.manual_seed(0)
    model = ImageBindAudioEncoder(CONFIG).eval()
    path = write_audio_safetensors(
        model.official_state_dict(), tmp_path / "w.safetensors", CONFIG, source="test"
    )
    return path, model


def _wav(path: Path, freq: float, seconds: float = 2.2, sr: int = 16000) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
    sf.write(path, x, sr, subtype="FLOAT")
    return x


def test_embed_folder_and_file_with_bad_items(weights, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, model = weights
    sounds = tmp_path / "sounds"
    a = _wav(sounds / "beach" / "a.wav", 440.0)
    b = _wav(sounds / "forest" / "b.wav", 1800.0)
    (sounds / "forest" / "broken.wav").write_text("not audio at all")
    single = _wav(tmp_path / "single.wav", 700.0)
    out = tmp_path / "out" / "e.safetensors"
    code = main(
        [
            "embed",
            str(sounds),
            str(tmp_path / "single.wav"),
            str(tmp_path / "missing.wav"),
            "-o",
            str(out),
            "--weights",
            str(path),
            "--device",
            "cpu",
            "--batch-size",
            "2",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "broken.wav" in err and "missing.wav: no such file or folder" in err
    embeddings, files, metadata = load_embeddings(out)
    assert files == ["beach/a.wav", "forest/b.wav", str(tmp_path / "single.wav")]
    expected = model.embed([(a, 16000), (b, 16000), (single, 16000)])
    # Batches of 2 (the CLI) vs 3: kernels may block them differently, <= eps * K (K <= 256) relative.
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-5)
    assert {item["file"] for item in metadata["skipped"]} == {
        str(sounds / "forest" / "broken.wav"),
        str(tmp_path / "missing.wav"),
    }
    assert metadata["encoder_config"]["clip_layout"] == "imagebind"


def test_refuses_to_overwrite_then_overwrites(weights, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _ = weights
    _wav(tmp_path / "x.wav", 440.0)
    out = tmp_path / "e.safetensors"
    out.write_bytes(b"precious")
    args = ["embed", str(tmp_path / "x.wav"), "-o", str(out), "--weights", str(path)]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main([*args, "--overwrite"]) == 0
    assert load_embeddings(out)[1] == [str(tmp_path / "x.wav")]


def test_clips_per_file_covers_the_end(weights, tmp_path: Path) -> None:
    path, _ = weights
    x = np.concatenate([_wav(tmp_path / "a.wav", 440.0, 7.5), _wav(tmp_path / "b.wav", 3000.0, 2.5)])
    sf.write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    outs = []
    for extra in ([], ["--clips-per-file", "5"]):
        out = tmp_path / f"e{len(extra)}.safetensors"
        assert (
            main(["embed", str(tmp_path / "long.wav"), "-o", str(out), "--weights", str(path), *extra]) == 0
        )
        embeddings, _, metadata = load_embeddings(out)
        outs.append(embeddings)
    assert (
        metadata["encoder_config"]["clips_per_file"] == 5
        and metadata["encoder_config"]["clip_layout"] == "cover"
    )
    assert F.cosine_similarity(outs[0], outs[1]).item() < 0.9999  # differ by far more than rounding (~1e-7)


def test_all_bad_writes_nothing(weights, tmp_path: Path) -> None:
    path, _ = weights
    (tmp_path / "bad.wav").write_bytes(b"")
    out = tmp_path / "e.safetensors"
    assert main(["embed", str(tmp_path / "bad.wav"), "-o", str(out), "--weights", str(path)]) == 2
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "w.safetensors"]


def test_help_has_an_example(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["embed", "--help"])
    assert info.value.code == 0
    assert "sound2image embed examples/waves.flac" in capsys.readouterr().out


def test_unavailable_device_is_a_usage_error(weights, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _ = weights
    _wav(tmp_path / "x.wav", 440.0)
    args = ["embed", str(tmp_path / "x.wav"), "-o", str(tmp_path / "e.safetensors"), "--weights", str(path)]
    assert main([*args, "--device", "warp-drive"]) == 2
    assert "--device warp-drive: unknown device" in capsys.readouterr().err
    assert not (tmp_path / "e.safetensors").exists()


def test_bad_files_are_reported_before_weights_are_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Offline with no weights at all: the unusable inputs, not the missing weights, are the error.
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    out = tmp_path / "e.safetensors"
    assert main(["embed", str(empty), "--offline", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"skipped {empty}: file is empty (0 bytes)" in err and "weights" not in err
    assert not out.exists()
