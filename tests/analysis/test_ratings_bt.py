"""Bradley–Terry fitting and bootstrap on simulated and hand-computable battles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq, minimize
from scipy.stats import spearmanr

from analysis import bt_bootstrap
from analysis.fitting import BTPairs
from analysis.ratings import (
    DEFAULT_L2_C,
    Aggregated,
    aggregate,
    bootstrap_bt,
    fit_bt,
    num_battles,
    ratings_table,
    summarize,
    validate_battles,
)


def battles(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    """Expand (model_a, model_b, winner, count) tuples into battle rows."""
    out = [(a, b, w) for a, b, w, n in rows for _ in range(n)]
    return pd.DataFrame(out, columns=["model_a", "model_b", "winner"])


def rowwise_reference_fit(df: pd.DataFrame, *, c: float = DEFAULT_L2_C) -> pd.Series:
    """FastChat-style row-wise fit: every battle twice (a tie once won, once lost) in a
    logistic regression without intercept and sklearn's L2 objective 0.5*|w|^2 + C*sum(loss),
    minimised directly over the rows with scipy; ratings = 400*w + 1000."""
    models = sorted(set(df["model_a"]) | set(df["model_b"]))
    idx = {m: i for i, m in enumerate(models)}
    n = len(df)
    x = np.zeros((2 * n, len(models)))
    rows = np.arange(n)
    for half in (0, 1):
        x[rows + half * n, df["model_a"].map(idx).to_numpy()] = math.log(10)
        x[rows + half * n, df["model_b"].map(idx).to_numpy()] = -math.log(10)
    y = np.concatenate(
        [
            (df["winner"] == "model_a").to_numpy(dtype=float),
            df["winner"].isin(["model_a", "tie", "tie (bothbad)"]).to_numpy(dtype=float),
        ]
    )

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        loss = np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.dot(w, w) / c
        grad = x.T @ (1.0 / (1.0 + np.exp(-z)) - y) + w / c
        return loss / n, grad / n

    res = minimize(objective, np.zeros(len(models)), jac=True, method="BFGS", options={"gtol": 1e-12})
    return pd.Series(400.0 * res.x + 1000.0, index=models)


def test_recovers_simulated_strengths(sim_battles: pd.DataFrame, true_ratings: dict[str, float]) -> None:
    fitted = fit_bt(aggregate(validate_battles(sim_battles)))
    truth = pd.Series(true_ratings)[fitted.index]
    rho = spearmanr(fitted.to_numpy(), truth.to_numpy()).statistic
    assert rho >= 0.99
    # identified up to a constant: compare centred ratings
    err = (fitted - fitted.mean()) - (truth - truth.mean())
    assert err.abs().max() < 25.0, err
    assert fitted.mean() == pytest.approx(1000.0, abs=1e-9)
    assert list(fitted.index) == list(fitted.sort_values(ascending=False).index)


def test_anchor_pins_model_and_only_shifts(sim_battles: pd.DataFrame) -> None:
    agg = aggregate(validate_battles(sim_battles))
    free = fit_bt(agg)
    pinned = fit_bt(agg, anchor=("m-echo", 1234.5))
    assert pinned["m-echo"] == pytest.approx(1234.5, abs=1e-9)
    diff = (pinned - free[pinned.index]).to_numpy()
    np.testing.assert_allclose(diff, diff[0], atol=1e-9)


def test_unknown_anchor_is_an_error(sim_battles: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown anchor model 'nope'"):
        fit_bt(aggregate(validate_battles(sim_battles)), anchor=("nope", 1000.0))


def test_tie_counts_half_a_win_each_way() -> None:
    # 30 A wins, 10 B wins, 20 ties -> A scores 40 of 60 -> odds 2 -> diff = 400*log10(2)
    df = battles([("A", "B", "model_a", 30), ("A", "B", "model_b", 10), ("B", "A", "tie", 12)])
    df = pd.concat([df, battles([("A", "B", "tie (bothbad)", 8)])], ignore_index=True)
    r = fit_bt(aggregate(validate_battles(df)))
    assert r["A"] - r["B"] == pytest.approx(400.0 * math.log10(2.0), abs=1e-3)
    assert (r["A"] + r["B"]) / 2 == pytest.approx(1000.0, abs=1e-9)


def test_side_of_the_screen_does_not_matter() -> None:
    df = battles(
        [("A", "B", "model_a", 7), ("B", "A", "model_b", 5), ("B", "A", "model_a", 4), ("B", "C", "tie", 3)]
    )
    df = pd.concat([df, battles([("C", "A", "model_a", 2), ("A", "C", "model_a", 6)])], ignore_index=True)
    swapped = df.rename(columns={"model_a": "model_b", "model_b": "model_a"})
    swapped["winner"] = swapped["winner"].replace({"model_a": "model_b", "model_b": "model_a"})
    a = fit_bt(aggregate(validate_battles(df)))
    b = fit_bt(aggregate(validate_battles(swapped)))
    pd.testing.assert_series_equal(a, b[a.index], atol=1e-6)


def test_aggregate_counts_per_unordered_pair() -> None:
    df = battles(
        [
            ("B", "A", "model_a", 3),
            ("A", "B", "model_a", 2),
            ("A", "B", "tie (bothbad)", 1),
            ("C", "A", "tie", 4),
        ]
    )
    agg = aggregate(validate_battles(df))
    assert agg.models == ["A", "B", "C"]
    frame = agg.to_frame().set_index(["model_a", "model_b"])
    assert frame.loc[("A", "B")].tolist() == [2, 3, 1]
    assert frame.loc[("A", "C")].tolist() == [0, 0, 4]
    assert agg.n_battles == 10
    pd.testing.assert_series_equal(agg.num_battles(), num_battles(df), check_names=False)


def test_aggregated_fit_equals_rowwise_reference(simulator, true_ratings: dict[str, float]) -> None:
    subset = {m: true_ratings[m] for m in list(true_ratings)[:5]}
    df = simulator(subset, 3000, np.random.default_rng(7))
    ours = fit_bt(aggregate(validate_battles(df)))
    ref = rowwise_reference_fit(df)
    ref = ref - ref.mean() + 1000.0
    assert (ours - ref[ours.index]).abs().max() < 0.01


def test_never_losing_model_stays_finite_like_sklearn_c_1e6() -> None:
    # A beats B 10/10: no finite MLE. With sklearn's objective 0.5*|w|^2 + C*sum(loss) on the
    # duplicated rows, by symmetry w = (d/2, -d/2) and d solves d/2 = 20*C*ln10*sigmoid(-ln10*d).
    df = battles([("A", "B", "model_a", 10)])
    r = fit_bt(aggregate(validate_battles(df)))
    ln10 = math.log(10)
    d = brentq(lambda d: d / 2 - 20 * DEFAULT_L2_C * ln10 / (1 + math.exp(ln10 * d)), 0.0, 20.0)
    assert np.isfinite(r).all()
    assert r["A"] - r["B"] == pytest.approx(400.0 * d, abs=0.01)


def test_never_winning_model_in_larger_graph_is_last_and_finite(
    simulator, true_ratings: dict[str, float]
) -> None:
    df = simulator(true_ratings, 4000, np.random.default_rng(3))
    loser = battles([("m-hotel", "zero", "model_a", 40), ("zero", "m-golf", "model_b", 30)])
    r = fit_bt(aggregate(validate_battles(pd.concat([df, loser], ignore_index=True))))
    assert np.isfinite(r).all()
    assert r.index[-1] == "zero"


def test_bootstrap_same_seed_same_output_and_covers_point(sim_battles: pd.DataFrame) -> None:
    agg = aggregate(validate_battles(sim_battles))
    b1 = bootstrap_bt(agg, 100, np.random.default_rng(11))
    b2 = bootstrap_bt(agg, 100, np.random.default_rng(11))
    pd.testing.assert_frame_equal(b1, b2)
    assert b1.shape == (100, len(agg.models))
    b3 = bootstrap_bt(agg, 100, np.random.default_rng(12))
    assert not b1.equals(b3)
    np.testing.assert_allclose(b1.mean(axis=1), 1000.0, atol=1e-6)

    point = fit_bt(agg)
    table = summarize(point, b1, agg.num_battles())
    assert ((table["ci_lower"] <= table["rating"]) & (table["rating"] <= table["ci_upper"])).all()
    assert (table["ci_upper"] - table["ci_lower"] > 0).all()


def test_bootstrap_anchor_gives_zero_width_for_the_anchor(sim_battles: pd.DataFrame) -> None:
    agg = aggregate(validate_battles(sim_battles))
    boot = bootstrap_bt(agg, 20, np.random.default_rng(0), anchor=("m-delta", 1100.0))
    np.testing.assert_allclose(boot["m-delta"], 1100.0)


def test_bootstrap_wider_with_fewer_battles(simulator, true_ratings: dict[str, float]) -> None:
    def mean_width(n: int) -> float:
        df = simulator(true_ratings, n, np.random.default_rng(5))
        table = ratings_table(df, bootstrap=100, rng=np.random.default_rng(9))
        return float((table["ci_upper"] - table["ci_lower"]).mean())

    few, many = mean_width(2_000), mean_width(20_000)
    assert few > 2.0 * many


def test_summarize_without_bootstrap_ranks_by_rating() -> None:
    point = pd.Series({"a": 1100.0, "b": 1000.0, "c": 1000.0, "d": 900.0}, name="rating")
    table = summarize(point, None, pd.Series({"a": 3, "b": 2, "c": 5}))
    assert list(table.columns) == ["model", "rating", "ci_lower", "ci_upper", "rank_ub", "num_battles"]
    assert table["model"].tolist() == ["a", "b", "c", "d"]
    assert table["rank_ub"].tolist() == [1, 2, 2, 4]
    assert table["num_battles"].tolist() == [3, 2, 5, 0]
    assert (table["ci_lower"] == table["rating"]).all()


def test_summarize_rank_ub_uses_interval_overlap() -> None:
    point = pd.Series({"a": 1100.0, "b": 1050.0, "c": 900.0})
    boot = pd.DataFrame({"a": [1090.0, 1110.0], "b": [1040.0, 1095.0], "c": [880.0, 1050.0]})
    table = summarize(point, boot, pd.Series({"a": 1, "b": 1, "c": 1})).set_index("model")
    # b overlaps a -> rank 1; c (upper 1045.75) overlaps b (lower 1041.375) but not a (lower 1090.5)
    assert table["rank_ub"].to_dict() == {"a": 1, "b": 1, "c": 2}
    assert table.loc["c", "ci_upper"] == pytest.approx(880.0 + 0.975 * 170.0)


def test_ratings_table_bt(sim_battles: pd.DataFrame) -> None:
    table = ratings_table(sim_battles, bootstrap=30, rng=np.random.default_rng(1))
    assert table["rating"].is_monotonic_decreasing
    assert table["rating"].mean() == pytest.approx(1000.0)
    assert table["num_battles"].sum() == 2 * len(sim_battles)
    assert table.iloc[0]["model"] == "m-alpha"
    with pytest.raises(ValueError, match="rng"):
        ratings_table(sim_battles, bootstrap=10)


# --------------------------------------------------------------------------------------------------
# Batched bootstrap and categorical frames
# --------------------------------------------------------------------------------------------------


def per_round_reference(agg, n_rounds: int, seed: int) -> pd.DataFrame:
    """Each bootstrap round fitted on its own with fit_bt, from the draws bootstrap_bt makes
    (one multinomial over the (pair, outcome) cells per round, in order, from the same generator)."""
    rng = np.random.default_rng(seed)
    cells = np.concatenate([agg.wins_a, agg.wins_b, agg.ties]).astype(np.float64)
    k = len(agg.a)
    rows = []
    for _ in range(n_rounds):
        draw = rng.multinomial(int(cells.sum()), cells / cells.sum())
        resample = Aggregated(agg.models, agg.a, agg.b, draw[:k], draw[k : 2 * k], draw[2 * k :])
        rows.append(fit_bt(resample)[agg.models].to_numpy())
    return pd.DataFrame(rows, columns=agg.models)


@pytest.mark.parametrize(
    ("n_models", "n_battles", "seed"),
    [(8, 20_000, 20240601), (30, 3_000, 5), (60, 2_500, 8)],
)
def test_batched_bootstrap_equals_fitting_each_round_alone(
    simulator, n_models: int, n_battles: int, seed: int
) -> None:
    ratings = {f"m{i:02d}": 1000.0 + 12.0 * i for i in range(n_models)}
    agg = aggregate(validate_battles(simulator(ratings, n_battles, np.random.default_rng(seed))))
    boot = bootstrap_bt(agg, 40, np.random.default_rng(seed + 1))
    ref = per_round_reference(agg, 40, seed + 1)
    diff = (boot[ref.columns] - ref).abs().to_numpy().max()
    assert diff < 1e-6, diff


def test_batched_bootstrap_threads_and_fallback_give_the_same_rounds(
    sim_battles: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    agg = aggregate(validate_battles(sim_battles))
    plain = bootstrap_bt(agg, 30, np.random.default_rng(4))
    monkeypatch.setattr(bt_bootstrap, "_BOOT_THREAD_CELLS", 0)  # draws on the worker thread
    monkeypatch.setattr(bt_bootstrap, "_BOOT_CHUNK_CELLS", 7 * len(agg.a))  # several batches
    threaded = bootstrap_bt(agg, 30, np.random.default_rng(4))
    pd.testing.assert_frame_equal(plain, threaded, atol=1e-9, rtol=0)
    monkeypatch.setattr(bt_bootstrap, "_BOOT_MAX_ITER", 1)  # every round falls back to one-round fits
    fallback = bootstrap_bt(agg, 30, np.random.default_rng(4))
    assert (plain - fallback[plain.columns]).abs().to_numpy().max() < 1e-6


def test_fit_bt_lands_on_the_optimum(sim_battles: pd.DataFrame) -> None:
    agg = aggregate(validate_battles(sim_battles))
    point = fit_bt(agg)[agg.models].to_numpy()
    n = (agg.wins_a + agg.wins_b + agg.ties).astype(float)
    s = (agg.wins_a + 0.5 * agg.ties) / n.sum()
    l2 = 1.0 / (2.0 * DEFAULT_L2_C * n.sum())
    _, grad = BTPairs(agg.a, agg.b, n / n.sum(), s, math.log(10), l2, n.sum()).objective(
        (point - 1000.0) / 400.0
    )
    assert np.abs(grad).max() < 1e-13


def as_categorical(df: pd.DataFrame, extra_models: tuple[str, ...] = ()) -> pd.DataFrame:
    """Model names as categoricals over one category set (with unused extras, in reverse order)."""
    out = df.copy()
    names = sorted(set(df["model_a"]) | set(df["model_b"]) | set(extra_models), reverse=True)
    dtype = pd.CategoricalDtype(names)
    out["model_a"] = out["model_a"].astype(dtype)
    out["model_b"] = out["model_b"].astype(dtype)
    out["winner"] = out["winner"].astype("category")
    return out


def test_categorical_frames_rate_like_plain_ones(sim_battles: pd.DataFrame) -> None:
    plain = sim_battles.astype({"model_a": object, "model_b": object, "winner": object})
    cat = as_categorical(plain, extra_models=("unused-model",))
    a, b = aggregate(validate_battles(plain)), aggregate(validate_battles(cat))
    assert a.models == b.models and "unused-model" not in b.models
    for field in ("a", "b", "wins_a", "wins_b", "ties"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    pd.testing.assert_series_equal(num_battles(plain), num_battles(cat), check_index_type=False)
    pd.testing.assert_frame_equal(
        ratings_table(plain, bootstrap=20, rng=np.random.default_rng(2)),
        ratings_table(cat, bootstrap=20, rng=np.random.default_rng(2)),
    )
    pd.testing.assert_frame_equal(
        ratings_table(plain, method="elo"), ratings_table(cat, method="elo"), check_exact=False
    )


def test_categorical_self_battles_are_found() -> None:
    df = as_categorical(battles([("A", "B", "model_a", 2), ("B", "B", "tie", 1)]))
    with pytest.raises(ValueError, match="model_a == model_b"):
        validate_battles(df)
    assert len(validate_battles(df, self_battles="drop")) == 2
    # categories that differ between the two columns still compare by value
    mixed = df.copy()
    mixed["model_b"] = mixed["model_b"].astype(object)
    assert len(validate_battles(mixed, self_battles="drop")) == 2
