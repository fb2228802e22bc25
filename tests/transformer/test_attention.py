"""Local 1-D block attention: the mask, the blocked computation and the bounded KV cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sound2image.modules import KVCache, LocalSelfAttention, local_attention_mask
from sound2image.modules.attention import masked_attention, one_query_attention

pytestmark = pytest.mark.numeric


def reference_mask(seq_len: int, block: int | None, memory: int | None) -> torch.Tensor:
    """Parmar et al. 2018, built with plain loops: query i in the block [s, s + block) sees keys
    s - memory .. i (never a later one, never a negative position)."""
    mask = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    for i in range(seq_len):
        if block is None or memory is None:
            lowest = 0
        else:
            block_start = 0
            while block_start + block <= i:
                block_start += block
            lowest = max(0, block_start - memory)
        for j in range(lowest, i + 1):
            mask[i, j] = True
    return mask


@pytest.mark.parametrize(
    ("seq_len", "block", "memory"),
    [(16, 4, 4), (23, 4, 6), (64, 32, 64), (10, 3, 0), (9, 16, 16), (12, None, None), (1024, 32, 64)],
)
def test_mask_equals_loop_reference(seq_len: int, block: int | None, memory: int | None) -> None:
    assert torch.equal(local_attention_mask(seq_len, block, memory), reference_mask(seq_len, block, memory))


def test_mask_small_case_by_hand() -> None:
    # block 2, memory 1, length 5: rows list the keys each query sees.
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],  # block [0, 2): memory would start at -1
            [1, 1, 0, 0, 0],
            [0, 1, 1, 0, 0],  # block [2, 4): sees position 1 (memory) and itself
            [0, 1, 1, 1, 0],
            [0, 0, 0, 1, 1],  # block [4, 6): sees position 3 and itself
        ],
        dtype=torch.bool,
    )
    assert torch.equal(local_attention_mask(5, 2, 1), expected)


def _dense_reference(attention: LocalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The same layer computed as full attention with the reference mask."""
    batch, length, width = x.shape
    heads = attention.n_heads
    q, k, v = (
        t.view(batch, length, heads, width // heads).transpose(1, 2) for t in attention.qkv(x).split(width, 2)
    )
    mask = reference_mask(length, attention.block_size, attention.memory_length)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attention.proj(y.transpose(1, 2).reshape(batch, length, width))


@pytest.mark.parametrize(("length", "block", "memory"), [(23, 4, 6), (64, 8, 16), (7, 16, 16), (30, 5, 3)])
def test_blocked_attention_equals_dense_masked_attention(length: int, block: int, memory: int) -> None:
    attention = LocalSelfAttention(16, 2, block, memory).eval()
    x = torch.randn(3, length, 16)
    # Blocked and dense attention sum the same <= 64 keys in another order (SDPA may fuse): <= eps * 64 ~ 8e-6
    # relative worst case on outputs ~1 (6e-8 measured).
    torch.testing.assert_close(attention(x), _dense_reference(attention, x), atol=1e-5, rtol=1e-5)


def test_cached_steps_equal_full_forward_and_cache_stays_bounded() -> None:
    attention = LocalSelfAttention(16, 4, block_size=4, memory_length=8).eval()
    x = torch.randn(2, 50, 16)
    cache = KVCache.allocate(2, 4, attention.cache_window(50), 4)
    assert cache.window == 12  # block + memory, not the 50 positions
    before = cache.nbytes()
    steps = torch.cat([attention(x[:, t : t + 1], cache) for t in range(50)], dim=1)
    torch.testing.assert_close(steps, attention(x), atol=1e-5, rtol=1e-5)  # reordered sums, as above
    assert cache.nbytes() == before and cache.length == 50


def test_global_attention_cache_matches_causal_attention() -> None:
    attention = LocalSelfAttention(8, 2).eval()  # no block/memory: plain causal
    x = torch.randn(1, 9, 8)
    cache = KVCache.allocate(1, 2, attention.cache_window(9), 4)
    steps = torch.cat([attention(x[:, t : t + 1], cache) for t in range(9)], dim=1)
    torch.testing.assert_close(steps, _dense_reference(attention, x), atol=1e-5, rtol=1e-5)  # as above


@pytest.mark.parametrize("seed", range(4))
def test_masked_attention_equals_sdpa_with_the_same_mask(seed: int) -> None:
    """The written-out masked softmax against PyTorch's own SDPA (reference), random masks in which every
    query sees at least one key."""
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, n, 8, generator=generator) for n in (5, 7, 7))
    mask = torch.rand(5, 7, generator=generator) < 0.5
    mask[torch.arange(5), torch.randint(0, 7, (5,), generator=generator)] = True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # Written-out vs fused softmax over <= 7 keys of 8-wide dots: ~eps * 8 ~ 1e-6 relative (2.4e-7 measured).
    torch.testing.assert_close(masked_attention(q, k, v, mask), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_one_query_attention_equals_sdpa(seed: int) -> None:
    """The compiled step's written-out attention for one query against PyTorch's SDPA (reference), with
    an additive bias that hides a random set of keys (-inf; at least one visible) and without one."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, 1, 16, generator=generator)
    k, v = (torch.randn(2, 3, 40, 16, generator=generator) for _ in range(2))
    bias = torch.where(torch.rand(40, generator=generator) < 0.5, float("-inf"), 0.0)
    bias[torch.randint(0, 40, (1,), generator=generator)] = 0.0
    # 16-wide dots and a softmax over <= 40 keys in float32: ~eps * (16 + 40) ~ 7e-6 relative at most.
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None, :])
    torch.testing.assert_close(one_query_attention(q, k, v, bias), expected, rtol=2e-5, atol=2e-6)
    hidden = bias.isinf()  # the hidden keys' values must not leak in: changing them changes nothing
    v_changed = v.clone()
    v_changed[..., hidden, :] = 1e6
    assert torch.equal(one_query_attention(q, k, v_changed, bias), one_query_attention(q, k, v, bias))
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(one_query_attention(q, k, v), expected, rtol=2e-5, atol=2e-6)
