"""Sandwich (robust) intervals: against a per-battle brute force, by coverage, and against the bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.ratings import aggregate, bootstrap_bt, fit_bt, summarize, validate_battles
from analysis.sandwich import (
    bt_covariance,
    normal_quantile,
    sandwich_bt,
    sandwich_ties,
    tie_covariance,
)
from analysis.ties import bootstrap_ties, fit_ties

ALPHA = 400.0 / math.log(10.0)  # rating points per natural-log unit


def _small_battles() -> pd.DataFrame:
    """Five models, 90 battles with every outcome kind, seeded."""
    rng = np.random.default_rng(7)
    names = ["a", "b", "c", "d", "e"]
    rows = []
    for _ in range(90):
        i, j = rng.choice(5, 2, replace=False)
        winner = rng.choice(["model_a", "model_b", "tie", "tie (bothbad)"], p=[0.4, 0.3, 0.2, 0.1])
        rows.append({"model_a": names[i], "model_b": names[j], "winner": str(winner)})
    return pd.DataFrame(rows)


def _rows(df: pd.DataFrame, models: list[str]) -> list[tuple[int, int, str]]:
    """Every battle as (model_a index, model_b index, outcome: 'a' | 'b' | 't'), as shown."""
    index = {m: k for k, m in enumerate(models)}
    kind = {"model_a": "a", "model_b": "b", "tie": "t", "tie (bothbad)": "t"}
    return [(index[r.model_a], index[r.model_b], kind[r.winner]) for r in df.itertuples()]


def _brute_sandwich(grads: list[np.ndarray], hessians: list[np.ndarray], reg: np.ndarray) -> np.ndarray:
    """H⁻¹ G H⁻¹ from explicit per-battle gradients and Hessians (plain loops, no shortcuts)."""
    k = grads[0].size
    g = np.zeros((k, k))
    h = np.zeros((k, k))
    for grad, hess in zip(grads, hessians, strict=True):
        g += np.outer(grad, grad)
        h += hess
    h += reg
    h_inv = np.linalg.inv(h)
    return h_inv @ g @ h_inv


def test_bt_covariance_equals_the_per_battle_brute_force() -> None:
    df = _small_battles()
    agg = aggregate(validate_battles(df))
    m = len(agg.models)
    u = np.random.default_rng(1).normal(0.0, 0.5, m)  # any point: the definition, not the optimum
    grads, hessians = [], []
    for a, b, outcome in _rows(df, agg.models):
        o = {"a": 1.0, "b": 0.0, "t": 0.5}[outcome]  # arena-rank: a tie is an outcome of 0.5
        p = 1.0 / (1.0 + math.exp(-(u[a] - u[b])))
        x = np.zeros(m)
        x[a], x[b] = 1.0, -1.0
        grads.append((o - p) * x)
        hessians.append(p * (1.0 - p) * np.outer(x, x))
    expected = _brute_sandwich(grads, hessians, 1e-5 * len(df) * np.eye(m))
    got = bt_covariance(agg, u)
    assert np.allclose(got, expected, rtol=1e-7, atol=1e-8)  # H is near-singular along 1: rounding
    assert np.allclose(got.sum(axis=1), 0.0, atol=1e-8)  # covariance of mean-centred strengths


#: arena-rank 0.1.1 on ``_small_battles()`` (``PairDataset.from_pandas`` + ``BradleyTerry``,
#: ``compute_ratings_and_cis(ci_method="sandwich")``), run in its own environment: ratings and variances.
ARENA_RANK_RATINGS = [
    949.4717542021453,
    1011.1378650682035,
    1000.7352495733006,
    1031.5817248610756,
    1007.073406295275,
]
ARENA_RANK_VARIANCES = [
    1893.0810860465597,
    1803.8701982975897,
    1857.70181602532,
    1443.7693737954148,
    1188.8420883186616,
]


def test_matches_arena_rank() -> None:
    agg = aggregate(validate_battles(_small_battles()))
    assert agg.models == ["a", "b", "c", "d", "e"]
    ratings = np.array(ARENA_RANK_RATINGS)
    # the same covariance at the same point: the definitions agree
    cov = bt_covariance(agg, (ratings - 1000.0) / ALPHA)
    assert np.allclose(ALPHA**2 * np.diag(cov), ARENA_RANK_VARIANCES, rtol=1e-7)
    # and at our own fit (L-BFGS + Newton, tiny L2 penalty), within a thousandth of a point
    s = sandwich_bt(agg)
    assert np.allclose(s.ratings.reindex(agg.models), ratings, atol=1e-3)
    assert np.allclose(s.se.reindex(agg.models) ** 2, ARENA_RANK_VARIANCES, rtol=1e-6)


def _neg_log_p(model: str, d: float, s: float, outcome: str) -> float:
    """-log P(outcome) of one battle, straight from the model's probabilities (no algebra reused)."""
    pi_a, pi_b = math.exp(d / 2.0), math.exp(-d / 2.0)
    if model == "davidson":
        nu = math.exp(s)
        denom = pi_a + pi_b + nu * math.sqrt(pi_a * pi_b)
        p = {"a": pi_a / denom, "b": pi_b / denom, "t": nu * math.sqrt(pi_a * pi_b) / denom}[outcome]
    else:
        theta = math.exp(s)
        pa = pi_a / (pi_a + theta * pi_b)
        pb = pi_b / (pi_b + theta * pi_a)
        p = {"a": pa, "b": pb, "t": 1.0 - pa - pb}[outcome]
    return -math.log(p)


def _numeric_derivatives(f, x: np.ndarray, step: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Central finite-difference gradient and Hessian of ``f`` at ``x``."""
    k = x.size
    grad = np.zeros(k)
    hess = np.zeros((k, k))
    eye = np.eye(k) * step
    for i in range(k):
        grad[i] = (f(x + eye[i]) - f(x - eye[i])) / (2 * step)
        for j in range(k):
            hess[i, j] = (
                f(x + eye[i] + eye[j])
                - f(x + eye[i] - eye[j])
                - f(x - eye[i] + eye[j])
                + f(x - eye[i] - eye[j])
            ) / (4 * step * step)
    return grad, hess


@pytest.mark.parametrize("model", ["davidson", "rao-kupper"])
def test_tie_covariance_equals_the_per_battle_brute_force(model: str) -> None:
    df = _small_battles()
    agg = aggregate(validate_battles(df))
    m = len(agg.models)
    u = np.random.default_rng(2).normal(0.0, 0.4, m)
    s = 0.3 if model == "davidson" else 0.45  # log ν, log θ (θ > 1)
    grads, hessians = [], []
    for a, b, outcome in _rows(df, agg.models):
        # the battle's -log P as a function of (u_a, u_b, s), differentiated numerically
        def f(x: np.ndarray, outcome: str = outcome) -> float:
            return _neg_log_p(model, x[0] - x[1], x[2], outcome)

        g3, h3 = _numeric_derivatives(f, np.array([u[a], u[b], s]))
        where = [a, b, m]
        grad = np.zeros(m + 1)
        hess = np.zeros((m + 1, m + 1))
        grad[where] = g3
        hess[np.ix_(where, where)] = h3
        grads.append(grad)
        hessians.append(hess)
    # a larger ridge than the default 1e-5 per battle: H is near-singular along (1, 0), which would
    # blow the finite differences' rounding up to 1e-6 (the default is checked for BT above)
    reg = np.zeros((m + 1, m + 1))
    reg[:m, :m] = 1e-2 * len(df) * np.eye(m)
    expected = _brute_sandwich(grads, hessians, reg)
    got = tie_covariance(agg, u, s, model=model, hessian_reg=1e-2)
    assert got.shape == (m + 1, m + 1)
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-8)


def test_intervals_scale_quantile_and_anchor() -> None:
    df = _small_battles()
    agg = aggregate(validate_battles(df))
    s = sandwich_bt(agg)
    point = fit_bt(agg)
    pd.testing.assert_series_equal(s.ratings, point)
    assert s.z == pytest.approx(1.959963984540054)
    assert normal_quantile(0.9) == pytest.approx(1.6448536269514722)
    u = (point.reindex(agg.models).to_numpy() - 1000.0) / ALPHA
    cov = bt_covariance(agg, u)
    se = pd.Series(ALPHA * np.sqrt(np.diag(cov)), index=agg.models)
    assert np.allclose(s.se.reindex(agg.models), se)
    assert np.allclose(s.upper - s.ratings, s.ratings - s.lower)
    # anchored: the interval of the difference to the anchor; the anchor's own has width 0
    anchored = sandwich_bt(agg, anchor=("c", 1200.0))
    assert anchored.ratings["c"] == pytest.approx(1200.0) and anchored.se["c"] == pytest.approx(0.0, abs=1e-9)
    i = agg.models.index("c")
    diff_se = ALPHA * np.sqrt(np.diag(cov) + cov[i, i] - 2 * cov[:, i])
    assert np.allclose(anchored.se.reindex(agg.models), diff_se)
    with pytest.raises(ValueError, match="between 0 and 1"):
        normal_quantile(1.5)


def test_tie_intervals_bracket_the_tie_parameter() -> None:
    df = _small_battles()
    agg = aggregate(validate_battles(df))
    for model in ("davidson", "rao-kupper"):
        intervals, fit, (lo, hi) = sandwich_ties(agg, model=model)
        assert lo < fit.tie_param < hi
        assert math.log(hi) - math.log(fit.tie_param) == pytest.approx(math.log(fit.tie_param) - math.log(lo))
        pd.testing.assert_series_equal(intervals.ratings, fit_ties(agg, model=model).ratings)
        assert (intervals.se > 0).all()
    decisive = df[~df["winner"].str.startswith("tie")]
    intervals, fit, (lo, hi) = sandwich_ties(aggregate(validate_battles(decisive)), model="davidson")
    assert lo == hi == fit.tie_param == 0.0 and (intervals.se > 0).all()


def test_coverage_is_about_95_percent(simulator) -> None:
    truth = {"p": 1150.0, "q": 1080.0, "r": 1020.0, "s": 990.0, "t": 930.0, "u": 830.0}
    centred = pd.Series(truth) - np.mean(list(truth.values())) + 1000.0
    hits = total = 0
    for seed in range(250):
        df = simulator(truth, 1500, np.random.default_rng(seed))
        s = sandwich_bt(aggregate(validate_battles(df)))
        inside = (s.lower <= centred.reindex(s.ratings.index)) & (centred.reindex(s.ratings.index) <= s.upper)
        hits += int(inside.sum())
        total += len(inside)
    assert 0.93 <= hits / total <= 0.97, hits / total


def test_agrees_with_the_bootstrap_on_a_large_set(simulator) -> None:
    names = [f"m{i:02d}" for i in range(12)]
    truth = dict(zip(names, np.linspace(1250.0, 800.0, len(names)), strict=True))
    df = simulator(truth, 200_000, np.random.default_rng(11))
    agg = aggregate(validate_battles(df))
    s = sandwich_bt(agg)
    boot = bootstrap_bt(agg, 500, np.random.default_rng(0))
    table = summarize(fit_bt(agg), boot, agg.num_battles()).set_index("model")
    half_boot = (table["ci_upper"] - table["ci_lower"]) / 2.0
    half_sandwich = (s.upper - s.lower) / 2.0
    assert half_sandwich.min() > 2.0  # intervals of a few points, compared to a fraction of a point
    assert (half_sandwich - half_boot.reindex(half_sandwich.index)).abs().max() < 0.6
    # Davidson: the bootstrap refits each round, so fewer rounds and a looser band
    small = aggregate(validate_battles(simulator(truth, 30_000, np.random.default_rng(12))))
    intervals, _, (lo, hi) = sandwich_ties(small, model="davidson")
    rows, params = bootstrap_ties(small, 120, np.random.default_rng(1), model="davidson")
    q = rows.quantile([0.025, 0.975])
    half_tie_boot = (q.iloc[1] - q.iloc[0]) / 2.0
    half_tie = (intervals.upper - intervals.lower) / 2.0
    assert ((half_tie - half_tie_boot.reindex(half_tie.index)).abs() / half_tie).max() < 0.25
    p_lo, p_hi = np.quantile(params, [0.025, 0.975])
    assert abs((hi - lo) - (p_hi - p_lo)) / (hi - lo) < 0.25
