"""`generate` conditions on the channel policy's signal and records the policy (issue 11, B1).

The stereo file has a silent left channel and noise on the right: its down-mix is exactly ``right / 2``,
so the conditioning `generate` stores in the PNG must be the calibrated encoder vector of ``right / 2``
(default), or of silence with ``--channel first``. See tests/encoders/test_channel_policy.py for the
other entry points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sound2image.audio.channels import SilentChannelWarning
from sound2image.cli.main import main
from tests.diffusion.conftest import SAVED_CALIBRATION
from tests.dummies import get_dummy_audio_encoder

pytestmark = pytest.mark.numeric
SR = 16000


@pytest.fixture(scope="module")
def stereo_case(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The file, and the saved pipeline's encoder vectors of its explicit down-mix and of channel 0."""
    right = (0.2 * np.random.default_rng(11).standard_normal(int(SR * 2.5))).astype(np.float32)
    left = np.zeros_like(right)
    path = tmp_path_factory.mktemp("channels") / "left_silent.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    encoder = get_dummy_audio_encoder()  # the weights of the saved pipeline's encoder (same seed)
    mix = np.stack([left, right]).mean(axis=0, dtype=np.float32)
    return path, {"mean": encoder.embed((mix, SR))[0], "first": encoder.embed((left, SR))[0]}


def _generate(saved: Path, out: Path, *args: str) -> dict:
    from sound2image.outputs import read_png_metadata

    code = main(["generate", "--model", str(saved), "--steps", "1", "--device", "cpu", "--seed", "3",
                 "--out", str(out), *args])  # fmt: skip
    assert code == 0
    return read_png_metadata(out / f"{Path(args[0]).stem}_seed3.png")


def test_generate_conditions_on_the_mix_and_records_the_policy(saved_dir, stereo_case, tmp_path, monkeypatch):
    from sound2image.diffusion.conditioning import embedding_from_record, mix_embeddings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stereo, expected = stereo_case
    meta = _generate(saved_dir, tmp_path / "mean", str(stereo))
    calibration = SAVED_CALIBRATION  # what saved_dir stores
    assert meta["audio_channel"] == "mean"
    want = mix_embeddings(expected["mean"][None], calibration)
    assert torch.equal(embedding_from_record(meta["embedding"]), want)
    with pytest.warns(SilentChannelWarning):
        meta = _generate(saved_dir, tmp_path / "first", str(stereo), "--channel", "first")
    assert meta["audio_channel"] == "first"
    want = mix_embeddings(expected["first"][None], calibration)
    assert torch.equal(embedding_from_record(meta["embedding"]), want)


def test_a_unet_trained_on_channel_0_generates_on_channel_0(saved_dir, tmp_path) -> None:
    from sound2image.diffusion import EmbeddingCalibration, SounDiffPipeline
    from sound2image.training.export import export_soundiff

    base = SounDiffPipeline.from_pretrained(saved_dir, device="cpu")
    assert base.audio_encoder.config.channel == "mean"
    export_soundiff(
        base.unclip.unet,
        tmp_path / "export",
        calibration=EmbeddingCalibration(),
        record={"training_config": {"audio_channel": "first"}},
    )
    tuned = SounDiffPipeline.from_pretrained(saved_dir, device="cpu", unet=tmp_path / "export")
    assert tuned.audio_encoder.config.channel == "first"
