"""The encoder-decoder: causality, locality, where cross-attention reads, the null memory, persistence."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sound2image.errors import WeightsError
from sound2image.transformer import ImageTransformer
from tests.transformer.tiny import tiny_model

pytestmark = pytest.mark.numeric


def _embedding_grads(model: ImageTransformer, tokens: torch.Tensor, position: int) -> torch.Tensor:
    """d logits[:, position] / d (pixel embeddings), summed over the model width: (B, T)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: object, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        output.retain_grad()
        captured["embedding"] = output
        return output

    handle = model.pixel_in.register_forward_hook(keep)
    try:
        audio = torch.randn(tokens.shape[0], 6, 10)
        logits, _ = model(audio, tokens)
        logits[:, position].sum().backward()
    finally:
        handle.remove()
    return captured["embedding"].grad.abs().sum(dim=-1)


@settings(max_examples=12, deadline=None)
@given(position=st.integers(min_value=0, max_value=63), seed=st.integers(min_value=0, max_value=2**16))
def test_output_at_t_does_not_depend_on_inputs_after_t(position: int, seed: int) -> None:
    model = tiny_model(seed)
    tokens = torch.randint(0, 257, (2, 64), generator=torch.Generator().manual_seed(seed))
    grads = _embedding_grads(model, tokens, position)
    assert torch.all(grads[:, position + 1 :] == 0)
    assert torch.all(grads[:, position] > 0)  # and it does depend on its own input


def test_one_layer_sees_only_its_local_window() -> None:
    # One decoder layer: the receptive field is exactly the local window (block 8, memory 8).
    model = tiny_model(n_decoder_layers=1)
    tokens = torch.randint(0, 257, (1, 64))
    grads = _embedding_grads(model, tokens, 37)  # block [32, 40) -> keys 24..37
    assert torch.all(grads[0, :24] == 0)
    assert torch.all(grads[0, 24:38] > 0)
    assert torch.all(grads[0, 38:] == 0)


def test_cross_attention_reads_the_self_attention_output() -> None:
    model = tiny_model()
    block = model.decoder[0]
    x = torch.randn(1, 64, 32)
    seen: dict[str, torch.Tensor] = {}
    handle = block.ln_cross.register_forward_hook(lambda _m, inputs, _o: seen.setdefault("input", inputs[0]))
    memory_kv = model.project_memory(model.encode(torch.randn(1, 6, 10)))[0]
    block(x, memory_kv)
    handle.remove()
    after_self_attention = x + block.self_attn(block.ln_self(x))
    torch.testing.assert_close(seen["input"], after_self_attention)
    assert not torch.allclose(seen["input"], x)  # the reference bug fed the block input here


def test_null_memory_ignores_the_audio() -> None:
    model = tiny_model()
    tokens = torch.randint(0, 257, (2, 64))
    drop = torch.tensor([False, False])
    first, _ = model(torch.randn(2, 6, 10), tokens, keep=drop)
    second, _ = model(torch.randn(2, 6, 10) * 5, tokens, keep=drop)
    torch.testing.assert_close(first, second)
    with_audio, _ = model(torch.randn(2, 6, 10), tokens)
    assert not torch.allclose(first, with_audio)


def test_loss_is_cross_entropy_of_next_pixel() -> None:
    model = tiny_model()
    pixels = torch.randint(0, 256, (3, 64))
    inputs = model.decoder_inputs(pixels)
    assert inputs[:, 0].tolist() == [256] * 3 and torch.equal(inputs[:, 1:], pixels[:, :-1])
    logits, loss = model(torch.randn(3, 6, 10), inputs, pixels)
    log_probs = logits.log_softmax(-1)
    by_hand = -sum(log_probs[b, t, pixels[b, t]] for b in range(3) for t in range(64)) / (3 * 64)
    # A sequential float32 sum of 192 same-sign terms (<= 191 * eps / 2 ~ 1.1e-5 relative, worst case) vs
    # cross_entropy's tree reduction (~eps * log2(192)).
    assert loss.item() == pytest.approx(by_hand.item(), rel=2e-5)


def test_save_and_load_round_trip(tmp_path) -> None:
    model = tiny_model()
    model.feature_mean.fill_(0.5)
    model.save_pretrained(tmp_path / "m", {"features": {"sample_rate": 8000}})
    loaded = ImageTransformer.from_pretrained(tmp_path / "m")
    record = loaded.saved_metadata
    assert record["features"] == {"sample_rate": 8000}
    audio, tokens = torch.randn(1, 6, 10), torch.randint(0, 257, (1, 64))
    torch.testing.assert_close(loaded(audio, tokens)[0], model(audio, tokens)[0])


def test_bad_model_directories_raise_weights_error(tmp_path) -> None:
    with pytest.raises(WeightsError, match="config.json: missing"):
        ImageTransformer.from_pretrained(tmp_path)
    tiny_model().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="model.safetensors: cannot read"):
        ImageTransformer.from_pretrained(tmp_path / "m")
    tiny_model(d_model=16).save_pretrained(tmp_path / "small")
    (tmp_path / "m" / "model.safetensors").write_bytes(
        (tmp_path / "small" / "model.safetensors").read_bytes()
    )
    mis_shaped = r"m/model\.safetensors: 61 mis-shaped \(audio_in\.bias: \(16,\) vs \(32,\), "
    with pytest.raises(WeightsError, match=mis_shaped):
        ImageTransformer.from_pretrained(tmp_path / "m")
