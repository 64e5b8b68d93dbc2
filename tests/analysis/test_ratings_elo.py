"""Online Elo: hand-computed updates, time order, and its bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.ratings import bootstrap_elo, online_elo, ratings_table


def expected(ra: float, rb: float) -> float:
    """Elo expected score of a against b (base 10, scale 400)."""
    return 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))


def test_hand_computed_sequence() -> None:
    df = pd.DataFrame(
        {
            "model_a": ["A", "B", "C"],
            "model_b": ["B", "A", "A"],
            "winner": ["model_a", "tie", "model_b"],
        }
    )
    r = online_elo(df, k=32.0)
    # 1) A beats B at equal ratings: +16 / -16
    a, b, c = 1016.0, 984.0, 1000.0
    # 2) B (984) ties A (1016)
    d = 32.0 * (0.5 - expected(b, a))
    b, a = b + d, a - d
    assert d == pytest.approx(32.0 * (0.5 - 1 / (1 + 10 ** (32 / 400))))
    # 3) C loses to A (A is model_b and wins)
    d = 32.0 * (0.0 - expected(c, a))
    c, a = c + d, a - d
    assert r["A"] == pytest.approx(a, abs=1e-12)
    assert r["B"] == pytest.approx(b, abs=1e-12)
    assert r["C"] == pytest.approx(c, abs=1e-12)
    assert r.mean() == pytest.approx(1000.0)
    assert list(r.index) == ["A", "B", "C"]


def test_default_k_is_4() -> None:
    df = pd.DataFrame({"model_a": ["A"], "model_b": ["B"], "winner": ["model_a"]})
    assert online_elo(df).to_dict() == {"A": 1002.0, "B": 998.0}


def test_battles_replayed_in_timestamp_order() -> None:
    in_order = pd.DataFrame(
        {
            "model_a": ["A", "A", "B"],
            "model_b": ["B", "B", "A"],
            "winner": ["model_a", "model_a", "model_a"],
            "tstamp": [1.0, 2.0, 3.0],
        }
    )
    shuffled = in_order.iloc[[2, 0, 1]].reset_index(drop=True)
    r_sorted = online_elo(shuffled, k=32.0)
    pd.testing.assert_series_equal(r_sorted, online_elo(in_order, k=32.0))
    # without timestamps the row order is used, which gives a different result
    r_rows = online_elo(shuffled.drop(columns="tstamp"), k=32.0)
    assert abs(r_rows["A"] - r_sorted["A"]) > 0.1


def test_equal_timestamps_keep_row_order() -> None:
    df = pd.DataFrame(
        {
            "model_a": ["A", "B"],
            "model_b": ["B", "A"],
            "winner": ["model_a", "tie"],
            "tstamp": [5.0, 5.0],
        }
    )
    pd.testing.assert_series_equal(online_elo(df), online_elo(df.drop(columns="tstamp")))


def test_elo_bootstrap_deterministic_and_table(sim_battles: pd.DataFrame) -> None:
    df = sim_battles.iloc[:3000]
    b1 = bootstrap_elo(df, 40, np.random.default_rng(3), chunk_rounds=16)
    b2 = bootstrap_elo(df, 40, np.random.default_rng(3), chunk_rounds=16)
    pd.testing.assert_frame_equal(b1, b2)
    assert b1.shape == (40, 8)
    np.testing.assert_allclose(b1.mean(axis=1), 1000.0, atol=1e-6)

    table = ratings_table(
        df, method="elo", bootstrap=40, rng=np.random.default_rng(3), anchor=("m-echo", 1000.0)
    )
    row = table.set_index("model").loc["m-echo"]
    assert row["rating"] == pytest.approx(1000.0)
    assert row["ci_lower"] == pytest.approx(1000.0) and row["ci_upper"] == pytest.approx(1000.0)
    assert (table["ci_upper"] >= table["ci_lower"]).all()
    assert table.iloc[0]["model"] == "m-alpha"
