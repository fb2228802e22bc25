"""Building blocks: attention (local 1-D blocks, KV cache, cross-attention), position encodings, the
convolutional towers that pool a sound or an image into one vector, and half-precision linear layers."""

from sound2image.modules.attention import (
    CrossAttention,
    KVCache,
    LocalSelfAttention,
    SelfAttention,
    local_attention_mask,
)
from sound2image.modules.half import HalfLinear, half_linears, linear
from sound2image.modules.positional import sinusoidal_positions, sinusoidal_positions_2d
from sound2image.modules.towers import AudioTower, ImageTower

__all__ = [
    "AudioTower",
    "CrossAttention",
    "ImageTower",
    "HalfLinear",
    "KVCache",
    "LocalSelfAttention",
    "SelfAttention",
    "linear",
    "half_linears",
    "local_attention_mask",
    "sinusoidal_positions",
    "sinusoidal_positions_2d",
]
