"""Half-precision decoder weights for sampling: the layer against a float64 reference of the same roundings,
a converted model against a twin built from that reference, and the cached path still drawing exactly the
uncached path's tokens."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sound2image.modules import HalfLinear, half_linears
from sound2image.modules.half import summed_products
from sound2image.transformer import SamplingConfig, generate
from tests.transformer.tiny import tiny_model

pytestmark = pytest.mark.numeric
DTYPES = [torch.float16, torch.bfloat16]


def reference_half_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype
) -> torch.Tensor:
    """What a HalfLinear computes, in float64: inputs, weights and bias rounded to ``dtype``, products
    summed exactly (float64 is exact enough here), the sum rounded to ``dtype`` and cast back."""
    exact = F.linear(
        x.to(dtype).double(), weight.to(dtype).double(), None if bias is None else bias.to(dtype).double()
    )
    return exact.to(dtype).to(x.dtype)


def half_tolerance(x: torch.Tensor, weight: torch.Tensor, dtype) -> torch.Tensor:
    """Elementwise bound on the kernel's own summation error: gamma_K with unit roundoff u of ``dtype``
    (the worst case, should it accumulate in ``dtype``; float32 accumulation is far inside it), times the
    sum of |products|, plus one rounding of the result (u · |y|, folded in by K + 2)."""
    k, u = x.shape[-1], torch.finfo(dtype).eps / 2
    return (k + 2) * u * (x.to(dtype).double().abs() @ weight.to(dtype).double().abs().T)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "k", "n"), [(1, 32, 96), (7, 64, 40), (2, 512, 256)])
def test_half_linear_is_the_rounded_product(dtype, rows: int, k: int, n: int) -> None:
    generator = torch.Generator().manual_seed(rows * k)
    layer = nn.Linear(k, n)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n, k, generator=generator) * 0.1)
        layer.bias.copy_(torch.randn(n, generator=generator))
    half = HalfLinear.from_linear(layer, dtype)
    assert half.weight.dtype == dtype and not list(half.parameters())
    x = torch.randn(rows, 3, k, generator=generator)  # (..., K): leading dims kept
    y = half(x)
    assert y.shape == (rows, 3, n) and y.dtype == torch.float32
    expected = reference_half_linear(x, layer.weight.detach(), layer.bias.detach(), dtype)
    assert ((y.double() - expected.double()).abs() <= half_tolerance(x, layer.weight.detach(), dtype)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "k", "n"), [(1, 32, 96), (2, 512, 256)])
def test_summed_products_is_the_rounded_product(dtype, rows: int, k: int, n: int) -> None:
    """The written-out form a compiled step uses: the same roundings as HalfLinear, within the same bound."""
    generator = torch.Generator().manual_seed(rows * k + 1)
    weight = (torch.randn(n, k, generator=generator) * 0.1).to(dtype)
    bias = torch.randn(n, generator=generator).to(dtype)
    x = torch.randn(rows, 1, k, generator=generator)
    y = summed_products(x, weight, bias)
    assert y.shape == (rows, 1, n) and y.dtype == torch.float32
    expected = reference_half_linear(x, weight.float(), bias.float(), dtype)
    assert ((y.double() - expected.double()).abs() <= half_tolerance(x, weight.float(), dtype)).all()
    # The input's rounding took effect: summing the unrounded input would land elsewhere.
    unrounded = (x.double() @ weight.double().T + bias.double()).to(dtype).float()
    assert not torch.equal(y, unrounded)


def test_half_linears_replaces_every_linear_but_the_skipped() -> None:
    module = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2)))
    assert half_linears(module, torch.bfloat16, skip=("2.1",)) == 2
    kinds = [type(m).__name__ for m in (module[0], module[2][0], module[2][1])]
    assert kinds == ["HalfLinear", "HalfLinear", "Linear"] and module[0].weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        HalfLinear(4, 4, dtype=torch.float64)


class ReferenceHalf(nn.Module):
    """A twin's layer: :func:`reference_half_linear` of the float32 layer's weights (no HalfLinear)."""

    def __init__(self, layer: nn.Linear, dtype) -> None:
        super().__init__()
        self.layer, self.dtype = layer, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_half_linear(x, self.layer.weight, self.layer.bias, self.dtype)


def reference_twin(model: nn.Module, dtype) -> nn.Module:
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        steps_use_it = name.startswith("decoder.") and not name.endswith("cross_attn.kv") or name == "head"
        if type(module) is nn.Linear and steps_use_it:
            parent, _, attribute = name.rpartition(".")
            setattr(twin.get_submodule(parent) if parent else twin, attribute, ReferenceHalf(module, dtype))
    return twin


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_decoder_computes_the_rounded_products_and_nothing_else(dtype: str) -> None:
    model = tiny_model(seed=3)
    twin = reference_twin(model, getattr(torch, dtype))
    audio = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(3))
    tokens = torch.randint(0, 257, (2, model.config.seq_len), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        memory = model.encode(audio)
        float_logits = model.decode(tokens, model.project_memory(memory))
        model.half_decoder(dtype)
        assert model.decoder_dtype == dtype
        assert torch.equal(model.encode(audio), memory)  # the encoder stays in float32
        logits = model.decode(tokens, model.project_memory(memory))
        expected = twin.decode(tokens, twin.project_memory(twin.encode(audio)))
    layers = [m for m in model.modules() if isinstance(m, HalfLinear)]
    assert len(layers) == 6 * model.config.n_decoder_layers + 1  # 7 per block but cross_attn.kv; the head
    # The twin rounds the same values; what differs is the kernel's summation (K <= 64 terms per product,
    # <= half a unit in the last place of the dtype at each rounding). Through 2 blocks and the head,
    # logits of size ~1 move by a few units of the dtype's last place: 8 eps bounds it with room.
    eps = torch.finfo(getattr(torch, dtype)).eps
    torch.testing.assert_close(logits, expected, rtol=8 * eps, atol=8 * eps)
    assert (logits - float_logits).abs().max() > eps / 16  # the dtype took effect on the logits


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_decoder_samples_the_same_tokens_cached_and_uncached(dtype: str) -> None:
    model = tiny_model(seed=5).half_decoder(dtype)
    audio = torch.randn(3, 6, 10, generator=torch.Generator().manual_seed(5))
    for config in (SamplingConfig(temperature=1.0, seed=9), SamplingConfig(guidance_scale=2.0, seed=1)):
        assert torch.equal(generate(model, audio, config), generate(model, audio, config, use_cache=False))


def test_half_decode_step_equals_the_module_path() -> None:
    model = tiny_model(seed=6).half_decoder()
    tokens = torch.randint(0, 257, (2, 20), generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        memory_kv = model.project_memory(model.encode(torch.randn(2, 6, 10)))
        fast, generic = model.allocate_caches(2), model.allocate_caches(2)
        for t in range(tokens.shape[1]):
            step = model.decode_step(tokens[:, t : t + 1], memory_kv, fast)
            reference = model.train().decode(tokens[:, t : t + 1], memory_kv, generic)[:, -1]
            model.eval()
            assert torch.equal(step, reference), t


def test_half_decoder_refuses_other_dtypes_a_second_dtype_and_saving(tmp_path) -> None:
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        tiny_model().half_decoder("float64")
    model = tiny_model().half_decoder("float16")
    assert model.half_decoder("float16") is model  # the same dtype again: nothing to do
    with pytest.raises(ValueError, match="already float16"):
        model.half_decoder("bfloat16")
    with pytest.raises(ValueError, match="float16 decoder cannot be saved"):
        model.save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_the_cli_choices_are_the_dtypes_the_model_takes() -> None:
    from sound2image.devices import DECODER_DTYPES  # torch-free, for the CLI's start-up
    from sound2image.modules.half import HALF_DTYPES

    assert ("float32", *HALF_DTYPES) == DECODER_DTYPES
