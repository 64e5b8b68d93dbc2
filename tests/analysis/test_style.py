"""Style control: a length-loving electorate inflates a verbose model; the style-controlled fit does not."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from analysis.ratings import SUMMARY_COLUMNS, aggregate, fit_bt, summarize, validate_battles
from analysis.style import (
    COEFFICIENT_COLUMNS,
    StyleFit,
    add_style_columns,
    bootstrap_style_controlled,
    feature_columns,
    fit_style_controlled,
    style_counts,
    style_ratings_table,
)

LN10 = math.log(10.0)

TRUE: dict[str, float] = {
    "alpha": 1150.0,
    "bravo": 1080.0,
    "verbose": 1000.0,
    "delta": 980.0,
    "echo": 920.0,
    "foxtrot": 870.0,
}
GAMMA = 1.5  # log-odds per unit of (len_a - len_b) / (len_a + len_b)


def simulate_style(
    n: int, rng: np.random.Generator, *, gamma: float = GAMMA, tie_share: float = 0.3
) -> pd.DataFrame:
    """Battles whose expected score (tie = 0.5) is σ(ln10/400·(r_a − r_b) + γ·Δlen); "verbose" writes
    answers three times as long as everyone else. Ties: t = tie_share·min(p, 1 − p), split evenly."""
    names = list(TRUE)
    r = np.array([TRUE[m] for m in names])
    ia = rng.integers(0, len(names), size=n)
    ib = (ia + rng.integers(1, len(names), size=n)) % len(names)
    mean_len = np.where(np.array(names) == "verbose", 1500.0, 500.0)
    len_a = np.round(rng.lognormal(np.log(mean_len[ia]), 0.4))
    len_b = np.round(rng.lognormal(np.log(mean_len[ib]), 0.4))
    eta = (r[ia] - r[ib]) * LN10 / 400.0 + gamma * (len_a - len_b) / (len_a + len_b)
    p = 1.0 / (1.0 + np.exp(-eta))
    t = tie_share * np.minimum(p, 1.0 - p)
    u = rng.random(n)
    winner = np.where(u < p - t / 2, "model_a", np.where(u < p + t / 2, "tie", "model_b"))
    names_arr = np.array(names, dtype=object)
    return pd.DataFrame(
        {
            "model_a": names_arr[ia],
            "model_b": names_arr[ib],
            "winner": winner,
            "len_a": len_a.astype(np.int64),
            "len_b": len_b.astype(np.int64),
        }
    )


def centred(s: pd.Series) -> pd.Series:
    return s - s.mean()


@pytest.fixture(scope="module")
def styled() -> pd.DataFrame:
    return simulate_style(20_000, np.random.default_rng(2024))


def test_length_bias_inflates_bt_and_style_control_removes_it(styled: pd.DataFrame) -> None:
    truth = centred(pd.Series(TRUE))
    plain = centred(fit_bt(aggregate(validate_battles(styled))))
    fit = fit_style_controlled(styled)
    controlled = centred(fit.ratings)

    assert plain["verbose"] - truth["verbose"] > 60.0  # BT credits the model for its long answers
    assert plain.index[1] == "verbose"  # ... and ranks it second
    assert abs(controlled["verbose"] - truth["verbose"]) < 20.0
    assert (controlled - truth[controlled.index]).abs().max() < 25.0
    assert list(controlled.index) == list(truth.sort_values(ascending=False).index)
    assert fit.ratings.mean() == pytest.approx(1000.0, abs=1e-9)

    assert isinstance(fit, StyleFit) and list(fit.coefficients) == ["length"]
    assert fit.coefficients["length"] > 0
    assert fit.raw_coefficients["length"] == pytest.approx(GAMMA, rel=0.15)
    assert fit.scales["length"] > 0 and fit.log_likelihood < 0


def test_without_style_effect_coefficient_is_small_and_ratings_match_bt() -> None:
    df = simulate_style(10_000, np.random.default_rng(9), gamma=0.0)
    fit = fit_style_controlled(df)
    bt = fit_bt(aggregate(validate_battles(df)))
    assert abs(fit.raw_coefficients["length"]) < 0.3
    assert (fit.ratings - bt[fit.ratings.index]).abs().max() < 15.0


def test_matches_direct_logistic_regression() -> None:
    df = simulate_style(800, np.random.default_rng(1))
    fit = fit_style_controlled(df, l2_c=math.inf)
    models = sorted(TRUE)
    idx = {m: i for i, m in enumerate(models)}
    ia = df["model_a"].map(idx).to_numpy()
    ib = df["model_b"].map(idx).to_numpy()
    y = df["winner"].map({"model_a": 1.0, "model_b": 0.0, "tie": 0.5}).to_numpy()
    diff = ((df["len_a"] - df["len_b"]) / (df["len_a"] + df["len_b"])).to_numpy(dtype=float)
    z = diff / np.sqrt(np.mean(diff**2))

    def nll(q: np.ndarray) -> float:
        u = np.append(0.0, q[: len(models) - 1])
        eta = u[ia] - u[ib] + q[-1] * z
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    res = minimize(nll, np.zeros(len(models)), method="BFGS", options={"gtol": 1e-9})
    ref = np.append(0.0, res.x[:-1]) * 400.0 / LN10
    ref = pd.Series(ref - ref.mean() + 1000.0, index=models)
    assert (fit.ratings - ref[fit.ratings.index]).abs().max() < 1e-3
    assert fit.coefficients["length"] == pytest.approx(res.x[-1], abs=1e-6)
    assert fit.log_likelihood == pytest.approx(-res.fun, rel=1e-9)


def test_swapping_sides_changes_nothing(styled: pd.DataFrame) -> None:
    df = styled.iloc[:4000]
    swapped = df.rename(
        columns={"model_a": "model_b", "model_b": "model_a", "len_a": "len_b", "len_b": "len_a"}
    )
    swapped["winner"] = swapped["winner"].replace({"model_a": "model_b", "model_b": "model_a"})
    a, b = fit_style_controlled(df), fit_style_controlled(swapped)
    pd.testing.assert_series_equal(a.ratings, b.ratings[a.ratings.index], atol=1e-6)
    assert a.coefficients["length"] == pytest.approx(b.coefficients["length"], abs=1e-9)


def test_anchor(styled: pd.DataFrame) -> None:
    fit = fit_style_controlled(styled.iloc[:3000], anchor=("echo", 1200.0))
    assert fit.ratings["echo"] == pytest.approx(1200.0, abs=1e-9)


def test_bootstrap(styled: pd.DataFrame) -> None:
    df = styled.iloc[:6000]
    boot, coefs = bootstrap_style_controlled(df, 40, np.random.default_rng(3))
    again, coefs2 = bootstrap_style_controlled(df, 40, np.random.default_rng(3))
    pd.testing.assert_frame_equal(boot, again)
    pd.testing.assert_frame_equal(coefs, coefs2)
    assert boot.shape == (40, len(TRUE)) and list(coefs.columns) == ["length"]
    assert list(boot.columns) == list(boot.median().sort_values(ascending=False).index)
    np.testing.assert_allclose(boot.mean(axis=1), 1000.0, atol=1e-6)

    fit = fit_style_controlled(df)
    table = summarize(fit.ratings, boot, validate_battles(df).pipe(aggregate).num_battles())
    assert ((table["ci_lower"] <= table["rating"]) & (table["rating"] <= table["ci_upper"])).all()
    lo, hi = coefs["length"].quantile([0.025, 0.975])
    assert lo < fit.coefficients["length"] < hi
    assert lo > 0


def test_style_ratings_table(styled: pd.DataFrame) -> None:
    df = styled.iloc[:3000]
    board, coefs = style_ratings_table(df, bootstrap=20, rng=np.random.default_rng(0))
    assert list(board.columns) == list(SUMMARY_COLUMNS)
    assert list(coefs.columns) == list(COEFFICIENT_COLUMNS) and coefs["feature"].tolist() == ["length"]
    row = coefs.iloc[0]
    assert row["ci_lower"] < row["coefficient"] < row["ci_upper"]
    board0, coefs0 = style_ratings_table(df)
    assert (board0["ci_lower"] == board0["rating"]).all()
    assert coefs0.iloc[0]["ci_lower"] == coefs0.iloc[0]["coefficient"]
    with pytest.raises(ValueError, match="rng"):
        style_ratings_table(df, bootstrap=5)


def test_markdown_counts_and_extra_features(styled: pd.DataFrame) -> None:
    text = "# Title\n\nSome **bold** and __also bold__.\n\n- one\n- two\n1. first\n```\n# not a header\n- no\n```\n"
    counts = style_counts(text)
    assert counts == {"length": len(text), "header_count": 1, "list_count": 3, "bold_count": 2}
    assert style_counts(None)["length"] == 0

    df = pd.DataFrame(
        {"model_a": ["a", "b"], "model_b": ["b", "a"], "winner": ["model_a", "tie"], "ans_a": [text, ""]}
    )
    df["ans_b"] = ["plain", "## h\n**x**"]
    out = add_style_columns(df, "ans_a", "ans_b")
    assert out["len_a"].tolist() == [len(text), 0] and out["header_count_b"].tolist() == [0, 1]
    assert out["bold_count_a"].tolist() == [2, 0] and out["list_count_a"].tolist() == [3, 0]
    with pytest.raises(ValueError, match="answer text column.*nope"):
        add_style_columns(df, "ans_a", "nope")

    # an irrelevant second feature gets a coefficient near zero and leaves the length effect intact
    rng = np.random.default_rng(6)
    extra = styled.assign(
        bold_count_a=rng.poisson(2.0, len(styled)), bold_count_b=rng.poisson(2.0, len(styled))
    )
    fit = fit_style_controlled(extra, features=("length", "bold_count"))
    assert list(fit.coefficients) == ["length", "bold_count"]
    assert abs(fit.coefficients["bold_count"]) < 0.05
    assert fit.raw_coefficients["length"] == pytest.approx(GAMMA, rel=0.15)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_missing_style_columns_are_named(styled: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"missing style column\(s\): len_b") as info:
        fit_style_controlled(styled.drop(columns=["len_b"]))
    assert "length needs len_a and len_b" in str(info.value)
    with pytest.raises(ValueError, match="header_count_a, header_count_b"):
        fit_style_controlled(styled, features=("length", "header_count"))
    with pytest.raises(ValueError, match="missing style column"):
        bootstrap_style_controlled(styled.drop(columns=["len_a"]), 5, np.random.default_rng(0))
    assert feature_columns("length") == ("len_a", "len_b")
    assert feature_columns("tokens") == ("tokens_a", "tokens_b")


def test_bad_style_values(styled: pd.DataFrame) -> None:
    df = styled.iloc[:200].copy()
    bad = df.astype({"len_a": float})
    bad.loc[3, "len_a"] = np.nan
    with pytest.raises(ValueError, match="1 battle row.*no numeric len_a"):
        fit_style_controlled(bad)
    neg = df.copy()
    neg.loc[5, "len_b"] = -4
    with pytest.raises(ValueError, match="negative len_b"):
        fit_style_controlled(neg)
    flat = df.assign(len_a=100, len_b=100)
    with pytest.raises(ValueError, match="'length' never differ"):
        fit_style_controlled(flat)
    with pytest.raises(ValueError, match="no style features"):
        fit_style_controlled(df, features=())


def test_battle_level_errors(styled: pd.DataFrame) -> None:
    df = styled.iloc[:50].copy()
    odd = df.copy()
    odd.loc[0, "winner"] = "A>B"
    with pytest.raises(ValueError, match="unknown winner value.*'A>B'"):
        fit_style_controlled(odd)
    with pytest.raises(ValueError, match="unknown anchor model 'ghost'"):
        fit_style_controlled(df, anchor=("ghost", 1000.0))
    split = pd.DataFrame(
        {
            "model_a": ["a", "b", "x"],
            "model_b": ["b", "c", "y"],
            "winner": ["model_a", "tie", "model_b"],
            "len_a": [10, 20, 30],
            "len_b": [20, 20, 10],
        }
    )
    with pytest.raises(ValueError, match=r"disconnected.*\{a, b, c\}; \{x, y\}"):
        fit_style_controlled(split)
    with pytest.raises(ValueError, match="n_rounds must be positive"):
        bootstrap_style_controlled(df, 0, np.random.default_rng(0))
