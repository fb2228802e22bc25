"""The fast cached step (``decode_step``): the cache's visibility bias, equality with the other paths, and a
model saved before the change sampling the same tokens after it."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from sound2image.modules import KVCache, LocalSelfAttention
from sound2image.transformer import ImageTransformer, SamplingConfig, generate
from sound2image.transformer.sampling import choose_tokens
from tests.transformer.test_attention import reference_mask
from tests.transformer.tiny import tiny_model

pytestmark = pytest.mark.numeric
SAVED = Path(__file__).parent / "data" / "tiny_model_a217b33"

WINDOWS = [
    (50, 4, 8),  # the ring wraps many times
    (40, 8, 4),  # block longer than memory
    (20, 4, 0),  # no memory: each block sees only itself
    (16, 12, 8),  # block + memory > length: the window is the whole image, no slot is ever reused
    (9, 16, 16),  # one partial block
    (12, None, None),  # global causal attention
]


@pytest.mark.parametrize(("length", "block", "memory"), WINDOWS)
def test_cache_bias_shows_exactly_the_local_window(
    length: int, block: int | None, memory: int | None
) -> None:
    """After writing position p, the slots with bias 0 hold exactly the positions that query p may see
    (Parmar et al.'s window, built with loops in ``reference_mask``) and all others are -inf."""
    layer = LocalSelfAttention(8, 2, block, memory).eval()
    cache = KVCache.allocate(1, 2, layer.cache_window(length), 4)
    expected = reference_mask(length, block, memory)
    for position in range(length):
        marker = torch.full((1, 2, 1, 4), float(position))  # the key records its own position
        layer._step(marker, marker, marker, cache)
        visible = cache.bias == 0
        assert torch.equal(visible | torch.isneginf(cache.bias), torch.ones_like(visible))  # only 0 or -inf
        seen = sorted(int(p) for p in cache.keys[0, 0, visible, 0].tolist())
        assert seen == expected[position].nonzero().flatten().tolist(), position


MODELS = {
    "local": {},
    "global": {"query_block": None, "memory_length": None},
    "2d": {"pixel_positions": "2d"},
    "no-memory": {"query_block": 4, "memory_length": 0},
    "window-longer-than-image": {"image_size": 4, "query_block": 12, "memory_length": 8},
}


@pytest.mark.parametrize("overrides", MODELS.values(), ids=MODELS.keys())
def test_decode_step_equals_the_generic_cached_and_the_uncached_decoder(overrides: dict) -> None:
    model = tiny_model(seed=4, **overrides)
    length = model.config.seq_len
    tokens = torch.randint(0, 257, (2, length), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        memory_kv = model.project_memory(model.encode(torch.randn(2, 6, 10)))
        full = model.decode(tokens, memory_kv)  # (B, L, V): the whole sequence at once, no cache
        fast, generic = model.allocate_caches(2), model.allocate_caches(2)
        for t in range(length):
            step = model.decode_step(tokens[:, t : t + 1], memory_kv, fast)
            # In training mode decode() runs the modules (no fast path); all dropouts of this model are 0.
            reference = model.train().decode(tokens[:, t : t + 1], memory_kv, generic)[:, -1]
            model.eval()
            # decode_step runs the same operations as the module path: bit-identical.
            assert torch.equal(step, reference), t
            # The uncached path multiplies T rows at once (other GEMM blocking, other summation order over
            # <= 128-wide dots and <= 16 keys): float32 rounding, ~1e-7 relative measured; 1e-5 bounds it.
            torch.testing.assert_close(step, full[:, t], rtol=1e-5, atol=1e-5)
    assert fast[0].length == generic[0].length == length


def test_decode_takes_the_fast_step_for_one_cached_token_in_eval_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model()
    calls: list[int] = []
    real = model.decode_step
    monkeypatch.setattr(
        model, "decode_step", lambda tokens, *a: calls.append(tokens.shape[1]) or real(tokens, *a)
    )
    with torch.inference_mode():
        memory_kv = model.project_memory(model.encode(torch.randn(1, 6, 10)))
        caches = model.allocate_caches(1)
        assert model.decode(torch.tensor([[256]]), memory_kv, caches).shape == (1, 1, 256)
        model.decode(torch.tensor([[3, 4]]), memory_kv, caches)  # two tokens: the module path
        model.train().decode(torch.tensor([[5]]), memory_kv, caches)  # training: the module path
    assert calls == [1] and caches[0].length == 4


def test_window_longer_than_image_samples_the_same_tokens_cached_and_uncached() -> None:
    model = tiny_model(seed=5, image_size=4, query_block=12, memory_length=8)
    audio = torch.randn(3, 6, 10)
    config = SamplingConfig(temperature=1.0, seed=9)
    assert torch.equal(generate(model, audio, config), generate(model, audio, config, use_cache=False))


def test_choose_tokens_leaves_the_logits_unchanged() -> None:
    """The in-place cumsum/clamp work on new tensors, never on the caller's logits (which the guided path
    and the benchmark reuse)."""
    logits = torch.randn(4, 256, generator=torch.Generator().manual_seed(1))
    before = logits.clone()
    for config in (
        SamplingConfig(temperature=1.0),
        SamplingConfig(temperature=0.5, top_k=10),
        SamplingConfig(temperature=1.0, top_p=0.9),
    ):
        choose_tokens(logits, config, torch.Generator().manual_seed(0))
        assert torch.equal(logits, before)


def test_temperature_one_draws_by_the_inverse_cdf() -> None:
    """Temperature 1 skips the division (x / 1 is exact): the token is the first whose cumulative
    probability exceeds u · total, computed here in float64 with a loop."""
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    tokens = choose_tokens(logits, SamplingConfig(temperature=1.0), torch.Generator().manual_seed(7))
    uniforms = torch.rand(3, generator=torch.Generator().manual_seed(7)).double()
    probabilities = logits.double().softmax(dim=-1)
    for row in range(3):
        cumulative, target = 0.0, uniforms[row].item()
        drawn = None
        for candidate, p in enumerate(probabilities[row].tolist()):
            cumulative += p
            if cumulative >= target:
                drawn = candidate
                break
        assert tokens[row].item() == drawn


def test_state_dict_layout_is_unchanged() -> None:
    """Saved weights keep the pre-change names and shapes (the fused ``qkv`` was already one tensor)."""
    block = {k: tuple(v.shape) for k, v in tiny_model().decoder[0].state_dict().items()}
    assert block == {
        "ln_self.weight": (32,), "ln_self.bias": (32,),
        "self_attn.qkv.weight": (96, 32), "self_attn.qkv.bias": (96,),
        "self_attn.proj.weight": (32, 32), "self_attn.proj.bias": (32,),
        "ln_cross.weight": (32,), "ln_cross.bias": (32,),
        "cross_attn.q.weight": (32, 32), "cross_attn.q.bias": (32,),
        "cross_attn.kv.weight": (64, 32), "cross_attn.kv.bias": (64,),
        "cross_attn.proj.weight": (32, 32), "cross_attn.proj.bias": (32,),
        "ln_mlp.weight": (32,), "ln_mlp.bias": (32,),
        "mlp.fc.weight": (64, 32), "mlp.fc.bias": (64,),
        "mlp.proj.weight": (32, 64), "mlp.proj.bias": (32,),
    }  # fmt: skip


def test_model_saved_before_the_change_samples_the_same_tokens() -> None:
    """tests/transformer/data/tiny_model_a217b33 was saved, and sampled, by the code of commit a217b33
    (before decode_step): it loads, gives the same logits, and both paths draw the recorded tokens."""
    record = json.loads((SAVED / "expected_tokens.json").read_text())
    model = ImageTransformer.from_pretrained(SAVED)
    audio = torch.tensor(record["audio"])
    with torch.inference_mode():
        logits = model.decode(
            torch.tensor([[256, 5, 200, 17]]), model.project_memory(model.encode(audio[:1]))
        )
    # Same weights, same operations on the uncached path: only library-version rounding, ~1e-7.
    torch.testing.assert_close(logits[0, 3, :8], torch.tensor(record["logits_row0_pos3_first8"]))
    for name in ("plain", "greedy", "top_k_guided"):
        config = SamplingConfig(**record[name]["config"])
        expected = torch.tensor(record[name]["tokens"])
        assert torch.equal(generate(model, audio, config), expected), name
        assert torch.equal(generate(model, audio, config, use_cache=False), expected), name


def _has_cxx_compiler() -> bool:
    import shutil

    return any(shutil.which(name) for name in ("c++", "g++", "clang++"))


@pytest.mark.slow
@pytest.mark.skipif(not _has_cxx_compiler(), reason="torch.compile's CPU backend needs a C++ compiler")
@pytest.mark.skipif(
    os.environ.get("ATEN_CPU_CAPABILITY") == "default",
    # Measured in CI: inductor's generated C++ uses at::vec, which torch's headers leave undeclared under
    # ATEN_CPU_CAPABILITY=default; the step then warns and samples eagerly (the fallback test covers that).
    reason="inductor cannot compile its vectorized kernels under ATEN_CPU_CAPABILITY=default",
)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_compiled_step_samples_the_uncached_tokens_from_one_graph(dtype: str) -> None:
    """compile_decode_step: every position's logits as the eager step's, the uncached path's tokens, and
    one compiled graph for all 64 positions and both callers (the position and slot are tensors: an
    integer there would recompile at every step until dynamo gave up and ran eagerly). Compiling takes
    ~10-30 s: one model, the local window (the ring buffer wraps). A float16 decoder too: its compiled
    products are written out (test_a_traced_half_step_writes_its_products_out)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny_model(seed=4)
    if dtype != "float32":
        model.half_decoder(dtype)
    audio = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(3))
    config = SamplingConfig(temperature=1.0, seed=5)
    uncached = generate(model, audio, config, use_cache=False)
    tokens = torch.randint(0, 257, (2, model.config.seq_len), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        memory_kv = model.project_memory(model.encode(audio))
        eager_caches = model.allocate_caches(2)
        eager = [model.decode_step(tokens[:, t : t + 1], memory_kv, eager_caches) for t in range(64)]
    model.compile_decode_step()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to the eager step would warn
        caches = model.allocate_caches(2)
        for t in range(64):
            step = model.decode_step(tokens[:, t : t + 1], memory_kv, caches)
            # Fused kernels may sum in another order: float32 rounding, as the uncached path above. With
            # float16 products a sum may then round to the neighbouring float16 (2^-10 relative) in any
            # layer: a few of those ulps on these O(1) logits.
            tolerance = 1e-5 if dtype == "float32" else 4 * 2**-10
            torch.testing.assert_close(step, eager[t], rtol=tolerance, atol=tolerance)
        assert torch.equal(generate(model, audio, config), uncached)
    assert model._compiled_core is not None
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize(("dtype", "rows"), [("float16", 1), ("bfloat16", 2), ("float16", 3), ("float32", 1)])
def test_a_traced_half_step_writes_its_products_out(dtype: str, rows: int, monkeypatch) -> None:
    """Under torch.compile (traced here by dynamo with the eager backend: no C++ compiler needed) a half
    decoder's products of up to two rows go through summed_products, all but the MLP's second one (its
    input is GELU's); three rows, a float32 decoder and the eager step use the library's product. The
    attention of up to two rows (any dtype) goes through one_query_attention, SDPA otherwise."""
    import torch._dynamo

    from sound2image.modules import attention, half

    torch._dynamo.reset()
    model = tiny_model(seed=4)
    if dtype != "float32":
        model.half_decoder(dtype)
    written_out: list[tuple[int, ...]] = []
    real_summed_products = half.summed_products

    def counting(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        written_out.append(tuple(weight.shape))
        return real_summed_products(x, weight, bias)

    monkeypatch.setattr(half, "summed_products", counting)
    attended: list[int] = []
    real_attention = attention.one_query_attention

    def counting_attention(*args: torch.Tensor) -> torch.Tensor:
        attended.append(args[1].shape[2])  # how many keys: the ring buffer's window or the memory's length
        return real_attention(*args)

    monkeypatch.setattr(attention, "one_query_attention", counting_attention)
    tokens = torch.full((rows, 1), model.config.start_token)
    with torch.inference_mode():
        memory_kv = model.project_memory(model.encode(torch.randn(rows, 6, 10)))
        eager = model.decode_step(tokens, memory_kv, model.allocate_caches(rows))
        assert written_out == [] and attended == []  # the eager step: the library's product and SDPA
        model._compiled_core = torch.compile(model._decode_core, dynamic=False, backend="eager")
        traced = model.decode_step(tokens, memory_kv, model.allocate_caches(rows))
    c = model.config
    width, hidden = c.d_model, c.mlp_ratio * c.d_model
    per_layer = [(3 * width, width), (width, width), (width, width), (width, width), (hidden, width)]
    expected = per_layer * c.n_decoder_layers + [(c.pixel_levels, width)]
    assert written_out == (expected if dtype != "float32" and rows <= 2 else [])
    window = model.decoder[0].self_attn.cache_window(c.seq_len)
    assert attended == ([window, memory_kv[0][0].shape[2]] * c.n_decoder_layers if rows <= 2 else [])
    # The same roundings in another summation order: a few ulps of the products' dtype on these O(1)
    # logits (see the compiled test), float32's covering the attention's order too.
    tolerance = max(4 * torch.finfo(getattr(torch, dtype)).eps, 1e-5)
    torch.testing.assert_close(traced, eager, rtol=tolerance, atol=tolerance)


def test_a_compiled_step_that_cannot_compile_warns_once_and_samples_eagerly() -> None:
    model = tiny_model(seed=4)
    audio = torch.randn(1, 6, 10, generator=torch.Generator().manual_seed(3))
    config = SamplingConfig(temperature=1.0, seed=5)
    expected = generate(model, audio, config)
    calls: list[int] = []

    def no_compiler(*args: object) -> torch.Tensor:
        calls.append(1)
        lines = ["backend='inductor' raised:", "InvalidCxxCompiler: No working C++ compiler found", "", "g++"]
        raise RuntimeError("\n".join(lines))

    model._compiled_core = no_compiler
    with pytest.warns(UserWarning) as record:
        assert torch.equal(generate(model, audio, config), expected)
    assert len(record) == 1 and calls == [1] and model._compiled_core is None
    # one line, the error's first two: inductor's carry the whole compiler command and output after them
    assert str(record[0].message) == (
        "compiled decoding step unavailable, sampling eagerly: "
        "backend='inductor' raised: InvalidCxxCompiler: No working C++ compiler found"
    )
