"""Consistency scores: AIS / IIS as win-rates, and top-k classifier hits (AIC, AIC@k).

AIS and IIS follow the protocol of REFERENCE.md §7: for the generated image x̂ᵢ of clip i, the win-rate
is the fraction of the other clips r ≠ i whose reference is farther from x̂ᵢ (in cosine) than clip i's
own reference:

- AIS (audio-image similarity): reference = the audio embedding A(aᵢ); win when
  cos(I(x̂ᵢ), A(aᵢ)) > cos(I(x̂ᵢ), A(a_r)).
- IIS (image-image similarity): reference = the real image's embedding I(xᵢ).

Ties count one half, so a score that carries no information gives 0.5 on average, and a perfect one 1.0.
A win-rate is comparable across embedding spaces (unlike a raw cosine) but only as good as the space:
when the image encoder also produced the conditioning vector, the score is circular (see the report).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sound2image.errors import UsageError


def _unit_rows(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().double()
    if x.ndim != 2:
        raise UsageError(f"{name} must be a 2-D (N, D) array, got shape {tuple(x.shape)}", parameters=(name,))
    if not torch.isfinite(x).all():
        raise UsageError(f"{name} must be finite", parameters=(name,))
    norms = x.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise UsageError(f"{name} has a zero row (no direction for a cosine)", parameters=(name,))
    return x / norms


def owned_win_rates(
    queries: torch.Tensor, targets: torch.Tensor, owners: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Win-rates of many queries per clip: query j belongs to clip ``owners[j]``.

    Args:
        queries: (M, D) embeddings (e.g. all seeds' generated images).
        targets: (N, D) reference embeddings, row i for clip i (N >= 2).
        owners: (M,) ints in [0, N).

    Returns:
        (M,) float64: for query j of clip i, the fraction of r ≠ i with cos(q_j, t_i) > cos(q_j, t_r),
        ties counting 1/2 (a multiple of 1 / (2 (N - 1))).

    Raises:
        UsageError: shapes that do not match, N < 2, owners out of range, zero or non-finite rows.
    """
    q = _unit_rows(queries, "queries")
    t = _unit_rows(targets, "targets")
    owners = np.asarray(owners, dtype=np.int64)
    n = t.shape[0]
    if q.shape[1] != t.shape[1]:
        raise UsageError(
            f"queries have {q.shape[1]} dimensions and targets {t.shape[1]}",
            parameters=("queries", "targets"),
        )
    if n < 2:
        raise UsageError(
            f"targets must have at least 2 rows (clips) for a win-rate, got {n}", parameters=("targets",)
        )
    if owners.shape != (q.shape[0],) or (owners.size and (owners.min() < 0 or owners.max() >= n)):
        raise UsageError(f"owners must be {q.shape[0]} clip indices in [0, {n})", parameters=("owners",))
    cosines = (q @ t.T).numpy()  # (M, N)
    own = cosines[np.arange(len(owners)), owners][:, None]  # (M, 1)
    wins = (own > cosines).sum(axis=1) + 0.5 * (
        (own == cosines).sum(axis=1) - 1
    )  # the own column ties itself
    return wins / (n - 1)


def win_rates(queries: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Per-clip win-rates (AIS, IIS): row i of ``queries`` and ``targets`` belong to clip i.

    Args:
        queries: (N, D) — AIS and IIS: embeddings of the generated images.
        targets: (N, D) — AIS: audio embeddings; IIS: embeddings of the real images. N >= 2.

    Returns:
        (N,) float64: per clip i, the fraction of j ≠ i with cos(q_i, t_i) > cos(q_i, t_j), ties 1/2.

    Raises:
        UsageError: shapes that differ, N < 2, zero or non-finite rows.
    """
    if len(queries) != len(targets):
        raise UsageError(
            f"queries and targets must have the same number of rows, got {len(queries)} and {len(targets)}",
            parameters=("queries", "targets"),
        )
    return owned_win_rates(queries, targets, np.arange(len(queries)))


def top_k_hits(scores: torch.Tensor | np.ndarray, labels: Sequence[int], k: int = 1) -> np.ndarray:
    """Whether each row's label is among its k highest scores (AIC = mean of k=1; AIC@k).

    Ties are broken toward the lower class index, as ``argmax`` does, so k=1 agrees with
    :meth:`~sound2image.metrics.ImageClassifier.predict`.

    Args:
        scores: (N, C) logits or probabilities.
        labels: N class indices in [0, C).
        k: 1 <= k <= C.

    Returns:
        (N,) bool.

    Raises:
        UsageError: shapes that do not match, k or a label out of range.
    """
    array = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if array.ndim != 2:
        raise UsageError(f"scores must be (N, C), got shape {array.shape}", parameters=("scores",))
    count, classes = array.shape
    label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if label_array.shape != (count,):
        raise UsageError(
            f"labels must hold {count} class indices, got {label_array.size}", parameters=("labels",)
        )
    if count and (label_array.min() < 0 or label_array.max() >= classes):
        raise UsageError(f"labels must be class indices in [0, {classes})", parameters=("labels",))
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= classes):
        raise UsageError(f"k must be an integer in [1, {classes}], got {k!r}", parameters=("k",))
    order = np.argsort(-array, axis=1, kind="stable")[:, :k]  # ties: lower index first, as argmax
    return (order == label_array[:, None]).any(axis=1)
