"""FID and KID of precomputed features, computed by torchmetrics.

Both take feature vectors (from :mod:`sound2image.metrics.features`), never images, and hand them to
torchmetrics' :class:`~torchmetrics.image.fid.FrechetInceptionDistance` and
:class:`~torchmetrics.image.kid.KernelInceptionDistance` through a feature module that passes its input
through (torchmetrics accepts any ``nn.Module`` with a ``num_features`` attribute as the extractor).
Everything is float64.

- FID (Heusel et al. 2017): ||μ_r − μ_f||² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½), with unbiased (N − 1)
  covariances. Biased for small N, and it needs N well above the feature dimension to be stable; state N.
- KID (Bińkowski et al. 2018): the unbiased estimate of MMD² with the cubic polynomial kernel
  k(x, y) = (x·y / d + 1)³, averaged over random subsets; unbiased, so better for small sets.

:func:`project_to_span` makes both cheap for N ≪ d without changing them: all the quantities above
depend on the features only through inner products and sums, which an orthonormal change of basis onto
the span of the features preserves exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from sound2image.errors import UsageError


class _PassThrough(nn.Module):
    """The identity as a torchmetrics feature extractor: the "images" are already feature vectors."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def _features(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().double()
    if x.ndim != 2:
        raise UsageError(
            f"{name} must be 2-D (N, D) features, got shape {tuple(x.shape)}", parameters=(name,)
        )
    if x.shape[0] < 2:
        raise UsageError(f"{name} must have at least 2 rows, got {x.shape[0]}", parameters=(name,))
    if not torch.isfinite(x).all():
        raise UsageError(f"{name} features must be finite", parameters=(name,))
    return x


def _pair(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    r, f = _features(real, "real"), _features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise UsageError(
            f"real features have {r.shape[1]} dimensions and fake {f.shape[1]}", parameters=("real", "fake")
        )
    return r, f


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets, by torchmetrics (float64).

    Args:
        real: (N, D) features of real images, N >= 2.
        fake: (M, D) features of generated images, M >= 2.

    Returns:
        The Fréchet distance (>= 0 up to rounding; biased upward for small N and M).

    Raises:
        UsageError: shapes that do not match, fewer than 2 rows, non-finite values.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    r, f = _pair(real, fake)
    # sync_on_compute=False: the features given are all there is; torchmetrics would otherwise all-gather
    # them from every process whenever torch.distributed is initialised (an accelerate run scores on one).
    metric = FrechetInceptionDistance(feature=_PassThrough(r.shape[1]), sync_on_compute=False)
    metric = metric.set_dtype(torch.float64)
    metric.update(r, real=True)
    metric.update(f, real=False)
    return float(metric.compute())


def kernel_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
    gamma: float | None = None,
) -> float:
    """KID between two feature sets, by torchmetrics (float64): the mean of the unbiased MMD² estimate
    with the kernel (γ x·y + 1)³ over ``subsets`` random subsets of ``subset_size`` rows of each set.

    Args:
        real: (N, D) features, N >= 2.
        fake: (M, D) features, M >= 2.
        subsets: number of subsets (>= 1). When ``subset_size`` takes every row of both sets, all subsets
            are the same and one is computed.
        subset_size: rows per subset, 2 <= size <= min(N, M); default min(N, M, 1000).
        seed: seeds torch's generator for the subsets (the caller's random state is left as it was).
        gamma: kernel scale; default 1 / D (torchmetrics' and the paper's). Pass the original 1 / D when the
            features were projected with :func:`project_to_span`.

    Returns:
        KID (unbiased: may be slightly negative when the two sets come from one distribution).

    Raises:
        UsageError: shapes that do not match, fewer than 2 rows, a setting out of range.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    r, f = _pair(real, fake)
    if not (isinstance(subsets, (int, np.integer)) and subsets >= 1):
        raise UsageError(f"subsets must be an integer >= 1, got {subsets!r}", parameters=("subsets",))
    most = min(r.shape[0], f.shape[0])
    size = min(most, 1000) if subset_size is None else subset_size
    if not (isinstance(size, (int, np.integer)) and 2 <= size <= most):
        raise UsageError(
            f"subset_size must be an integer in [2, {most}] (the smaller set's size), got {subset_size!r}",
            parameters=("subset_size",),
        )
    if gamma is not None and not (np.isfinite(gamma) and gamma > 0):
        raise UsageError(f"gamma must be finite and > 0, got {gamma!r}", parameters=("gamma",))
    if size == r.shape[0] == f.shape[0]:
        subsets = 1  # every subset is the whole of both sets
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=_PassThrough(r.shape[1]),
            subsets=int(subsets),
            subset_size=int(size),
            gamma=None if gamma is None else float(gamma),
            sync_on_compute=False,  # as in frechet_distance: no all-gather across processes
        ).set_dtype(torch.float64)
    metric.update(r, real=True)
    metric.update(f, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, _ = metric.compute()
    return float(mean)


def project_to_span(*sets: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, ...]:
    """Express feature sets in an orthonormal basis of the span of all their rows (float64).

    With R rows in all and D > R dimensions, the result has R (or fewer) columns. Inner products,
    norms, means and covariances' traces and products are unchanged (the map is an isometry on a
    subspace that holds every row), so FID and — with ``gamma=1/D`` of the original D — KID are
    unchanged for these sets and for any resample of their rows, and are much cheaper to compute.
    When R >= D the sets are returned as float64 unchanged.

    Args:
        *sets: (N_k, D) arrays with the same D.

    Returns:
        One (N_k, r) float64 tensor per set.
    """
    tensors = [
        torch.as_tensor(np.asarray(s) if not isinstance(s, torch.Tensor) else s).detach().cpu().double()
        for s in sets
    ]
    stacked = torch.cat(tensors)
    if stacked.shape[0] >= stacked.shape[1]:
        return tuple(tensors)
    _, singular, vh = torch.linalg.svd(stacked, full_matrices=False)
    keep = (
        singular > singular.max() * stacked.shape[1] * torch.finfo(torch.float64).eps
        if singular.numel()
        else singular > 0
    )
    basis = vh[keep].T  # (D, r), orthonormal columns spanning the rows
    return tuple(t @ basis for t in tensors)
