"""The encoder against the reference's golden vectors, the official shapes and nn.MultiheadAttention."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sound2image.encoders import ImageBindAudioConfig, ImageBindAudioEncoder
from sound2image.encoders.imagebind import (
    OFFICIAL_KEY_PREFIXES,
    BiasKVAttention,
    from_official_key,
    to_official_key,
)
from tests.paths import IMAGEBIND_REFERENCE

pytestmark = pytest.mark.numeric
INPUTS = IMAGEBIND_REFERENCE / "inputs"
GOLDEN = json.loads((IMAGEBIND_REFERENCE / "golden.json").read_text())
# Cosine thresholds of the acceptance criteria: resampled inputs get a looser bound. For unit vectors
# 1 - cos = |a - b|^2 / 2, so 0.9999 allows a 1.4 % relative difference; float32 rounding of the 16 kHz
# route gives 1 - cos ~ 1e-7 (measured) and is pinned far tighter by the feature and head tests below.
THRESHOLDS = {
    "real_10s_16000.wav": 0.9999,
    "short_1s_16000.wav": 0.9999,
    "real_10s_22050.wav": 0.999,
    "stereo_3s_44100.wav": 0.999,
}


def _shapes_file() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (IMAGEBIND_REFERENCE / "huge_audio_state_dict_shapes.txt").read_text().splitlines():
        name, shape = line.split("\t")
        shapes[name] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return shapes


@pytest.fixture(scope="module")
def small() -> ImageBindAudioEncoder:
    config = ImageBindAudioConfig.from_reference(GOLDEN["config"])
    return ImageBindAudioEncoder.from_pretrained(
        IMAGEBIND_REFERENCE / "small_audio_weights.safetensors", config=config
    )


@pytest.fixture(scope="module")
def golden_embeddings(small: ImageBindAudioEncoder) -> dict[str, torch.Tensor]:
    names = list(GOLDEN["inputs"])
    # The reference reads channel 0 of the stereo input; our default is the down-mix.
    rows = small.embed([INPUTS / name for name in names], batch_size=4, channel="first")
    return dict(zip(names, rows, strict=True))


@pytest.mark.parametrize("name", list(THRESHOLDS))
def test_embeddings_match_golden(name: str, golden_embeddings: dict[str, torch.Tensor]) -> None:
    expected = torch.tensor(GOLDEN["inputs"][name]["embedding"])
    ours = golden_embeddings[name]
    assert F.cosine_similarity(ours, expected, dim=0).item() >= THRESHOLDS[name]
    # The norm of the mean of 3 clip vectors (20 each) moves with their angles: same acceptance budget.
    assert ours.norm().item() == pytest.approx(GOLDEN["inputs"][name]["embedding_norm"], rel=1e-3)


@pytest.mark.parametrize("name", list(THRESHOLDS))
def test_per_clip_head_outputs_match_golden(name: str, small: ImageBindAudioEncoder) -> None:
    from sound2image.encoders.preprocess import preprocess_audio

    with torch.no_grad():
        heads = small(preprocess_audio(INPUTS / name, small.sampling_config(channel="first")))  # (3, 32)
    expected = torch.tensor(GOLDEN["inputs"][name]["head_output_per_clip_before_postprocess"])
    assert F.cosine_similarity(heads, expected, dim=1).min().item() >= THRESHOLDS[name]
    torch.testing.assert_close(heads.norm(dim=1), expected.norm(dim=1), rtol=2e-3, atol=0)  # acceptance


def test_model_on_reference_features_matches_golden_heads_to_float_precision(
    small: ImageBindAudioEncoder,
) -> None:
    features = load_file(IMAGEBIND_REFERENCE / "features.safetensors")
    for name, values in GOLDEN["inputs"].items():
        with torch.no_grad():
            heads = small(features[name])
        # Same float32 model, same inputs, another machine's BLAS: each matmul's sum of K <= 256 products
        # may be ordered differently, <= eps * K ~ 3e-5 relative (worst case), through a few layers.
        torch.testing.assert_close(
            heads, torch.tensor(values["head_output_per_clip_before_postprocess"]), atol=1e-4, rtol=1e-4
        )


def test_huge_names_and_shapes_equal_the_official_checkpoint() -> None:
    with torch.device("meta"):
        huge = ImageBindAudioEncoder()
    ours = {name: tuple(tensor.shape) for name, tensor in huge.official_state_dict().items()}
    assert ours == _shapes_file()
    assert len(ours) == 177


def test_key_mapping_round_trips_both_ways() -> None:
    official = list(_shapes_file())
    with torch.device("meta"):
        ours = list(ImageBindAudioEncoder().state_dict())
    assert sorted(from_official_key(key) for key in official) == sorted(ours)
    assert sorted(to_official_key(key) for key in ours) == sorted(official)
    assert all(to_official_key(from_official_key(key)) == key for key in official)
    assert from_official_key("modality_trunks.vision.blocks.0.attn.bias_k") is None
    assert len({ours for ours, _ in OFFICIAL_KEY_PREFIXES}) == len(OFFICIAL_KEY_PREFIXES)


def test_attention_equals_nn_multihead_attention_with_bias_kv() -> None:
    ours = BiasKVAttention(32, 4)
    reference = torch.nn.MultiheadAttention(32, 4, add_bias_kv=True, batch_first=True)
    reference.load_state_dict(ours.state_dict())  # identical parameter names and shapes
    x = torch.randn(3, 7, 32)
    expected, _ = reference(x, x, x, need_weights=False)
    # Fused vs separate projections reorder sums of K = 32 products: <= eps * 32 ~ 4e-6 relative each.
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_drop_path_only_in_training() -> None:
    model = ImageBindAudioEncoder(
        ImageBindAudioConfig(embed_dim=32, num_blocks=2, num_heads=2, out_embed_dim=16, drop_path=0.9)
    )
    x = torch.randn(4, 1, 128, 204)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_postprocess_gives_norm_20() -> None:
    model = ImageBindAudioEncoder(
        ImageBindAudioConfig(embed_dim=32, num_blocks=1, num_heads=2, out_embed_dim=16)
    )
    out = model.postprocess(torch.randn(5, 16))
    torch.testing.assert_close(out.norm(dim=1), torch.full((5,), 20.0))


# --- embed() -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> ImageBindAudioEncoder:
    torch.manual_seed(0)
    return ImageBindAudioEncoder(
        ImageBindAudioConfig(embed_dim=32, num_blocks=1, num_heads=2, out_embed_dim=1024)
    )


def _tone(freq: float, seconds: float = 2.5, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_embed_mixed_inputs_agree_with_each_other(tiny: ImageBindAudioEncoder, tmp_path) -> None:
    from sound2image.audio import load_audio

    x = _tone(440.0)
    path = tmp_path / "tone.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    inputs = [path, (x, 16000), load_audio(path), path.read_bytes(), io.BytesIO(path.read_bytes())]
    out = tiny.embed(inputs, batch_size=3)
    assert out.shape == (5, 1024) and out.dtype == torch.float32
    for row in out[1:]:
        # Same samples; only the batch position differs (kernels may block a batch differently):
        # ~eps * K (K <= 256) relative on entries <= ~2.2. Bit-equal here (measured).
        torch.testing.assert_close(row, out[0], atol=1e-5, rtol=0)
    # A mean of unit vectors times 20 has norm <= 20 up to float32 norms: 20 * eps * log2(1024) ~ 3e-5.
    assert out.norm(dim=1).max().item() <= 20.0 + 1e-4


def test_embed_batch_equals_single(tiny: ImageBindAudioEncoder) -> None:
    items = [(_tone(f, seconds=s), 16000) for f, s in [(220, 2.5), (660, 5.0), (1500, 1.2)]]
    batched = tiny.embed(items, batch_size=3)
    single = torch.cat([tiny.embed(item) for item in items])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)  # batch blocking: eps * K, as above
    # Different sounds give different embeddings (the test would catch a batch mix-up): 1 - cos > 1e-4 is
    # ~1,000x what rounding moves (1 - cos ~ 1e-7).
    assert F.cosine_similarity(batched[0], batched[1], dim=0) < 0.9999


def test_embed_bf16_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = ImageBindAudioEncoder(
        ImageBindAudioConfig(embed_dim=32, num_blocks=1, num_heads=2, out_embed_dim=1024)
    )
    items = [(_tone(330.0), 16000), (_tone(2000.0, 3.0), 16000)]
    fp32 = model.embed(items)
    bf16 = model.embed(items, device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.float32
    # bf16 keeps 8 significant bits (2^-8 relative per rounding); through a few layers the relative error
    # stays ~1e-2 at most, so 1 - cos ~ r^2 / 2 <= 1e-4; 0.99 leaves room and still rejects other sounds.
    assert F.cosine_similarity(fp32, bf16, dim=1).min().item() > 0.99


def test_embed_clip_options_change_the_windows(tiny: ImageBindAudioEncoder) -> None:
    # A 10 s file whose last 2.5 s differ: ImageBind's 3 windows (the last ends at 7.33 s) never see
    # them, 5 "cover" windows do.
    x = np.concatenate([_tone(440.0, 7.5), _tone(3000.0, 2.5)])
    plain = tiny.embed((np.concatenate([_tone(440.0, 7.5), _tone(440.0, 2.5)]), 16000))
    default = tiny.embed((x, 16000))
    covered = tiny.embed((x, 16000), clips_per_file=5, clip_layout="cover")
    # The 3 windows hold bitwise-identical samples in both files and run in the same shapes: equal.
    torch.testing.assert_close(default, plain, atol=0, rtol=0)
    assert F.cosine_similarity(covered, plain).item() < 0.9999


@pytest.mark.parametrize("name", ["real_10s_22050.wav", "stereo_3s_44100.wav"])
def test_polyphase_resampler_option_is_within_the_resampled_bound(
    name: str, small: ImageBindAudioEncoder
) -> None:
    # sound2image.audio.resample (Kaiser polyphase) instead of the torchaudio-compatible sinc.
    expected = torch.tensor(GOLDEN["inputs"][name]["embedding"])
    ours = small.embed(INPUTS / name, resampler="polyphase", channel="first")[0]
    # The resampled-input acceptance bound (see THRESHOLDS); the Kaiser filter differs from torchaudio's
    # Hann sinc in the transition band: 1 - cos = 7.7e-5 measured on the 22,050 Hz file.
    assert F.cosine_similarity(ours, expected, dim=0).item() >= 0.999
