"""Percentile-bootstrap intervals over clips.

Every evaluation number is a statistic of a sample of clips (audio recordings): each clip may carry
several generated images (one per seed), and the clips are the resampling units, so all seeds of a drawn
clip go together. :func:`bootstrap` draws ``resamples`` index vectors of ``n`` clips with replacement
from a seeded :class:`numpy.random.Generator`, evaluates the statistic on each, and returns the
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those values as the interval (the percentile
bootstrap; Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from sound2image.errors import UsageError

#: The most index entries (resamples × n) drawn at once, to bound memory for large n.
_CHUNK_ENTRIES = 1 << 20


def _round6(value: float) -> float:
    """``value`` rounded to 6 significant digits (non-finite values unchanged)."""
    return float(f"{value:.6g}") if math.isfinite(value) else float(value)


@dataclass(frozen=True)
class Estimate:
    """A statistic with its percentile-bootstrap interval.

    Attributes:
        value: the statistic on the full sample.
        low, high: the interval's ends (``level`` coverage, 95 % by default).
        n: the number of clips (resampling units).
    """

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """``{"value", "low", "high", "n"}`` with the floats rounded to 6 significant digits."""
        return {
            "value": _round6(self.value),
            "low": _round6(self.low),
            "high": _round6(self.high),
            "n": int(self.n),
        }


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's index draws: chunks of shape (rows, n) of ints in [0, n), ``resamples`` rows in all.

    The chunking depends only on ``n`` and ``resamples``, so the same (n, resamples, seed) always gives
    the same indices.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ENTRIES // max(n, 1))
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    vectorized: bool = False,
) -> Estimate:
    """Percentile-bootstrap interval of ``statistic`` over ``n`` clips.

    Args:
        statistic: ``statistic(indices) -> value`` where ``indices`` is an int array (n,) of clip indices
            drawn with replacement; ``statistic(np.arange(n))`` is the point value. With
            ``vectorized=True`` it must also accept a (rows, n) array and return (rows,) values (one per
            row), which is much faster for sums and means (e.g. ``lambda i: x[i].mean(axis=-1)``).
        n: number of clips (>= 1).
        resamples: number of bootstrap resamples (>= 1).
        seed: seed of the :func:`numpy.random.default_rng` that draws the indices.
        level: interval coverage, in (0, 1).
        vectorized: see ``statistic``.

    Returns:
        :class:`Estimate` (``value`` from all clips; ``low``/``high`` the quantiles of the resampled values,
        NaN when any resampled value is NaN).

    Raises:
        UsageError: ``n``, ``resamples`` or ``level`` out of range.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise UsageError(f"n must be an integer >= 1, got {n!r}", parameters=("n",))
    if not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise UsageError(f"resamples must be an integer >= 1, got {resamples!r}", parameters=("resamples",))
    if not (isinstance(level, (int, float)) and 0.0 < float(level) < 1.0):
        raise UsageError(f"level must be in (0, 1), got {level!r}", parameters=("level",))
    value = float(statistic(np.arange(n)))
    draws: list[np.ndarray] = []
    for chunk in resample_indices(int(n), int(resamples), seed):
        if vectorized:
            draws.append(np.asarray(statistic(chunk), dtype=np.float64).reshape(len(chunk)))
        else:
            draws.append(np.array([float(statistic(row)) for row in chunk], dtype=np.float64))
    values = np.concatenate(draws)
    tail = (1.0 - float(level)) / 2.0
    if np.isnan(values).any():
        low = high = math.nan
    else:
        low, high = (float(q) for q in np.quantile(values, [tail, 1.0 - tail]))
    return Estimate(value=value, low=low, high=high, n=int(n))
