"""analysis.ratings against known truth: order recovery, bootstrap interval coverage, bad input.

The simulations draw ties the simple way (with probability t a tie, otherwise a BT winner), so the
expected score of a battle is t/2 + (1 − t)·σ(d), not σ(d): counting ties as half wins fits a BT model
that is flatter than the one that generated the data. The "truth" the half-win fit estimates is the
population fit — the BT ratings whose win probabilities best match those expected scores under the
same pair design — which ``implied_half_win_ratings`` computes without sampling.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.stats import spearmanr

from analysis.ratings import (
    Aggregated,
    aggregate,
    bootstrap_bt,
    fit_bt,
    ratings_table,
    validate_battles,
)

LN10 = math.log(10.0)


def expected_outcomes(
    r: np.ndarray, tie_prob: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j and their (a wins, b wins, tie) probabilities under BT with random ties."""
    a, b = np.triu_indices(r.size, 1)
    p = 1.0 / (1.0 + 10.0 ** ((r[b] - r[a]) / 400.0))
    return (
        a,
        b,
        np.stack([(1 - tie_prob) * p, (1 - tie_prob) * (1 - p), np.full(p.size, tie_prob)], axis=1),
        p,
    )


def implied_half_win_ratings(r: np.ndarray, tie_prob: float) -> np.ndarray:
    """Population BT fit (ties = half wins, every pair equally often) of data simulated with ``r``; mean 0."""
    a, b, probs, _ = expected_outcomes(r, tie_prob)
    score = probs[:, 0] + 0.5 * probs[:, 2]

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        z = LN10 * (x[a] - x[b])
        value = float(np.sum(score * np.logaddexp(0.0, -z) + (1 - score) * np.logaddexp(0.0, z)))
        g = LN10 * (1.0 / (1.0 + np.exp(-z)) - score)
        grad = np.bincount(a, weights=g, minlength=r.size) - np.bincount(b, weights=g, minlength=r.size)
        return value, grad

    res = minimize(loss, np.zeros(r.size), jac=True, method="BFGS", options={"gtol": 1e-12})
    x = 400.0 * res.x
    return x - x.mean()


def simulate_battles(
    ratings: dict[str, float], n: int, rng: np.random.Generator, tie_prob: float
) -> pd.DataFrame:
    """Battle rows between uniformly drawn pairs; a tie with probability tie_prob, else a BT winner."""
    names = list(ratings)
    r = np.array([ratings[m] for m in names])
    ia = rng.integers(0, len(names), size=n)
    ib = (ia + rng.integers(1, len(names), size=n)) % len(names)
    p = 1.0 / (1.0 + 10.0 ** ((r[ib] - r[ia]) / 400.0))
    tie = rng.random(n) < tie_prob
    a_wins = rng.random(n) < p
    winner = np.where(
        tie, np.where(rng.random(n) < 0.5, "tie", "tie (bothbad)"), np.where(a_wins, "model_a", "model_b")
    )
    names_arr = np.array(names, dtype=object)
    return pd.DataFrame({"model_a": names_arr[ia], "model_b": names_arr[ib], "winner": winner})


def test_fit_bt_recovers_order_of_20_models_from_50k_battles_with_30pct_ties() -> None:
    rng = np.random.default_rng(20240607)
    names = [f"model-{i:02d}" for i in range(20)]
    truth = dict(zip(names, np.linspace(1300.0, 730.0, 20) + rng.normal(0.0, 5.0, 20), strict=True))
    df = simulate_battles(truth, 50_000, rng, tie_prob=0.3)
    assert (df["winner"].isin(["tie", "tie (bothbad)"])).mean() == pytest.approx(0.3, abs=0.01)

    fitted = fit_bt(aggregate(validate_battles(df)))
    true_s = pd.Series(truth)[fitted.index]
    assert spearmanr(fitted.to_numpy(), true_s.to_numpy()).statistic >= 0.99

    # half-win BT is flatter than the generating model by a known amount: compare with the implied truth
    implied = pd.Series(implied_half_win_ratings(np.array(list(truth.values())), 0.3), index=names)
    centred = fitted - fitted.mean()
    assert (centred - implied[centred.index]).abs().max() < 20.0
    assert centred.std() < 0.85 * (true_s - true_s.mean()).std()


def test_bootstrap_intervals_of_a_rating_difference_cover_the_truth() -> None:
    """95% percentile intervals of x_i − x_j from ``bootstrap_bt`` cover the implied truth 92–98% of the time.

    100 simulated data sets of 6,000 battles among 12 models, 50 bootstrap rounds each. Each data set
    checks six disjoint model pairs, whose differences are nearly uncorrelated: 600 coverage trials for
    the run time of 100. The percentiles use numpy's "weibull" rule (order statistic q·(B+1)), whose
    end points cut off 2.5% of the bootstrap distribution on average for any number of rounds B; the
    default "linear" rule is pulled inwards by about 1/B per side, so 50 rounds would cover only ~91%.
    """
    r = np.linspace(1180.0, 840.0, 12)
    models = [f"m{i:02d}" for i in range(r.size)]
    pairs = [(i, i + 1) for i in range(0, r.size, 2)]
    tie_prob, n_battles, reps, rounds = 0.3, 6_000, 100, 50
    a, b, probs, _ = expected_outcomes(r, tie_prob)
    k = a.size
    cell_p = (probs / k).T.ravel()  # order: all a-wins, all b-wins, all ties (as in Aggregated)
    implied = implied_half_win_ratings(r, tie_prob)
    true_diff = np.array([implied[hi] - implied[lo] for hi, lo in pairs])
    raw_diff = np.array([r[hi] - r[lo] for hi, lo in pairs])
    assert (true_diff < 0.8 * raw_diff).all()  # the half-win scale is flatter

    rng = np.random.default_rng(7)
    covered = np.zeros((reps, len(pairs)), dtype=bool)
    estimates = np.zeros((reps, len(pairs)))
    for rep in range(reps):
        cells = rng.multinomial(n_battles, cell_p)  # i.i.d. battles: uniform pair, then outcome
        agg = Aggregated(models, a, b, cells[:k], cells[k : 2 * k], cells[2 * k :])
        point = fit_bt(agg)
        boot = bootstrap_bt(agg, rounds, rng)
        for j, (hi, lo) in enumerate(pairs):
            diff = (boot[models[hi]] - boot[models[lo]]).to_numpy()
            low, high = np.quantile(diff, [0.025, 0.975], method="weibull")
            covered[rep, j] = low <= true_diff[j] <= high
            estimates[rep, j] = point[models[hi]] - point[models[lo]]

    coverage = covered.mean()
    assert 0.92 <= coverage <= 0.98, f"coverage {coverage:.3f}"
    # the point estimates centre on the implied truth, far from the generating model's differences
    spread = estimates.std(axis=0) / math.sqrt(reps)
    bias = estimates.mean(axis=0) - true_diff
    assert (np.abs(bias) < 4 * spread + 0.5).all(), (bias, spread)
    assert (np.abs(estimates.mean(axis=0) - raw_diff) > 5 * spread).all()


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def frame(rows: list[tuple[str, str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def test_unknown_winner_values_are_named() -> None:
    df = frame(
        [
            ("a", "b", "model_a"),
            ("a", "b", "A>B"),
            ("a", "b", "model_c"),
            ("b", "a", "A>B"),
            ("a", "b", "Tie"),
        ]
    )
    for call in (validate_battles, ratings_table):
        with pytest.raises(ValueError) as info:
            call(df)
        msg = str(info.value)
        assert "4 row(s)" in msg
        assert "'A>B' (2)" in msg and "'model_c' (1)" in msg and "'Tie' (1)" in msg
        assert "model_a, model_b, tie, tie (bothbad)" in msg  # what would have been accepted


def test_missing_winner_value_is_reported() -> None:
    with pytest.raises(ValueError, match="unknown winner value"):
        validate_battles(frame([("a", "b", "model_a"), ("a", "b", None)]))


def test_anchor_on_a_model_without_battles_is_an_error() -> None:
    df = frame([("a", "b", "model_a"), ("b", "c", "tie"), ("c", "a", "model_b")])
    agg = aggregate(validate_battles(df))
    with pytest.raises(ValueError, match=r"unknown anchor model 'ghost'; models with battles: a, b, c"):
        fit_bt(agg, anchor=("ghost", 1000.0))
    with pytest.raises(ValueError, match="unknown anchor model 'ghost'"):
        bootstrap_bt(agg, 5, np.random.default_rng(0), anchor=("ghost", 1000.0))
    for method in ("bt", "elo"):
        with pytest.raises(ValueError, match="unknown anchor model 'ghost'"):
            ratings_table(df, method=method, anchor=("ghost", 1000.0))


def test_disconnected_comparison_graph_names_the_groups() -> None:
    df = frame(
        [
            ("a", "b", "model_a"),
            ("b", "c", "tie"),
            ("x", "y", "model_b"),
            ("y", "x", "model_a"),
            ("p", "q", "tie (bothbad)"),
        ]
    )
    agg = aggregate(validate_battles(df))
    expected = r"disconnected into 3 groups.*\{a, b, c\}; \{p, q\}; \{x, y\}"
    with pytest.raises(ValueError, match=expected):
        fit_bt(agg)
    with pytest.raises(ValueError, match=expected):
        bootstrap_bt(agg, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=expected):
        ratings_table(df, bootstrap=5, rng=np.random.default_rng(0))
