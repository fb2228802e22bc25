"""FID and KID (through torchmetrics) against closed forms for Gaussians and independent numpy estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sound2image.errors import UsageError
from sound2image.metrics import frechet_distance, kernel_distance, project_to_span

D = 4
SHIFT = np.array([1.0, 0.0, 0.0, 0.0])  # ||mu1 - mu2||^2 = s = 1


def gaussian(n: int, seed: int, mean: np.ndarray | float = 0.0, scale: float = 1.0) -> np.ndarray:
    return mean + scale * np.random.default_rng(seed).standard_normal((n, D))


def numpy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID from the sample statistics, written independently of torchmetrics: with centred data A (n1, D)
    and B (n2, D), S1 = AᵀA / (n1 - 1), S2 = BᵀB / (n2 - 1), and the nonzero eigenvalues of S1 S2 are those
    of (A Bᵀ)(A Bᵀ)ᵀ / ((n1 - 1)(n2 - 1)), so Tr (S1 S2)^½ is the nuclear norm of A Bᵀ over
    sqrt((n1 - 1)(n2 - 1)) — exact also when S1 and S2 are singular."""
    a, b = x - x.mean(0), y - y.mean(0)
    scale = np.sqrt((len(x) - 1) * (len(y) - 1))
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / scale
    trace = (a**2).sum() / (len(x) - 1) + (b**2).sum() / (len(y) - 1)
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + trace - 2 * cross)


def numpy_kid(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² estimate of Bińkowski et al. (2018), eq. 4 as in their code, with k(a, b) =
    (a·b / d + 1)³: within-set sums leave out i = j, the cross sum keeps all m² pairs."""
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / m**2)


def test_fid_of_a_mean_shift_is_the_squared_shift() -> None:
    """Population FID of N(0, I) and N(δ, I) is ||δ||² = 1 (equal covariances: trace term 0).

    Sampling error, n = 200 000 per set in d = 4: the sample means differ by m1 - m2 ~ N(δ, 2I/n), so
    ||m1 - m2||² has mean s + 2d/n and variance 2 tr(Σ²) + 4 δᵀΣδ = 8d/n² + 8s/n (Σ = 2I/n): sd ≈ 0.0063.
    The trace term is second order in the covariance errors E = S - I (Var E_ij = (1 + δ_ij)/(n - 1)):
    ≈ ¼ ||E1 - E2||²_F, mean d(d + 1) / (2(n - 1)) = 5e-5. So FID = 1 + 1e-4 ± 0.0063; allow 4 sd."""
    n = 200_000
    fid = frechet_distance(torch.from_numpy(gaussian(n, 0)), torch.from_numpy(gaussian(n, 1, SHIFT)))
    bias = 2 * D / n + D * (D + 1) / (2 * (n - 1))
    sd = np.sqrt(8 * D / n**2 + 8 * 1.0 / n)
    assert abs(fid - (1.0 + bias)) < 4 * sd, fid


def test_fid_of_a_scale_change_is_the_trace_term() -> None:
    """N(0, I) against N(0, 4I): FID = Tr(I + 4I - 2 (4I)^½) = d (1 - 2)² = 4.

    Sampling error: per eigen-direction FID ≈ (σ1 - σ2)², whose error is 2(σ2 - σ1)(ε2 - ε1) with the
    sample sd errors ε ~ σ / sqrt(2n): sd 2 sqrt((1 + 4) / (2n)) per direction, 4 sqrt(2.5 / n) = 0.014 over
    the d = 4 directions at n = 200 000 (plus ||m1 - m2||² ≈ 5d/n = 1e-4); allow 4 sd."""
    n = 200_000
    fid = frechet_distance(torch.from_numpy(gaussian(n, 2)), torch.from_numpy(gaussian(n, 3, scale=2.0)))
    assert abs(fid - 4.0) < 4 * 4 * np.sqrt(2.5 / n), fid


@pytest.mark.numeric
@pytest.mark.parametrize(("n_real", "n_fake", "dim"), [(300, 200, 6), (12, 30, 64)])
def test_fid_equals_an_independent_computation(n_real: int, n_fake: int, dim: int) -> None:
    """Full-rank and rank-deficient (N < D) covariances. Tolerance: float64 rounding of sums of n·d
    products and of an eigen/singular-value decomposition, ~1e-12 relative; for N < D torchmetrics takes
    square roots of eigenvalues that are 0 up to rounding (~1e-16 · ||S||), each adding up to ~1e-8 · ||S||^½:
    1e-6 relative covers the (D - N) of them."""
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((n_real, dim)) @ rng.standard_normal((dim, dim))
    y = rng.standard_normal((n_fake, dim)) + 0.3
    expected = numpy_fid(x, y)
    assert frechet_distance(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-6)
    projected = project_to_span(x, y)
    assert projected[0].shape[1] <= min(dim, n_real + n_fake)
    assert frechet_distance(*projected) == pytest.approx(expected, rel=1e-9)


def test_kid_of_a_mean_shift_matches_the_closed_form() -> None:
    """Closed form for X ~ N(a, I), Y ~ N(b, I) independent, Z = X·Y, k = (Z/d + 1)³: given Y, Z ~ N(a·Y,
    ||Y||²), and with Y = b + G: E Z = a·b, E Z² = (a·b)² + ||a||² + ||b||² + d,
    E Z³ = (a·b)³ + 3 (a·b)(||a||² + ||b||² + d + 2), so E k = 1 + 3 E Z/d + 3 E Z²/d² + E Z³/d³ =: K(a, b)
    and MMD² = K(0, 0) + K(δ, δ) - 2 K(0, δ) = 3s/d + 3s²/d² + 3s/d² + s³/d³ + 6s²/d³ + 6s/d³ = 1.328125
    (s = 1, d = 4).

    Sampling error: KID (all m rows, one subset) is unbiased; its first-order (Hoeffding) variance is
    (4/m)(Var f(X) + Var g(Y)) with f(x) = E k(x, X') - E k(x, Y), g(y) = E k(y, Y') - E k(X, y), and
    E k(x, W) for W ~ N(c, I) is (1 + x·c/d)³ + 3 (1 + x·c/d) ||x||²/d² (Z = x·W ~ N(x·c, ||x||²)). The
    variances are estimated on the sample itself; allow 4 sd (about 0.28 here: the cubic kernel is heavy)."""
    s, d, m = 1.0, D, 3000
    assert (
        3 * s / d + 3 * s**2 / d**2 + 3 * s / d**2 + s**3 / d**3 + 6 * s**2 / d**3 + 6 * s / d**3 == 1.328125
    )
    x, y = gaussian(m, 4), gaussian(m, 5, SHIFT)
    kid = kernel_distance(torch.from_numpy(x), torch.from_numpy(y), subset_size=m)

    def expected_kernel(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
        inner = 1 + points @ centre / d
        return inner**3 + 3 * inner * (points**2).sum(1) / d**2

    zero = np.zeros(d)
    f = expected_kernel(x, zero) - expected_kernel(x, SHIFT)
    g = expected_kernel(y, SHIFT) - expected_kernel(y, zero)
    sd = np.sqrt(4 / m * (f.var() + g.var()))
    assert abs(kid - 1.328125) < 4 * sd, (kid, sd)
    assert kernel_distance(torch.from_numpy(x), torch.from_numpy(gaussian(m, 6)), subset_size=m) < 4 * sd


@pytest.mark.numeric
def test_kid_equals_the_independent_unbiased_mmd_estimator() -> None:
    """All rows in one subset: torchmetrics' KID is exactly the paper's estimator; float64 sums of m² terms
    of size ~10: 1e-10 relative. Projecting onto the span (gamma = 1/D of the original D) changes nothing."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((40, 32)), rng.standard_normal((40, 32)) + 0.2
    expected = numpy_kid(x, y)
    assert kernel_distance(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-10)
    projected = project_to_span(x, y)
    assert kernel_distance(*projected, gamma=1 / 32) == pytest.approx(expected, rel=1e-10)


def test_kid_subsets_are_seeded_and_leave_the_global_stream_alone() -> None:
    rng = np.random.default_rng(8)
    x, y = torch.from_numpy(rng.standard_normal((30, 5))), torch.from_numpy(rng.standard_normal((60, 5)))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = kernel_distance(x, y, subsets=5, seed=1)
    assert torch.rand(1) == before  # the caller's random stream is where it was
    assert kernel_distance(x, y, subsets=5, seed=1) == first
    assert kernel_distance(x, y, subsets=5, seed=2) != first


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: frechet_distance(torch.ones(3, 2), torch.ones(3, 3)),
            "real features have 2 dimensions and fake 3",
        ),
        (
            lambda: frechet_distance(torch.ones(1, 2), torch.ones(3, 2)),
            "real must have at least 2 rows, got 1",
        ),
        (lambda: frechet_distance(torch.ones(3, 2), torch.ones(3)), r"fake must be 2-D \(N, D\) features"),
        (
            lambda: kernel_distance(torch.ones(3, 2), torch.ones(5, 2), subset_size=4),
            r"subset_size .* \[2, 3\]",
        ),
        (
            lambda: kernel_distance(torch.ones(3, 2), torch.ones(5, 2), subsets=0),
            "subsets must be an integer >= 1",
        ),
        (
            lambda: kernel_distance(torch.ones(3, 2), torch.ones(3, 2), gamma=-1.0),
            "gamma must be finite and > 0",
        ),
    ],
)
def test_bad_inputs_are_usage_errors(call, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        call()
