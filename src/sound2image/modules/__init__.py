"""Building blocks: attention (local 1-D blocks, KV cache, cross-attention) and position encodings."""

from sound2image.modules.attention import (
    CrossAttention,
    KVCache,
    LocalSelfAttention,
    SelfAttention,
    local_attention_mask,
)
from sound2image.modules.positional import sinusoidal_positions, sinusoidal_positions_2d

__all__ = [
    "CrossAttention",
    "KVCache",
    "LocalSelfAttention",
    "SelfAttention",
    "local_attention_mask",
    "sinusoidal_positions",
    "sinusoidal_positions_2d",
]
