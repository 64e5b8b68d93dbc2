"""Tie-aware ratings (Davidson, Rao–Kupper): parameter recovery, agreement with plain BT, bootstrap, errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from analysis.ratings import SUMMARY_COLUMNS, Aggregated, aggregate, fit_bt, summarize, validate_battles
from analysis.ties import (
    TieFit,
    bootstrap_ties,
    fit_ties,
    tie_param_interval,
    tie_prob_equal,
    tie_ratings_table,
)

LN10 = math.log(10.0)


def simulate_ties(
    ratings: dict[str, float], n: int, rng: np.random.Generator, *, model: str, param: float
) -> pd.DataFrame:
    """Battles between random pairs drawn from a Davidson (param = ν) or Rao–Kupper (param = θ) model.

    Strength π = 10 ** (rating / 400); a third of the ties are "tie (bothbad)".
    """
    names = list(ratings)
    u = np.array([ratings[m] for m in names]) * LN10 / 400.0
    ia = rng.integers(0, len(names), size=n)
    ib = (ia + rng.integers(1, len(names), size=n)) % len(names)
    d = u[ia] - u[ib]
    if model == "davidson":
        den = np.exp(d / 2) + np.exp(-d / 2) + param
        pa, pt = np.exp(d / 2) / den, param / den
    else:
        pa = 1.0 / (1.0 + param * np.exp(-d))
        pb = 1.0 / (1.0 + param * np.exp(d))
        pt = 1.0 - pa - pb
    x = rng.random(n)
    winner = np.where(x < pa, "model_a", np.where(x < pa + pt, "tie", "model_b"))
    winner = np.where((winner == "tie") & (rng.random(n) < 1 / 3), "tie (bothbad)", winner)
    names_arr = np.array(names, dtype=object)
    return pd.DataFrame({"model_a": names_arr[ia], "model_b": names_arr[ib], "winner": winner})


def centred_error(fitted: pd.Series, truth: dict[str, float]) -> pd.Series:
    t = pd.Series(truth)[fitted.index]
    return (fitted - fitted.mean()) - (t - t.mean())


@pytest.fixture(scope="module")
def davidson_agg(true_ratings: dict[str, float]) -> Aggregated:
    """40k Davidson battles among the 8 test models, ν = 0.8."""
    df = simulate_ties(true_ratings, 40_000, np.random.default_rng(101), model="davidson", param=0.8)
    return aggregate(validate_battles(df))


@pytest.mark.parametrize(("model", "param", "tol"), [("davidson", 0.8, 0.05), ("rao-kupper", 1.6, 0.04)])
def test_recovers_simulated_parameters(
    true_ratings: dict[str, float], model: str, param: float, tol: float
) -> None:
    df = simulate_ties(true_ratings, 40_000, np.random.default_rng(202), model=model, param=param)
    fit = fit_ties(aggregate(validate_battles(df)), model=model)  # type: ignore[arg-type]
    assert isinstance(fit, TieFit) and fit.model == model
    assert fit.tie_param == pytest.approx(param, abs=tol)
    err = centred_error(fit.ratings, true_ratings)
    assert err.abs().max() < 25.0, err
    assert fit.ratings.mean() == pytest.approx(1000.0, abs=1e-9)
    assert list(fit.ratings.index) == list(fit.ratings.sort_values(ascending=False).index)
    assert fit.log_likelihood < 0


def test_no_ties_gives_plain_bt(simulator, true_ratings: dict[str, float]) -> None:
    df = simulator(true_ratings, 6_000, np.random.default_rng(3), tie_share=0.0)
    agg = aggregate(validate_battles(df))
    assert agg.ties.sum() == 0
    bt = fit_bt(agg)
    davidson = fit_ties(agg, model="davidson")
    rao_kupper = fit_ties(agg, model="rao-kupper")
    assert davidson.tie_param == 0.0 and davidson.tie_prob_equal == 0.0
    assert rao_kupper.tie_param == 1.0 and rao_kupper.tie_prob_equal == 0.0
    for fit in (davidson, rao_kupper):
        assert (fit.ratings - bt[fit.ratings.index]).abs().max() < 0.5
        assert list(fit.ratings.index) == list(bt.index)


def test_davidson_ratings_stay_close_to_half_win_bt_with_ties(davidson_agg: Aggregated) -> None:
    # Not the same model, but both rank by strength and share the scale of decisive outcomes' odds.
    bt = fit_bt(davidson_agg)
    fit = fit_ties(davidson_agg)
    assert list(fit.ratings.index) == list(bt.index)
    # ties pull the half-win BT ratings towards each other: Davidson's spread is larger
    assert fit.ratings.std() > bt.std()


@pytest.mark.parametrize("model", ["davidson", "rao-kupper"])
def test_matches_direct_maximisation_of_the_likelihood(model: str) -> None:
    """Our Newton fit equals a brute-force BFGS fit of the textbook formulas (no L2 penalty)."""
    rng = np.random.default_rng(5)
    m = 4
    a, b = np.triu_indices(m, 1)
    agg = Aggregated(
        models=["w", "x", "y", "z"],
        a=a.astype(np.int64),
        b=b.astype(np.int64),
        wins_a=rng.integers(5, 40, a.size),
        wins_b=rng.integers(5, 40, a.size),
        ties=rng.integers(1, 20, a.size),
    )

    def nll(q: np.ndarray) -> float:
        pi = np.exp(np.append(0.0, q[: m - 1]))
        pi_a, pi_b = pi[a], pi[b]
        if model == "davidson":
            nu = math.exp(q[-1])
            den = pi_a + pi_b + nu * np.sqrt(pi_a * pi_b)
            pw, pl, pt = pi_a / den, pi_b / den, nu * np.sqrt(pi_a * pi_b) / den
        else:
            th = 1.0 + math.exp(q[-1])
            pw, pl = pi_a / (pi_a + th * pi_b), pi_b / (pi_b + th * pi_a)
            pt = (th**2 - 1) * pi_a * pi_b / ((pi_a + th * pi_b) * (th * pi_a + pi_b))
        return -float(np.sum(agg.wins_a * np.log(pw) + agg.wins_b * np.log(pl) + agg.ties * np.log(pt)))

    res = minimize(nll, np.zeros(m), method="BFGS", options={"gtol": 1e-10})
    ref = np.append(0.0, res.x[: m - 1]) * 400.0 / LN10
    ref = ref - ref.mean() + 1000.0
    ref_param = math.exp(res.x[-1]) if model == "davidson" else 1.0 + math.exp(res.x[-1])

    fit = fit_ties(agg, model=model, l2_c=math.inf)  # type: ignore[arg-type]
    np.testing.assert_allclose(fit.ratings[agg.models].to_numpy(), ref, atol=1e-3)
    assert fit.tie_param == pytest.approx(ref_param, rel=1e-5)
    assert fit.log_likelihood == pytest.approx(-res.fun, rel=1e-9)
    # the tiny default penalty changes nothing visible
    assert (fit_ties(agg, model=model).ratings - fit.ratings).abs().max() < 0.01  # type: ignore[arg-type]


def test_tie_prob_equal() -> None:
    assert tie_prob_equal("davidson", 2.0) == pytest.approx(0.5)
    assert tie_prob_equal("rao-kupper", 3.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown tie model 'glicko'"):
        tie_prob_equal("glicko", 1.0)


def test_anchor_pins_model_and_only_shifts(davidson_agg: Aggregated) -> None:
    free = fit_ties(davidson_agg)
    pinned = fit_ties(davidson_agg, anchor=("m-echo", 1234.5))
    assert pinned.ratings["m-echo"] == pytest.approx(1234.5, abs=1e-9)
    diff = (pinned.ratings - free.ratings[pinned.ratings.index]).to_numpy()
    np.testing.assert_allclose(diff, diff[0], atol=1e-9)
    assert pinned.tie_param == pytest.approx(free.tie_param, rel=1e-12)


def test_never_losing_model_stays_finite(true_ratings: dict[str, float]) -> None:
    df = simulate_ties(true_ratings, 3_000, np.random.default_rng(8), model="davidson", param=0.5)
    champ = pd.DataFrame({"model_a": ["champ"] * 30, "model_b": ["m-alpha"] * 30, "winner": ["model_a"] * 30})
    agg = aggregate(validate_battles(pd.concat([df, champ], ignore_index=True)))
    for model in ("davidson", "rao-kupper"):
        fit = fit_ties(agg, model=model)
        assert np.isfinite(fit.ratings).all() and fit.ratings.index[0] == "champ"


def test_bootstrap_shape_seed_interval_and_summary(davidson_agg: Aggregated) -> None:
    b1, p1 = bootstrap_ties(davidson_agg, 60, np.random.default_rng(11))
    b2, p2 = bootstrap_ties(davidson_agg, 60, np.random.default_rng(11))
    pd.testing.assert_frame_equal(b1, b2)
    np.testing.assert_array_equal(p1, p2)
    assert b1.shape == (60, len(davidson_agg.models)) and p1.shape == (60,)
    assert list(b1.columns) == list(b1.median().sort_values(ascending=False).index)
    np.testing.assert_allclose(b1.mean(axis=1), 1000.0, atol=1e-6)

    fit = fit_ties(davidson_agg)
    lo, hi = tie_param_interval(p1)
    assert lo < fit.tie_param < hi and lo < 0.8 < hi
    table = summarize(fit.ratings, b1, davidson_agg.num_battles())
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert ((table["ci_lower"] <= table["rating"]) & (table["rating"] <= table["ci_upper"])).all()
    assert (table["ci_upper"] > table["ci_lower"]).all()


def test_bootstrap_rao_kupper_and_anchor(davidson_agg: Aggregated) -> None:
    boot, params = bootstrap_ties(
        davidson_agg, 20, np.random.default_rng(0), model="rao-kupper", anchor=("m-delta", 1100.0)
    )
    np.testing.assert_allclose(boot["m-delta"], 1100.0)
    assert (params > 1.0).all()


def test_tie_ratings_table(true_ratings: dict[str, float]) -> None:
    df = simulate_ties(true_ratings, 5_000, np.random.default_rng(4), model="davidson", param=0.6)
    table, summary = tie_ratings_table(df, bootstrap=30, rng=np.random.default_rng(1))
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert table["num_battles"].sum() == 2 * len(df)
    assert summary["tie_model"] == "davidson" and summary["tie_param_name"] == "nu"
    assert summary["tie_param_ci_lower"] < summary["tie_param"] < summary["tie_param_ci_upper"]  # type: ignore[operator]
    plain, rk = tie_ratings_table(df, model="rao-kupper")
    assert rk["tie_param_name"] == "theta" and rk["tie_param_ci_lower"] == rk["tie_param"]
    assert (plain["ci_lower"] == plain["rating"]).all()
    with pytest.raises(ValueError, match="rng"):
        tie_ratings_table(df, bootstrap=10)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def test_disconnected_graph_names_the_groups() -> None:
    df = frame([("a", "b", "model_a"), ("b", "c", "tie"), ("x", "y", "model_b"), ("y", "x", "tie")])
    agg = aggregate(validate_battles(df))
    for model in ("davidson", "rao-kupper"):
        with pytest.raises(ValueError, match=r"disconnected.*\{a, b, c\}; \{x, y\}"):
            fit_ties(agg, model=model)
    with pytest.raises(ValueError, match="disconnected"):
        bootstrap_ties(agg, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="disconnected"):
        tie_ratings_table(df)


def test_no_battles() -> None:
    empty = np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError, match="no battles"):
        fit_ties(Aggregated(models=[], a=empty, b=empty, wins_a=empty, wins_b=empty, ties=empty))
    one = np.zeros(1, dtype=np.int64)
    zero_counts = Aggregated(models=["a", "b"], a=one, b=one + 1, wins_a=one, wins_b=one, ties=one)
    with pytest.raises(ValueError, match="no battles"):
        fit_ties(zero_counts, model="rao-kupper")
    with pytest.raises(ValueError, match="empty"):
        tie_ratings_table(frame([]))


def test_only_ties_unknown_model_anchor_and_rounds() -> None:
    agg = aggregate(validate_battles(frame([("a", "b", "tie"), ("b", "a", "tie (bothbad)")])))
    with pytest.raises(ValueError, match="every battle is a tie"):
        fit_ties(agg)
    agg = aggregate(validate_battles(frame([("a", "b", "tie"), ("b", "a", "model_a")])))
    with pytest.raises(ValueError, match="unknown tie model 'bt'.*davidson, rao-kupper"):
        fit_ties(agg, model="bt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown anchor model 'ghost'"):
        fit_ties(agg, anchor=("ghost", 1000.0))
    with pytest.raises(ValueError, match="n_rounds must be positive"):
        bootstrap_ties(agg, 0, np.random.default_rng(0))
