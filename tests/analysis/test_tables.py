"""Derived tables on a hand-made battle frame (exact expected values) and rating histories."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.ratings import aggregate, fit_bt, online_elo, validate_battles
from analysis.tables import (
    battle_count_matrix,
    model_order,
    observed_win_fraction,
    predicted_win_rate_matrix,
    ratings_over_time,
    vote_counts,
)

NAN = math.nan
DAY = 86_400.0
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def hand_battles() -> pd.DataFrame:
    """A beats B 2-1 (+1 tie, +1 both-bad), A beats C 1-0 (+1 tie), C beats B 1-0, C-D one tie."""
    rows = [
        ("A", "B", "model_a"),
        ("B", "A", "model_b"),
        ("A", "B", "model_b"),
        ("B", "A", "tie"),
        ("A", "B", "tie (bothbad)"),
        ("C", "A", "model_b"),
        ("A", "C", "tie"),
        ("C", "B", "model_a"),
        ("D", "C", "tie"),
    ]
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def test_observed_win_fraction_excludes_ties() -> None:
    got = observed_win_fraction(hand_battles())
    expected = pd.DataFrame(
        [
            [NAN, 2 / 3, 1.0, NAN],
            [1 / 3, NAN, 0.0, NAN],
            [0.0, 1.0, NAN, NAN],
            [NAN, NAN, NAN, NAN],
        ],
        index=pd.Index(list("ABCD"), name="model"),
        columns=pd.Index(list("ABCD"), name="opponent"),
    )
    pd.testing.assert_frame_equal(got, expected)


def test_battle_count_matrix_is_symmetric_and_counts_ties() -> None:
    got = battle_count_matrix(hand_battles())
    expected = pd.DataFrame(
        [[0, 5, 2, 0], [5, 0, 1, 0], [2, 1, 0, 1], [0, 0, 1, 0]],
        index=pd.Index(list("ABCD"), name="model"),
        columns=pd.Index(list("ABCD"), name="opponent"),
        dtype=np.int64,
    )
    pd.testing.assert_frame_equal(got, expected)


def test_vote_counts() -> None:
    got = vote_counts(hand_battles())
    expected = pd.DataFrame(
        {
            "model": list("ABCD"),
            "battles": [7, 6, 4, 1],
            "wins": [3, 1, 1, 0],
            "losses": [1, 3, 1, 0],
            "ties": [2, 1, 2, 1],
            "bothbad": [1, 1, 0, 0],
        }
    ).astype({c: np.int64 for c in ("battles", "wins", "losses", "ties", "bothbad")})
    pd.testing.assert_frame_equal(got, expected)


def test_order_by_rating_then_name() -> None:
    rating = pd.Series({"A": 1000.0, "B": 1100.0, "C": 900.0, "D": 1100.0})
    assert model_order("ABCD", rating) == ["B", "D", "A", "C"]
    assert model_order("ABCD", ["C", "X"]) == ["C", "A", "B", "D"]
    df = hand_battles()
    for table in (observed_win_fraction(df, order=rating), battle_count_matrix(df, order=rating)):
        assert list(table.index) == list(table.columns) == ["B", "D", "A", "C"]
    assert list(vote_counts(df, order=rating)["model"]) == ["B", "D", "A", "C"]
    # the reordered table holds the same numbers
    observed = observed_win_fraction(df, order=rating)
    assert observed.loc["A", "B"] == 2 / 3 and observed.loc["C", "B"] == 1.0


def test_aggregated_input_gives_the_same_tables() -> None:
    df = hand_battles()
    agg = aggregate(validate_battles(df))
    pd.testing.assert_frame_equal(observed_win_fraction(agg), observed_win_fraction(df))
    pd.testing.assert_frame_equal(battle_count_matrix(agg), battle_count_matrix(df))


def test_predicted_win_rate_matrix() -> None:
    ratings = pd.Series({"z": 1000.0, "x": 1400.0, "y": 1000.0})
    got = predicted_win_rate_matrix(ratings)
    assert list(got.index) == list(got.columns) == ["x", "y", "z"]
    assert got.loc["x", "y"] == pytest.approx(10 / 11, abs=1e-15)
    assert got.loc["y", "x"] == pytest.approx(1 / 11, abs=1e-15)
    assert got.loc["y", "z"] == got.loc["x", "x"] == 0.5
    # a leaderboard frame works too
    table = pd.DataFrame({"model": ["x", "y", "z"], "rating": [1400.0, 1000.0, 1000.0]})
    pd.testing.assert_frame_equal(predicted_win_rate_matrix(table), got, check_names=False)


# --------------------------------------------------------------------------------------------------
# Ratings over time
# --------------------------------------------------------------------------------------------------


def timed_battles() -> pd.DataFrame:
    """Three days: A-B on day 1, C joins on day 2 (C-A), day 3 B-C; one battle lacks a timestamp."""
    rows = [
        ("A", "B", "model_a", T0 + 10),
        ("B", "A", "tie", T0 + 20),
        ("C", "A", "model_a", T0 + DAY + 5),
        ("A", "C", "model_b", T0 + DAY + 6),
        ("B", "C", "model_a", T0 + 2 * DAY + 1),
        ("A", "B", "model_b", NAN),
    ]
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner", "tstamp"])


def test_ratings_over_time_needs_timestamps() -> None:
    with pytest.raises(ValueError, match="tstamp"):
        ratings_over_time(hand_battles())
    with pytest.raises(ValueError, match="tstamp"):
        ratings_over_time(hand_battles().assign(tstamp=NAN))
    with pytest.raises(ValueError, match="method"):
        ratings_over_time(timed_battles(), method="glicko")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="periods"):
        ratings_over_time(timed_battles(), freq=0)
    with pytest.raises(ValueError, match="frequency"):
        ratings_over_time(timed_battles(), freq="not-a-freq")


def test_elo_over_time_daily_matches_online_elo_on_each_prefix() -> None:
    df = timed_battles()
    got = ratings_over_time(df, freq="D", method="elo")
    day0 = pd.Timestamp(T0, unit="s", tz="UTC").normalize()
    assert list(got.index) == [day0 + pd.Timedelta(days=i) for i in (1, 2, 3)]
    assert got.index.name == "period_end"
    timed = df.dropna(subset=["tstamp"])
    for end, stop in zip(got.index, (2, 4, 5), strict=True):
        expected = online_elo(timed.iloc[:stop])
        row = got.loc[end]
        for model in row.index:
            if model in expected.index:
                assert row[model] == pytest.approx(expected[model], abs=1e-12)
            else:
                assert math.isnan(row[model])
    # first day: A beat B once, then a tie
    a1 = 1000 + 4 * (1 - 0.5)
    ea = 1 / (1 + 10 ** ((2000 - a1 - a1) / 400))
    assert got.iloc[0]["A"] == pytest.approx(a1 + 4 * (0.5 - ea), abs=1e-12)
    assert math.isnan(got.iloc[0]["C"])
    # columns ordered by the last period's rating
    last = got.iloc[-1]
    assert list(got.columns) == sorted(last.index, key=lambda m: -last[m])


def test_elo_over_time_equal_periods_matches_online_elo(sim_battles: pd.DataFrame) -> None:
    df = sim_battles.iloc[:3000]
    got = ratings_over_time(df, freq=7, method="elo")
    assert len(got) == 7
    np.testing.assert_allclose(
        got.iloc[-1][online_elo(df).index], online_elo(df).to_numpy(), rtol=0, atol=1e-9
    )
    # an intermediate period end is inclusive: battles with tstamp <= end
    end = got.index[2].timestamp()
    prefix = df[df["tstamp"] <= end + 1e-6]
    mid = online_elo(prefix)
    np.testing.assert_allclose(got.iloc[2][mid.index], mid.to_numpy(), rtol=0, atol=1e-9)


def test_bt_over_time_refits_cumulative_counts() -> None:
    df = timed_battles()
    got = ratings_over_time(df, freq="D", method="bt")
    timed = df.dropna(subset=["tstamp"])
    for i, stop in enumerate((2, 4, 5)):
        expected = fit_bt(aggregate(timed.iloc[:stop]))
        np.testing.assert_allclose(got.iloc[i][expected.index], expected.to_numpy(), rtol=0, atol=1e-9)
    assert math.isnan(got.iloc[0]["C"])


def test_bt_over_time_rates_the_largest_group_while_disconnected() -> None:
    rows = [
        ("A", "B", "model_a", T0),
        ("B", "C", "model_a", T0 + 1),
        ("D", "E", "model_b", T0 + 2),  # D-E stay apart until the last battle
        ("C", "D", "tie", T0 + 10),
    ]
    df = pd.DataFrame(rows, columns=["model_a", "model_b", "winner", "tstamp"])
    got = ratings_over_time(df, freq=2, method="bt")
    first = got.iloc[0]
    expected = fit_bt(aggregate(df.iloc[:2]))
    np.testing.assert_allclose(first[expected.index], expected.to_numpy(), rtol=0, atol=1e-9)
    assert math.isnan(first["D"]) and math.isnan(first["E"])
    assert got.iloc[1].notna().all()


def test_min_battles_and_anchor() -> None:
    df = timed_battles()
    got = ratings_over_time(df, freq="D", method="elo", min_battles=3)
    # after day 1: A and B have 2 battles each; after day 2: A 4, B 2, C 2; after day 3: B 3, C 3
    assert got.iloc[0].isna().all()
    assert got.iloc[1].notna().tolist() == [m == "A" for m in got.columns]
    assert got.iloc[2].notna().all()
    anchored = ratings_over_time(df, freq="D", method="elo", anchor=("C", 1500.0))
    assert anchored.iloc[0].isna().all()  # C not rated yet
    assert (anchored.iloc[1:]["C"] == 1500.0).all()
    plain = ratings_over_time(df, freq="D", method="elo")
    diff = (anchored.iloc[1:] - plain.iloc[1:]).to_numpy()
    np.testing.assert_allclose(diff, diff[:, :1].repeat(diff.shape[1], axis=1))
    with pytest.raises(ValueError, match="anchor"):
        ratings_over_time(df, anchor=("nobody", 1000.0))
