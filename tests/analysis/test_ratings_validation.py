"""Bad battle input is refused with a message that names the problem."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.ratings import aggregate, connected_groups, fit_bt, ratings_table, validate_battles


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Battles from (model_a, model_b, winner) tuples."""
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def test_unknown_winner_values_are_named_with_counts() -> None:
    df = frame([("a", "b", "model_a"), ("a", "b", "A>B"), ("a", "b", "A>B"), ("b", "a", "both")])
    with pytest.raises(ValueError) as info:
        validate_battles(df)
    msg = str(info.value)
    assert "3 row(s)" in msg and "'A>B' (2)" in msg and "'both' (1)" in msg


def test_missing_columns() -> None:
    with pytest.raises(ValueError, match="missing required column.*winner"):
        validate_battles(pd.DataFrame({"model_a": ["a"], "model_b": ["b"]}))


def test_empty_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        validate_battles(frame([]))
    with pytest.raises(ValueError, match="empty"):
        ratings_table(frame([]))


def test_self_battle_is_an_error_or_dropped() -> None:
    df = frame([("a", "b", "model_a"), ("a", "a", "tie"), ("b", "a", "tie")])
    with pytest.raises(ValueError, match="model_a == model_b"):
        validate_battles(df)
    clean = validate_battles(df, self_battles="drop")
    assert len(clean) == 2 and list(clean.index) == [0, 1]


def test_missing_model_name() -> None:
    df = frame([("a", "b", "model_a")])
    df.loc[1] = [None, "b", "tie"]
    with pytest.raises(ValueError, match="no model_a"):
        validate_battles(df)


def test_disconnected_graph_names_the_groups() -> None:
    df = frame([("a", "b", "model_a"), ("b", "c", "tie"), ("x", "y", "model_b"), ("y", "x", "model_a")])
    agg = aggregate(validate_battles(df))
    assert connected_groups(agg) == [["a", "b", "c"], ["x", "y"]]
    with pytest.raises(ValueError, match=r"disconnected.*\{a, b, c\}; \{x, y\}"):
        fit_bt(agg)
    with pytest.raises(ValueError, match="disconnected"):
        ratings_table(df)


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown rating method"):
        ratings_table(frame([("a", "b", "model_a")]), method="glicko")  # type: ignore[arg-type]
