"""Sinusoidal positions against the formula of Vaswani et al. (2017), evaluated by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sound2image.modules import sinusoidal_positions, sinusoidal_positions_2d

pytestmark = pytest.mark.numeric


def test_values_by_hand() -> None:
    table = sinusoidal_positions(50, 8)
    assert table.shape == (50, 8)
    # position 0: sin 0 = 0 on even columns, cos 0 = 1 on odd ones
    assert table[0].tolist() == [0.0, 1.0] * 4
    # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
    for pos, i in [(1, 0), (7, 1), (49, 3)]:
        angle = pos / 10000 ** (2 * i / 8)
        # Angles <= 1 here: the float32 angle and sin/cos (1-ulp vectorised) are each within ~1e-7.
        assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_odd_width_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(4, 7)


def test_2d_table_is_row_half_then_column_half() -> None:
    table = sinusoidal_positions_2d(4, 5, 8).reshape(4, 5, 8)
    rows, columns = sinusoidal_positions(4, 4), sinusoidal_positions(5, 4)
    for r, c in [(0, 0), (1, 3), (3, 4)]:
        assert torch.equal(table[r, c, :4], rows[r]) and torch.equal(table[r, c, 4:], columns[c])
    # the pixel above shares the column half exactly; its row half is one row earlier
    assert torch.equal(table[2, 3, 4:], table[1, 3, 4:])
    with pytest.raises(ValueError, match="divisible by 4"):
        sinusoidal_positions_2d(2, 2, 6)
