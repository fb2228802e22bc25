"""AIS / IIS win-rates and top-k hits, against hand-computed answers and the protocol's fixed points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sound2image.errors import UsageError
from sound2image.metrics import bootstrap, owned_win_rates, top_k_hits, win_rates


def test_win_rates_by_hand_with_ties() -> None:
    """clip 0: cos(q0, t0) = 1 ties t1 (1) and beats t2 (0): (0.5 + 1) / 2. clip 1: cos(q1, t1) = 0 ties
    t0 (0), loses to t2 (1): 0.5 / 2. clip 2: q2 is the diagonal, equally far from (1, 0) and (0, 1): two
    ties, 1 / 2."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert win_rates(q, t).tolist() == [0.75, 0.25, 0.5]


def test_a_perfect_pairing_wins_every_comparison() -> None:
    """Distinct directions, each query parallel to its own target (any positive scale): cos = 1 against
    cos < 1 for every other target, so every win-rate is exactly 1."""
    vectors = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    scales = torch.rand(50, 1, generator=torch.Generator().manual_seed(2)) + 0.5
    assert win_rates(vectors * scales, vectors).tolist() == [1.0] * 50


def test_a_shuffled_pairing_is_at_chance_inside_its_interval() -> None:
    """Targets paired by a derangement carry no information about the query's own clip. Exactly: the own
    target is then a random other clip's vector, so the expected win-rate is ((N - 2) / 2) / (N - 1) = 0.4975
    at N = 200 (the one target that is the query's own vector always beats it). The seeded 95 % interval of
    one shuffle holds 0.5 with probability about 0.95, so over 20 seeded shuffles at least 17 must hold it
    (Binomial(20, 0.95): P(<= 16) = 0.016). The mean of the 20 means is within 3 sd of 0.4975: a win-rate
    has sd <= 0.29 (uniform on [0, 1]), a mean of 200 clips 0.0205, of 20 such means 0.0046."""
    n, inside, means = 200, 0, []
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        queries = torch.randn(n, 16, generator=generator)
        targets = queries + 0.1 * torch.randn(n, 16, generator=generator)
        assert win_rates(queries, targets).mean() > 0.99  # the pairing itself is informative
        rng = np.random.default_rng(seed)
        while True:
            shuffle = rng.permutation(n)
            if (shuffle != np.arange(n)).all():
                break
        rates = win_rates(queries, targets[shuffle])
        estimate = bootstrap(
            lambda i, r=rates: r[i].mean(axis=-1), n, resamples=1000, seed=seed, vectorized=True
        )
        inside += estimate.low < 0.5 < estimate.high
        means.append(estimate.value)
    assert inside >= 17, inside
    assert abs(np.mean(means) - 0.4975) < 3 * 0.0046


def test_owned_win_rates_match_a_loop_over_clips() -> None:
    """Several queries (seeds) per clip: each query is compared against every other clip's target."""
    generator = torch.Generator().manual_seed(5)
    targets = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    owners = np.array([0, 0, 1, 2, 2, 2, 3, 5])  # clip 4 has no query
    queries = targets[owners] + torch.randn(8, 8, generator=generator, dtype=torch.float64)
    expected = []
    for query, own in zip(queries.numpy(), owners, strict=True):
        cos = [float(query @ t / (np.linalg.norm(query) * np.linalg.norm(t))) for t in targets.numpy()]
        others = [cos[r] for r in range(6) if r != own]
        expected.append(sum(1.0 if cos[own] > c else 0.5 if cos[own] == c else 0.0 for c in others) / 5)
    assert owned_win_rates(queries, targets, owners).tolist() == expected


@pytest.mark.parametrize(
    ("queries", "targets", "message"),
    [
        (torch.ones(3, 2), torch.ones(2, 2), "same number of rows"),
        (torch.ones(1, 2), torch.ones(1, 2), "at least 2 rows"),
        (torch.ones(3, 2), torch.ones(3, 4), "queries have 2 dimensions and targets 4"),
        (torch.zeros(3, 2), torch.ones(3, 2), "queries has a zero row"),
        (torch.full((3, 2), float("nan")), torch.ones(3, 2), "queries must be finite"),
        (torch.ones(3), torch.ones(3), r"queries must be a 2-D \(N, D\) array"),
    ],
)
def test_bad_embeddings_are_usage_errors(queries: torch.Tensor, targets: torch.Tensor, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        win_rates(queries, targets)


def test_top_k_hits_by_hand_ties_go_to_the_lower_index() -> None:
    scores = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.3], [0.9, 0.05, 0.05]])
    labels = [2, 1, 0]
    assert top_k_hits(scores, labels, 1).tolist() == [False, False, True]  # row 1: argmax of a tie is 0
    assert top_k_hits(scores, labels, 2).tolist() == [True, True, True]  # row 1: top 2 are 0 and 1
    assert top_k_hits(torch.tensor(scores), labels, 3).tolist() == [True, True, True]


def test_top_1_agrees_with_argmax_even_on_ties() -> None:
    scores = torch.randint(0, 3, (500, 4), generator=torch.Generator().manual_seed(6)).float()  # many ties
    labels = torch.randint(0, 4, (500,), generator=torch.Generator().manual_seed(7)).tolist()
    assert top_k_hits(scores, labels, 1).tolist() == (scores.argmax(dim=1) == torch.tensor(labels)).tolist()


@pytest.mark.parametrize(
    ("labels", "k", "message"),
    [
        ([0, 1], 0, r"^k must be an integer in \[1, 3\], got 0$"),
        ([0, 1], 4, r"^k must be an integer in \[1, 3\], got 4$"),
        ([0, 3], 1, r"^labels must be class indices in \[0, 3\)$"),
        ([0], 1, "^labels must hold 2 class indices, got 1$"),
    ],
)
def test_top_k_bad_arguments(labels: list[int], k: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        top_k_hits(np.zeros((2, 3)), labels, k)
