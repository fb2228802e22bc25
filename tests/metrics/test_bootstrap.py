"""The percentile bootstrap over clips: coverage, the quantiles it reports, determinism, and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sound2image.errors import UsageError
from sound2image.metrics import Estimate, bootstrap, resample_indices


def test_interval_covers_the_true_mean_at_the_nominal_rate() -> None:
    """200 seeded datasets of n = 100 Bernoulli(0.3) draws; the 95 % interval of the mean should cover 0.3 in
    about 95 % of them. The count of covering datasets is Binomial(200, c) for the true coverage c; for
    c = 0.95 its sd is sqrt(200 · 0.95 · 0.05) = 3.08, so a 3-sd band is 190 ± 9.2 -> [181, 199]. (The
    percentile bootstrap of a mean undercovers by O(1/n), about a point at n = 100: still inside.)"""
    rng = np.random.default_rng(12345)
    p, n, datasets = 0.3, 100, 200
    covered = 0
    for index in range(datasets):
        x = (rng.random(n) < p).astype(np.float64)
        estimate = bootstrap(
            lambda i, x=x: x[i].mean(axis=-1), n, resamples=1000, seed=index, vectorized=True
        )
        assert estimate.value == pytest.approx(x.mean(), abs=1e-15)
        covered += estimate.low <= p <= estimate.high
    assert 181 <= covered <= 199, covered


def test_interval_is_the_quantiles_of_the_resampled_statistic() -> None:
    """An independent re-computation: draw the same indices with numpy, take the statistic, the 2.5 / 97.5 %
    quantiles (numpy's linear interpolation)."""
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    estimate = bootstrap(lambda i: float(np.median(x[i])), len(x), resamples=500, seed=7, level=0.9)
    draws = np.random.default_rng(7).integers(0, len(x), size=(500, len(x)))  # one chunk at this size
    values = np.median(x[draws], axis=1)
    assert estimate == Estimate(
        value=float(np.median(x)),
        low=float(np.quantile(values, 0.05)),
        high=float(np.quantile(values, 0.95)),
        n=8,
    )


def test_vectorized_and_row_by_row_give_the_same_interval_and_the_seed_decides() -> None:
    x = np.random.default_rng(0).normal(size=50)
    rowwise = bootstrap(lambda i: float(x[i].mean()), 50, resamples=300, seed=3)
    vector = bootstrap(lambda i: x[i].mean(axis=-1), 50, resamples=300, seed=3, vectorized=True)
    assert rowwise.low == pytest.approx(vector.low, rel=1e-12) and rowwise.high == pytest.approx(
        vector.high, rel=1e-12
    )
    other = bootstrap(lambda i: x[i].mean(axis=-1), 50, resamples=300, seed=4, vectorized=True)
    assert (other.low, other.high) != (vector.low, vector.high)


def test_the_draws_are_chunked_but_complete() -> None:
    """A large n is drawn in several chunks: resamples rows in all, each of n indices in [0, n)."""
    chunks = list(resample_indices(300_000, 9, seed=0))
    assert len(chunks) > 1  # 2**20 entries per chunk -> 3 rows of 300 000
    rows = np.concatenate(chunks)
    assert rows.shape == (9, 300_000) and rows.min() >= 0 and rows.max() < 300_000


def test_a_single_clip_gives_a_zero_width_interval_and_level_sets_the_width() -> None:
    assert bootstrap(lambda i: 2.5, 1, resamples=10) == Estimate(2.5, 2.5, 2.5, 1)
    x = np.arange(40, dtype=np.float64)
    wide = bootstrap(lambda i: x[i].mean(axis=-1), 40, resamples=400, level=0.99, vectorized=True)
    narrow = bootstrap(lambda i: x[i].mean(axis=-1), 40, resamples=400, level=0.5, vectorized=True)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_a_nan_statistic_gives_a_nan_interval() -> None:
    estimate = bootstrap(lambda i: math.nan if 0 not in i else 1.0, 5, resamples=50)
    assert estimate.value == 1.0 and math.isnan(estimate.low) and math.isnan(estimate.high)


def test_to_dict_rounds_to_six_significant_digits() -> None:
    assert Estimate(0.123456789, 1234567.89, -0.000123456789, 12).to_dict() == {
        "value": 0.123457,
        "low": 1234570.0,
        "high": -0.000123457,
        "n": 12,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, r"^n must be an integer >= 1, got 0$"),
        ({"n": 5, "resamples": 0}, r"^resamples must be an integer >= 1, got 0$"),
        ({"n": 5, "level": 1.0}, r"^level must be in \(0, 1\), got 1.0$"),
        ({"n": 5, "level": 0}, r"^level must be in \(0, 1\), got 0$"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_parameter(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        bootstrap(lambda i: 0.0, **kwargs)
    assert caught.value.parameters[0] in message
