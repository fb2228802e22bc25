"""Loading weights: synthetic official-named checkpoints, bad files of every kind, offline, downloads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from sound2image.encoders import ImageBindAudioConfig, ImageBindAudioEncoder
from sound2image.encoders import weights as weights_module
from sound2image.encoders.weights import (
    HUGE_AUDIO_NAME,
    WEIGHTS_ENV,
    download,
    load_audio_state_dict,
    read_checkpoint,
    write_audio_safetensors,
)
from sound2image.errors import WeightsError
from sound2image.hub import OFFLINE_VARIABLES

# Heads of 64 dims, like the official models, so the architecture can be inferred from the shapes.
SMALL = ImageBindAudioConfig(embed_dim=128, num_blocks=2, num_heads=2, out_embed_dim=16)
OTHER_MODALITIES = {
    "modality_trunks.vision.blocks.0.attn.bias_k": torch.randn(1, 1, 8),
    "modality_heads.text.proj.0.weight": torch.randn(4, 4),
}


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real cache, never use a real weights variable, never reach the real URL."""
    monkeypatch.setenv("SOUND2IMAGE_CACHE", str(tmp_path / "cache"))
    for name in (WEIGHTS_ENV, *OFFLINE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(weights_module, "IMAGEBIND_HUGE_URL", "http://127.0.0.1:9/unreachable.pth")


@pytest.fixture(scope="module")
def source_model() -> ImageBindAudioEncoder:
    torch.manual_seed(0)
    return ImageBindAudioEncoder(SMALL).eval()


def _checkpoint(model: ImageBindAudioEncoder) -> dict[str, torch.Tensor]:
    return {**model.official_state_dict(), **OTHER_MODALITIES}


@pytest.fixture()
def pth(tmp_path: Path, source_model: ImageBindAudioEncoder) -> Path:
    path = tmp_path / "imagebind_small.pth"
    torch.save(_checkpoint(source_model), path)
    return path


def _assert_same_weights(a: ImageBindAudioEncoder, b: ImageBindAudioEncoder) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[key], sb[key]) for key in sa)


def test_synthetic_checkpoint_loads_ignoring_other_modalities_and_is_cached(
    pth: Path, source_model: ImageBindAudioEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = ImageBindAudioEncoder.from_pretrained(pth)
    assert loaded.config.num_heads == 2 and loaded.config.embed_dim == 128  # inferred from the shapes
    _assert_same_weights(loaded, source_model)
    cached = list((tmp_path / "cache" / "imagebind").glob("imagebind_small_audio-*.safetensors"))
    assert len(cached) == 1
    # The second load reads the audio-only cache file, not the checkpoint.
    monkeypatch.setattr(weights_module, "read_checkpoint", lambda path: pytest.fail("checkpoint read again"))
    _assert_same_weights(ImageBindAudioEncoder.from_pretrained(pth), source_model)


def test_environment_variable_is_used_without_a_path(
    pth: Path, source_model: ImageBindAudioEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(pth))
    _assert_same_weights(ImageBindAudioEncoder.from_pretrained(), source_model)


def test_truncated_checkpoint(pth: Path) -> None:
    data = pth.read_bytes()
    pth.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"imagebind_small\.pth: truncated"):
        ImageBindAudioEncoder.from_pretrained(pth)


def test_missing_audio_tensor(tmp_path: Path, source_model: ImageBindAudioEncoder) -> None:
    state = _checkpoint(source_model)
    del state["modality_trunks.audio.blocks.1.mlp.fc2.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(
        WeightsError, match=r"missing\.pth: .*1 audio tensors missing .*blocks\.1\.mlp\.fc2\.bias"
    ):
        ImageBindAudioEncoder.from_pretrained(tmp_path / "missing.pth")


def test_misshaped_audio_tensor(tmp_path: Path, source_model: ImageBindAudioEncoder) -> None:
    state = _checkpoint(source_model)
    state["modality_trunks.audio.blocks.1.attn.bias_k"] = torch.zeros(1, 1, 7)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(
        WeightsError, match=r"shape\.pth: .*mis-shaped .*bias_k has shape \(1, 1, 7\), expected \(1, 1, 128\)"
    ):
        ImageBindAudioEncoder.from_pretrained(tmp_path / "shape.pth")


def test_explicit_config_that_does_not_match(pth: Path) -> None:
    with pytest.raises(WeightsError, match="does not match the encoder"):
        ImageBindAudioEncoder.from_pretrained(
            pth, config=ImageBindAudioConfig(embed_dim=64, num_blocks=2, num_heads=2)
        )


@pytest.mark.parametrize("payload", [[1, 2, 3], torch.zeros(3), {"epoch": 3}])
def test_pickle_that_is_not_a_state_dict(tmp_path: Path, payload: object) -> None:
    torch.save(payload, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match=r"odd\.pth: not a state dict"):
        read_checkpoint(tmp_path / "odd.pth")


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_pickle_with_python_objects_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save({"weights": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"evil\.pth: refusing to load"):
        read_checkpoint(tmp_path / "evil.pth")
    assert "must never run" not in capsys.readouterr().out


def test_state_dict_without_audio_tensors(tmp_path: Path) -> None:
    torch.save(OTHER_MODALITIES, tmp_path / "vision.pth")
    with pytest.raises(WeightsError, match="no ImageBind audio tensors"):
        ImageBindAudioEncoder.from_pretrained(tmp_path / "vision.pth")


def test_truncated_safetensors(tmp_path: Path, source_model: ImageBindAudioEncoder) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "audio.safetensors"
    save_file(source_model.official_state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match=r"audio\.safetensors: truncated or not a safetensors file"):
        ImageBindAudioEncoder.from_pretrained(path)


def test_missing_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nowhere\.pth: weights path does not exist"):
        ImageBindAudioEncoder.from_pretrained(tmp_path / "nowhere.pth")
    with pytest.raises(WeightsError, match="is a folder without imagebind_huge.pth"):
        ImageBindAudioEncoder.from_pretrained(tmp_path)


def test_safetensors_recognised_by_content_and_folder_like_the_cache(
    tmp_path: Path, source_model: ImageBindAudioEncoder
) -> None:
    folder = tmp_path / "weights"
    write_audio_safetensors(
        source_model.official_state_dict(), folder / HUGE_AUDIO_NAME, SMALL, source="test"
    )
    _assert_same_weights(ImageBindAudioEncoder.from_pretrained(folder), source_model)
    renamed = (folder / HUGE_AUDIO_NAME).rename(tmp_path / "audio_weights.bin")
    _assert_same_weights(ImageBindAudioEncoder.from_pretrained(renamed), source_model)


@pytest.mark.parametrize("how", ["argument", "HF_HUB_OFFLINE", "SOUND2IMAGE_OFFLINE"])
def test_offline_without_weights_says_where_to_put_them(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how != "argument":
        monkeypatch.setenv(how, "1")
    with pytest.raises(WeightsError) as info:
        ImageBindAudioEncoder.from_pretrained(local_files_only=how == "argument")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "cache" / "imagebind") in message
    assert "pass path=PATH, or set" in message and WEIGHTS_ENV in message


# --- download from a loopback server ----------------------------------------------------------------


class _Server:
    """A one-file HTTP server on 127.0.0.1 with Range support; ``cut`` ends a response early."""

    def __init__(self, data: bytes) -> None:
        self.data, self.ranges, self.cut, self.ignore_range = data, [], None, False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                header = self.headers.get("Range")
                server.ranges.append(header)
                if server.ignore_range:
                    header = None
                start = int(header.split("=")[1].split("-")[0]) if header else 0
                if start >= len(server.data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(server.data)}")
                    self.end_headers()
                    return
                body = server.data[start:]
                self.send_response(206 if header else 200)
                if header:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(server.data) - 1}/{len(server.data)}"
                    )
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if server.cut is None else body[: server.cut])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/imagebind_huge.pth"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture()
def served(pth: Path) -> Iterator[_Server]:
    with _Server(pth.read_bytes()) as server:
        yield server


def test_download_resumes_a_partial_file(served: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "dl" / "imagebind_huge.pth"
    dest.parent.mkdir()
    half = len(served.data) // 2
    (dest.parent / "imagebind_huge.pth.part").write_bytes(served.data[:half])
    download(served.url, dest, progress=False, timeout=10)
    assert served.ranges == [f"bytes={half}-"]
    assert dest.read_bytes() == served.data
    assert not (dest.parent / "imagebind_huge.pth.part").exists()


def test_interrupted_download_keeps_the_part_and_resumes(served: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "imagebind_huge.pth"
    served.cut = 5000
    with pytest.raises(WeightsError, match="run again to resume"):
        download(served.url, dest, progress=False, timeout=10)
    assert not dest.exists()
    assert (tmp_path / "imagebind_huge.pth.part").stat().st_size == 5000
    served.cut = None
    download(served.url, dest, progress=False, timeout=10)
    assert served.ranges == [None, "bytes=5000-"]
    assert dest.read_bytes() == served.data


def test_server_that_ignores_range_restarts_cleanly(served: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "imagebind_huge.pth"
    (tmp_path / "imagebind_huge.pth.part").write_bytes(b"stale bytes that must not stay in front")
    served.ignore_range = True
    download(served.url, dest, progress=False, timeout=10)
    assert dest.read_bytes() == served.data


def test_from_pretrained_downloads_into_the_cache_then_works_offline(
    served: _Server, source_model: ImageBindAudioEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights_module, "IMAGEBIND_HUGE_URL", served.url)
    _assert_same_weights(ImageBindAudioEncoder.from_pretrained(progress=False), source_model)
    folder = tmp_path / "cache" / "imagebind"
    assert sorted(p.name for p in folder.iterdir()) == [HUGE_AUDIO_NAME]  # the full download is gone
    monkeypatch.setenv("SOUND2IMAGE_OFFLINE", "1")
    _assert_same_weights(ImageBindAudioEncoder.from_pretrained(), source_model)
    state, config, source = load_audio_state_dict()
    assert config == ImageBindAudioConfig(embed_dim=128, num_blocks=2, num_heads=2, out_embed_dim=16)
    assert source.endswith(HUGE_AUDIO_NAME) and len(state) == len(source_model.state_dict())


def test_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"could not download http://127\.0\.0\.1:9/"):
        ImageBindAudioEncoder.from_pretrained(progress=False)


def test_save_pretrained_round_trips_the_config_that_shapes_cannot_tell(tmp_path: Path) -> None:
    config = ImageBindAudioConfig(embed_dim=32, num_blocks=1, num_heads=4, out_embed_dim=8, clips_per_file=5)
    torch.manual_seed(3)
    model = ImageBindAudioEncoder(config)
    model.save_pretrained(tmp_path / "enc.safetensors")
    loaded = ImageBindAudioEncoder.from_pretrained(tmp_path / "enc.safetensors")
    assert loaded.config == config  # 4 heads of 8 dims: not inferable from the shapes
    _assert_same_weights(loaded, model)


# --- one offline rule (issue 11, E): every variable, every true spelling, no download attempted ----------


@pytest.mark.parametrize("variable", ["SOUND2IMAGE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On"])
def test_every_offline_variable_stops_the_imagebind_download(
    variable: str, value: str, served: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The weights are on a reachable server: only the offline rule can keep us from fetching them.
    monkeypatch.setattr(weights_module, "IMAGEBIND_HUGE_URL", served.url)
    monkeypatch.setenv(variable, value)
    with pytest.raises(WeightsError) as info:
        ImageBindAudioEncoder.from_pretrained(progress=False)
    folder = tmp_path / "cache" / "imagebind"
    assert str(info.value) == (
        f"ImageBind weights not found (offline ({variable}={value}), no download): put imagebind_huge.pth "
        f"(or {HUGE_AUDIO_NAME}) in {folder}, pass path=PATH, or set {WEIGHTS_ENV}=PATH "
        f"(download: {served.url})"
    )
    assert info.value.parameters == ("path",)
    assert served.ranges == []  # no request reached the server
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_false_offline_values_still_download(
    value: str, served: _Server, source_model: ImageBindAudioEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights_module, "IMAGEBIND_HUGE_URL", served.url)
    for variable in OFFLINE_VARIABLES:
        monkeypatch.setenv(variable, value)
    _assert_same_weights(ImageBindAudioEncoder.from_pretrained(progress=False), source_model)
    assert served.ranges == [None]  # one plain request, the whole file


def test_the_offline_flag_of_embed_stops_the_download(
    served: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    from sound2image.cli.main import main
    from tests.paths import PSEUDO_ADVANCE

    wav = sorted((PSEUDO_ADVANCE / "sound" / "beach").glob("*.wav"))[0]
    monkeypatch.setattr(weights_module, "IMAGEBIND_HUGE_URL", served.url)
    capfd.readouterr()
    assert main(["embed", str(wav), "-o", str(tmp_path / "e.safetensors"), "--offline"]) == 1
    folder = tmp_path / "cache" / "imagebind"
    assert capfd.readouterr().err == (
        f"error: ImageBind weights not found (offline (--offline), no download): put imagebind_huge.pth "
        f"(or {HUGE_AUDIO_NAME}) in {folder}, pass --weights=PATH, or set {WEIGHTS_ENV}=PATH "
        f"(download: {served.url})\n"
    )
    assert served.ranges == []
