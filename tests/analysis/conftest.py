"""Shared helpers for the analysis tests: simulated battles from known strengths."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

TRUE_RATINGS: dict[str, float] = {
    "m-alpha": 1250.0,
    "m-bravo": 1180.0,
    "m-charlie": 1110.0,
    "m-delta": 1040.0,
    "m-echo": 990.0,
    "m-foxtrot": 930.0,
    "m-golf": 860.0,
    "m-hotel": 800.0,
}

Simulator = Callable[..., pd.DataFrame]


def simulate(
    ratings: dict[str, float],
    n: int,
    rng: np.random.Generator,
    *,
    tie_share: float = 0.3,
    scale: float = 400.0,
) -> pd.DataFrame:
    """Battles between random pairs whose expected score (win = 1, tie = 0.5) follows BT exactly.

    P(a wins) = p - t/2, P(tie) = t, P(b wins) = 1 - p - t/2 with t = tie_share * min(p, 1 - p),
    so counting a tie as half a win each way is an unbiased estimator of the BT ratings.
    """
    names = list(ratings)
    r = np.array([ratings[m] for m in names])
    ia = rng.integers(0, len(names), size=n)
    ib = (ia + rng.integers(1, len(names), size=n)) % len(names)
    p = 1.0 / (1.0 + 10.0 ** ((r[ib] - r[ia]) / scale))
    t = tie_share * np.minimum(p, 1.0 - p)
    u = rng.random(n)
    winner = np.where(u < p - t / 2, "model_a", np.where(u < p + t / 2, "tie", "model_b"))
    # a few "tie (bothbad)" rows: both tie kinds must count the same
    bothbad = (winner == "tie") & (rng.random(n) < 0.3)
    winner = np.where(bothbad, "tie (bothbad)", winner)
    names_arr = np.array(names, dtype=object)
    return pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(n)],
            "model_a": names_arr[ia],
            "model_b": names_arr[ib],
            "winner": winner,
            "judge": "sim",
            "turn": 1,
            "anony": True,
            "tstamp": np.arange(n, dtype=np.float64),
        }
    )


@pytest.fixture(scope="session")
def simulator() -> Simulator:
    """The battle simulator (see ``simulate``)."""
    return simulate


@pytest.fixture(scope="session")
def true_ratings() -> dict[str, float]:
    """The strengths behind ``sim_battles``."""
    return dict(TRUE_RATINGS)


@pytest.fixture(scope="session")
def sim_battles() -> pd.DataFrame:
    """20k simulated battles among 8 models with TRUE_RATINGS (seeded)."""
    return simulate(TRUE_RATINGS, 20_000, np.random.default_rng(20240601))
