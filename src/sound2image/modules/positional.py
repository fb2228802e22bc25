"""Sinusoidal position encodings (Vaswani et al. 2017, section 3.5)."""

from __future__ import annotations

import math

import torch


def sinusoidal_positions(length: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed table ``PE[pos, 2i] = sin(pos / base^(2i/dim))``, ``PE[pos, 2i+1] = cos(...)``.

    Args:
        length: number of positions.
        dim: model width; must be even so every frequency has a sine and a cosine.
        base: the longest wavelength is ``2π · base``.

    Returns:
        A float32 tensor of shape ``(length, dim)``.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even width, got {dim}")
    position = torch.arange(length, dtype=torch.float64)[:, None]  # (length, 1)
    inv_freq = torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    angles = position * inv_freq[None, :]  # (length, dim/2)
    table = torch.empty(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.float()


def sinusoidal_positions_2d(height: int, width: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Row-major ``(height · width, dim)`` table: the first ``dim/2`` channels encode the row, the others
    the column (the Image Transformer's 2-D encoding, Parmar et al. 2018, section 3.3).

    Pixel ``(r, c)`` and the one above it share the column half exactly, which makes "the pixel above"
    easy to find for attention; a 1-D table over the flattened index hides it at offset ``width``.
    """
    if dim % 4:
        raise ValueError(f"2-D sinusoidal positions need a width divisible by 4, got {dim}")
    rows = sinusoidal_positions(height, dim // 2, base)  # (H, dim/2)
    columns = sinusoidal_positions(width, dim // 2, base)  # (W, dim/2)
    table = torch.cat(
        [rows[:, None, :].expand(height, width, -1), columns[None, :, :].expand(height, width, -1)], dim=-1
    )  # (H, W, dim)
    return table.reshape(height * width, dim)
