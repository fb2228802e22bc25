"""Multi-head attention: local 1-D block self-attention with a bounded KV cache, and cross-attention.

Local 1-D attention follows the Image Transformer (Parmar et al. 2018, section 3.2): the flattened
image is split into *query blocks* of ``block_size`` positions; every query attends causally to its
own block and to the ``memory_length`` positions that precede the block. A query at position ``i``
in the block starting at ``s = (i // block_size) * block_size`` may therefore see key ``j`` iff
``s - memory_length <= j <= i``.

Because no query ever looks further back than ``memory_length + block_size - 1`` positions, the
incremental-decoding cache only needs a ring buffer of ``memory_length + block_size`` slots: its
memory is bounded by the window, not by the sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sound2image.modules.half import linear, writes_out


def local_attention_mask(
    seq_len: int,
    block_size: int | None,
    memory_length: int | None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean ``(seq_len, seq_len)`` mask, ``True`` where query ``i`` may attend to key ``j``.

    ``block_size=None`` or ``memory_length=None`` gives plain causal (global) attention.
    """
    i = torch.arange(seq_len, device=device)[:, None]  # (T, 1) query positions
    j = torch.arange(seq_len, device=device)[None, :]  # (1, T) key positions
    causal = j <= i
    if block_size is None or memory_length is None:
        return causal
    block_start = (i // block_size) * block_size
    return causal & (j >= block_start - memory_length)


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout: float = 0.0
) -> torch.Tensor:
    """``softmax(q kᵀ / √d, masked) v`` for (..., Lq, d) queries and (..., Lk, d) keys/values.

    ``mask`` (broadcast to (..., Lq, Lk)) is True where a query may see a key; every query must see at
    least one. Written out rather than ``F.scaled_dot_product_attention(attn_mask=mask)``: with a mask,
    SDPA on a CPU takes a generic path that also scans for fully masked rows, and the local-attention
    layer's forward + backward went from 71 to 41 ms (batch 16, 32×32 image, 2 cores).
    """
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    return biased_attention(q, k, v, bias, dropout)


def biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout: float = 0.0
) -> torch.Tensor:
    """``softmax(q kᵀ / √d + bias) v`` for (..., Lq, d) queries, (..., Lk, d) keys/values and an additive
    ``bias`` broadcast to (..., Lq, Lk) (0 where a key is visible, -inf where not).

    The blocked training/uncached path's formula (:func:`masked_attention`); the one-token cached step
    gives the same bias to SDPA instead (one call, see ``LocalSelfAttention._step``).
    """
    scores = q @ k.transpose(-1, -2)  # (..., Lq, Lk)
    if not scores.requires_grad:
        scores = scores.mul_(q.shape[-1] ** -0.5).add_(bias)  # in place: same rounding, no new buffers
    else:
        scores = scores * q.shape[-1] ** -0.5 + bias
    weights = scores.float().softmax(dim=-1).to(v.dtype)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    return weights @ v  # (..., Lq, d)


def one_query_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(q kᵀ / √d + bias) v`` for ONE query per row: ``q`` (..., 1, d), ``k``/``v`` (..., L, d),
    ``bias`` (L,) or None -> (..., 1, d).

    What a compiled sampling step uses instead of ``F.scaled_dot_product_attention``: written as a product
    and a sum, inductor turns each of the two products into one fused, vectorised loop over the keys or
    values, where SDPA is a library call it cannot fuse. With float16 decoder weights the paper-size step
    samples 1.26x faster this way on a 2-core AVX-512 CPU (bench/results/bench_kv_cache.txt); it is used
    for up to ``half.WRITTEN_OUT_ROWS`` rows (batch 16: the compiled step was 3 % slower with it). Eagerly it
    would materialise (..., L, d) products: the eager step keeps SDPA. The same arithmetic as SDPA up to
    float32 summation order.
    """
    scores = (q * k).sum(-1) * q.shape[-1] ** -0.5  # (..., L)
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(dim=-1)
    return (weights[..., None] * v).sum(-2, keepdim=True)  # (..., 1, d)


def _split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    batch, length, width = x.shape
    return x.view(batch, length, n_heads, width // n_heads).transpose(1, 2)  # (B, H, T, hd)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, n_heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, n_heads * head_dim)  # (B, T, C)


@dataclass
class KVCache:
    """Ring buffer of keys and values for one self-attention layer.

    Position ``p`` lives in slot ``p % window``. ``bias[slot]`` is 0 where the slot holds a key that the
    next query may see and -inf where it may not (empty, or older than the query block's memory), so a
    step attends over the whole buffer with one additive bias and no per-step mask arithmetic.
    ``length`` is the number of positions decoded so far, i.e. the position of the next token.
    """

    keys: torch.Tensor  # (B, H, W, hd)
    values: torch.Tensor  # (B, H, W, hd)
    bias: torch.Tensor  # (W,) 0 or -inf, same dtype as keys
    length: int = 0

    @classmethod
    def allocate(
        cls,
        batch: int,
        n_heads: int,
        window: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        """An empty cache with ``window`` slots (every slot masked until written)."""
        shape = (batch, n_heads, window, head_dim)
        return cls(
            keys=torch.zeros(shape, device=device, dtype=dtype),
            values=torch.zeros(shape, device=device, dtype=dtype),
            bias=torch.full((window,), float("-inf"), device=device, dtype=dtype),
        )

    @property
    def window(self) -> int:
        return self.keys.shape[2]

    @property
    def state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(keys, values, bias)``: the tensors a decoding step reads and writes."""
        return self.keys, self.values, self.bias

    def nbytes(self) -> int:
        """Memory held by the buffers, in bytes."""
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.bias))

    def hide_before(self, lowest: int) -> None:
        """Mask every stored position below ``lowest`` (called when a query block starts).

        The buffer holds positions ``max(0, length - window) .. length - 1``; those below ``lowest``
        form one run of consecutive slots (wrapping at most once), set to -inf here.
        """
        first = max(0, self.length - self.window)
        if lowest <= first:
            return
        start = first % self.window
        end = start + (lowest - first)  # lowest - first <= window
        self.bias[start : min(end, self.window)] = float("-inf")
        if end > self.window:
            self.bias[: end - self.window] = float("-inf")


class LocalSelfAttention(nn.Module):
    """Causal multi-head self-attention restricted to the local 1-D block pattern.

    Args:
        d_model: model width.
        n_heads: number of heads (``d_model`` must be divisible by it).
        block_size: query-block length; ``None`` means global causal attention.
        memory_length: how many positions before its block a query block sees; ``None`` = global.
        dropout: dropout on the attention weights (training only).
        resid_dropout: dropout on the output projection (default: ``dropout``).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        block_size: int | None = None,
        memory_length: int | None = None,
        dropout: float = 0.0,
        resid_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.block_size = block_size
        self.memory_length = memory_length
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout if resid_dropout is None else resid_dropout)

    @property
    def is_local(self) -> bool:
        return self.block_size is not None and self.memory_length is not None

    def cache_window(self, max_length: int) -> int:
        """Slots a cache needs: the local window, or the whole sequence for global attention."""
        if self.is_local:
            return min(max_length, self.block_size + self.memory_length)
        return max_length

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``x`` (B, T, C) -> (B, T, C). With ``cache``, ``x`` holds only the next token(s) to decode."""
        q, k, v = self.qkv(x).split(x.shape[-1], dim=2)
        q, k, v = (_split_heads(t, self.n_heads) for t in (q, k, v))  # (B, H, T, hd) each
        if cache is not None and q.shape[2] == 1:  # the common case while sampling: one new token
            y = self._step(q, k, v, cache)
        elif cache is not None:
            steps = [
                self._step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], cache)
                for t in range(q.shape[2])
            ]
            y = torch.cat(steps, dim=2)  # (B, H, T, hd)
        elif self.is_local:
            y = self._blocked(q, k, v)
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.resid_dropout(self.proj(_merge_heads(y)))

    def _blocked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Local attention computed block by block: O(T · (block + memory)) instead of O(T²)."""
        batch, n_heads, length, head_dim = q.shape
        block, memory = self.block_size, self.memory_length
        n_blocks = -(-length // block)
        tail = n_blocks * block - length
        # Queries are padded at the end (their outputs are dropped); keys/values also get whole blocks
        # of zeros in front so every block can take a window [start - memory, start + block).
        q = F.pad(q, (0, 0, 0, tail)).view(batch, n_heads, n_blocks, block, head_dim)  # (B, H, nb, Lq, hd)
        k, v = self._windows(k, tail), self._windows(v, tail)  # (B, H, nb, Lm + Lq, hd) each
        row = torch.arange(block, device=q.device)[:, None]  # query offset r in the block
        col = torch.arange(memory + block, device=q.device)[None, :]  # key offset c in the window
        starts = torch.arange(n_blocks, device=q.device)[:, None, None] * block
        # key position = start - memory + c; it must be <= query position (start + r) and >= 0.
        mask = (col <= row + memory)[None] & (starts - memory + col[None] >= 0)  # (nb, Lq, Lm + Lq)
        p = self.dropout if self.training else 0.0
        y = masked_attention(q, k, v, mask, p)  # (B, H, nb, Lq, hd); every query sees itself
        return y.reshape(batch, n_heads, n_blocks * block, head_dim)[:, :, :length]

    def _windows(self, x: torch.Tensor, tail: int) -> torch.Tensor:
        """(B, H, T, hd) -> (B, H, nb, memory + block, hd): each block's keys with the ones before it.

        Built by concatenating shifted views of whole blocks; cheaper to differentiate than ``unfold``.
        """
        batch, n_heads, _, head_dim = x.shape
        block, memory = self.block_size, self.memory_length
        lead = -(-memory // block)  # whole blocks of history needed
        x = F.pad(x, (0, 0, lead * block, tail))
        blocks = x.view(batch, n_heads, -1, block, head_dim)  # (B, H, lead + nb, Lq, hd)
        n_blocks = blocks.shape[2] - lead
        windows = torch.cat([blocks[:, :, i : i + n_blocks] for i in range(lead + 1)], dim=3)
        return windows[:, :, :, lead * block - memory :]  # (B, H, nb, Lm + Lq, hd)

    def step(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor], slot: torch.Tensor
    ) -> torch.Tensor:
        """Decode one position: ``x`` (B, 1, C) is the newest token's input -> (B, 1, C).

        ``forward(x, cache)`` in eval mode (no dropout), with fewer operations: the fast path of sampling.
        ``state`` is the cache's ``(keys, values, bias)`` after :meth:`reserve` returned ``slot`` (a (1,)
        long tensor, not an int, so that a compiled step does not specialise on the position).
        """
        batch, _, width = x.shape
        qkv = linear(x, self.qkv).view(batch, 3, self.n_heads, 1, -1)
        y = self.attend(qkv[:, 0], qkv[:, 1], qkv[:, 2], *state, slot)  # (B, H, 1, hd)
        return linear(y.view(batch, 1, width), self.proj)

    def reserve(self, cache: KVCache) -> int:
        """The bookkeeping of decoding position ``cache.length``, before its key and value exist.

        At the start of a query block, hide the positions older than its memory; then mark the position's
        slot visible and advance ``cache.length``. Returns the slot, which :meth:`attend` fills.
        """
        position = cache.length
        if self.is_local and position % self.block_size == 0:  # a new query block: forget old memory
            cache.hide_before(position - self.memory_length)
        slot = position % cache.window
        cache.bias[slot] = 0.0
        cache.length += 1
        return slot

    @staticmethod
    def attend(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        bias: torch.Tensor,
        slot: torch.Tensor,
    ) -> torch.Tensor:
        """Store one position's key/value in the ring buffer at ``slot`` (1,), attend over the visible slots.

        ``q``, ``k``, ``v``: (B, H, 1, hd); ``keys``, ``values``: (B, H, W, hd), written in place;
        ``bias``: (W,) 0 or -inf -> (B, H, 1, hd).
        """
        keys.index_copy_(2, slot, k)
        values.index_copy_(2, slot, v)
        if writes_out(q.shape[0]):  # see one_query_attention
            return one_query_attention(q, keys, values, bias)
        # One fused call (one parallel region): with two threads on a busy CPU every parallel region can
        # wait for a descheduled thread, and the written-out form has three (two bmm and the softmax).
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=bias[None, :])

    def _step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Decode one position through ``cache``: :meth:`reserve`, then :meth:`attend`.

        ``q``, ``k``, ``v``: (B, H, 1, hd) -> (B, H, 1, hd).
        """
        slot = torch.tensor([self.reserve(cache)], device=cache.keys.device)
        return self.attend(q, k, v, cache.keys, cache.values, cache.bias, slot)


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder stream (queries) to the encoder memory (keys, values).

    The memory's keys and values do not change while decoding, so :meth:`project_memory` computes
    them once and :meth:`forward` accepts them precomputed.
    """

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, resid_dropout: float | None = None
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout if resid_dropout is None else resid_dropout)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``memory`` (B, S, C) -> keys, values (B, H, S, hd)."""
        k, v = self.kv(memory).split(memory.shape[-1], dim=2)
        # Contiguous copies, made once per image: every decoding step reads them (66 vs 48 µs per
        # one-query attention over 500 positions on 2 CPU threads).
        return _split_heads(k, self.n_heads).contiguous(), _split_heads(v, self.n_heads).contiguous()

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``x`` (B, T, C) attends to the projected memory -> (B, T, C)."""
        q = _split_heads(self.q(x), self.n_heads)  # (B, H, T, hd)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, *memory_kv, dropout_p=p)
        return self.resid_dropout(self.proj(_merge_heads(y)))

    def step(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One query per row, ``x`` (B, 1, C) -> (B, 1, C): ``forward`` in eval mode, fewer operations."""
        batch, _, width = x.shape
        q = linear(x, self.q).view(batch, self.n_heads, 1, -1)  # (B, H, 1, hd)
        if writes_out(batch):  # see one_query_attention
            y = one_query_attention(q, *memory_kv)
        else:
            y = F.scaled_dot_product_attention(q, *memory_kv)
        return linear(y.view(batch, 1, width), self.proj)


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention for the audio encoder."""

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, resid_dropout: float | None = None
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout if resid_dropout is None else resid_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, S, C) -> (B, S, C)."""
        q, k, v = (_split_heads(t, self.n_heads) for t in self.qkv(x).split(x.shape[-1], dim=2))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, S, hd)
        return self.resid_dropout(self.proj(_merge_heads(y)))
