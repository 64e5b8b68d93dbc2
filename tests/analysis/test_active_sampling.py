"""Active pair sampling weights (``analysis.active_sampling``): the Chatbot Arena §5 rule, and a short
simulation through the real BT fit showing that it spends votes on the close pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.active_sampling import active_pair_probabilities, pair_uncertainty_weights
from analysis.aggregation import Aggregated
from analysis.bt_fit import fit_bt


def expected_weight(diff: float, n: float) -> float:
    """The paper's formula written out by hand for one pair."""
    p = 1.0 / (1.0 + 10.0 ** (-diff / 400.0))
    var = p * (1.0 - p)
    return math.sqrt(var / n) - math.sqrt(var / (n + 1.0))


def test_weights_match_the_formula_and_cover_every_pair_once() -> None:
    ratings = {"c": 1100.0, "a": 1000.0, "b": 950.0}
    counts = {("a", "b"): 10.0, ("c", "a"): 4.0}
    w = pair_uncertainty_weights(ratings, counts)
    assert set(w) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert w[("a", "b")] == pytest.approx(expected_weight(50.0, 11.0), rel=1e-12)
    assert w[("a", "c")] == pytest.approx(expected_weight(100.0, 5.0), rel=1e-12)
    assert w[("b", "c")] == pytest.approx(expected_weight(150.0, 1.0), rel=1e-12)  # absent: n = prior
    assert all(v > 0 for v in w.values())


def test_closer_pairs_weigh_more_at_equal_counts() -> None:
    ratings = {"top": 1200.0, "near": 1190.0, "mid": 1050.0, "low": 700.0}
    w = pair_uncertainty_weights(ratings, {})
    assert w[("near", "top")] > w[("mid", "top")] > w[("low", "top")]
    # a tie in rating gives the largest possible weight: sqrt(1/4)·(1 − 1/sqrt(2)) at n = 1
    tied = pair_uncertainty_weights({"x": 1000.0, "y": 1000.0}, {})
    assert tied[("x", "y")] == pytest.approx(0.5 * (1.0 - 1.0 / math.sqrt(2.0)))


def test_fewer_battles_weigh_more_at_equal_ratings() -> None:
    ratings = {"a": 1000.0, "b": 1000.0, "c": 1000.0}
    w = pair_uncertainty_weights(ratings, {("a", "b"): 1000.0, ("a", "c"): 10.0})
    assert w[("b", "c")] > w[("a", "c")] > w[("a", "b")] > 0.0


def test_key_order_and_duplicates_add_up() -> None:
    ratings = {"a": 1000.0, "b": 1040.0}
    forward = pair_uncertainty_weights(ratings, {("a", "b"): 7.0})
    backward = pair_uncertainty_weights(ratings, {("b", "a"): 7.0})
    split = pair_uncertainty_weights(ratings, {("a", "b"): 3.0, ("b", "a"): 4.0})
    assert forward == backward == split
    assert list(forward) == [("a", "b")]
    # symmetric in the ratings: swapping which model is stronger changes nothing
    swapped = pair_uncertainty_weights({"a": 1040.0, "b": 1000.0}, {("a", "b"): 7.0})
    assert swapped[("a", "b")] == pytest.approx(forward[("a", "b")], rel=1e-12)


def test_zero_counts_and_zero_prior_are_finite() -> None:
    ratings = {"a": 1000.0, "b": 1100.0, "c": 900.0}
    w = pair_uncertainty_weights(ratings, {("a", "b"): 0.0}, prior_count=0.0)
    # n = 0: the shrink from no information to one battle is sqrt(σ²) itself
    p = 1.0 / (1.0 + 10.0 ** (-100.0 / 400.0))
    assert w[("a", "b")] == pytest.approx(math.sqrt(p * (1.0 - p)))
    assert all(math.isfinite(v) and v > 0 for v in w.values())
    # unknown models and self-pairs in the counts are ignored
    assert pair_uncertainty_weights(ratings, {("a", "zz"): 5.0, ("a", "a"): 3.0}) == pair_uncertainty_weights(
        ratings, {}
    )
    assert pair_uncertainty_weights({"solo": 1000.0}, {}) == {}


def test_extreme_gaps_give_tiny_non_negative_weights() -> None:
    w = pair_uncertainty_weights({"a": 0.0, "b": 1e6}, {})
    assert w[("a", "b")] >= 0.0
    assert w[("a", "b")] < 1e-12


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        pair_uncertainty_weights({"a": 1.0, "b": 2.0}, {}, scale=0.0)
    with pytest.raises(ValueError):
        pair_uncertainty_weights({"a": 1.0, "b": 2.0}, {}, prior_count=-1.0)
    with pytest.raises(ValueError):
        active_pair_probabilities({"a": 1.0, "b": 2.0}, {}, uniform_floor=1.5)


def test_probabilities_sum_to_one_and_respect_the_floor() -> None:
    ratings = {f"m{i}": 1000.0 + 60.0 * i for i in range(6)}
    counts = {("m0", "m1"): 50.0, ("m4", "m5"): 500.0}
    probs = active_pair_probabilities(ratings, counts)
    assert len(probs) == 15
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    weights = pair_uncertainty_weights(ratings, counts)
    total = sum(weights.values())
    for pair, q in probs.items():
        assert q == pytest.approx(weights[pair] / total, rel=1e-12)
    floored = active_pair_probabilities(ratings, counts, uniform_floor=0.3)
    assert sum(floored.values()) == pytest.approx(1.0, abs=1e-12)
    assert min(floored.values()) >= 0.3 / 15 - 1e-15
    assert active_pair_probabilities(ratings, counts, uniform_floor=1.0) == pytest.approx(
        dict.fromkeys(probs, 1.0 / 15)
    )


def simulate_votes(
    truth: dict[str, float], policy: str, rng: np.random.Generator, *, batches: int = 12, batch: int = 250
) -> dict[tuple[str, str], int]:
    """Votes per pair after ``batches`` rounds; ``active`` refits BT (real fit) after every round."""
    names = sorted(truth)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    counts = dict.fromkeys(pairs, 0)
    cells = np.zeros((len(pairs), 3), dtype=np.int64)
    r = np.array([truth[a] - truth[b] for a, b in pairs])
    p_first = 1.0 / (1.0 + 10.0 ** (-r / 400.0))
    for _ in range(batches):
        if policy == "active" and cells.sum() > 0:
            m = len(names)
            keys = np.array([names.index(a) * m + names.index(b) for a, b in pairs], dtype=np.int64)
            fitted = fit_bt(Aggregated.from_cells(names, keys, cells))
            probs_map = active_pair_probabilities(fitted.to_dict(), counts, uniform_floor=0.05)
            probs = np.array([probs_map[pair] for pair in pairs])
        else:
            probs = np.full(len(pairs), 1.0 / len(pairs))
        drawn = np.bincount(rng.choice(len(pairs), size=batch, p=probs), minlength=len(pairs))
        wins = rng.binomial(drawn, p_first)
        cells[:, 0] += wins
        cells[:, 1] += drawn - wins
        for pair, n in zip(pairs, drawn, strict=True):
            counts[pair] += int(n)
    return counts


def test_active_sampling_concentrates_votes_on_close_pairs() -> None:
    truth = {"a1": 1300.0, "a2": 1285.0, "a3": 1270.0, "b1": 1000.0, "b2": 950.0, "c1": 650.0, "c2": 600.0}
    close = {("a1", "a2"), ("a1", "a3"), ("a2", "a3"), ("b1", "b2"), ("c1", "c2")}
    far = {("a1", "c2"), ("a1", "c1"), ("a2", "c2"), ("a2", "c1"), ("a3", "c2"), ("a3", "c1")}
    shares: dict[str, tuple[float, float]] = {}
    for policy in ("uniform", "active"):
        counts = simulate_votes(truth, policy, np.random.default_rng(7))
        total = sum(counts.values())
        shares[policy] = (
            sum(counts[p] for p in close) / total,
            sum(counts[p] for p in far) / total,
        )
    uniform_close, uniform_far = shares["uniform"]
    active_close, active_far = shares["active"]
    # uniform: 5 of 21 pairs are close, 6 are far. The §5 rule settles where a pair's battle count
    # grows like (p(1-p))^(1/3): 32 % of votes on the close pairs and 17 % on the far ones here.
    assert uniform_close == pytest.approx(5 / 21, abs=0.03)
    assert uniform_far == pytest.approx(6 / 21, abs=0.03)
    assert active_close > 5 / 21 + 0.03
    assert active_far < 6 / 21 - 0.04
