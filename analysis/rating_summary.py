"""Leaderboard summaries: the summary columns, Chatbot Arena's rank upper bound, bootstrap percentile
intervals, the rating table (``summarize``) and the check of bootstrap arguments.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

SUMMARY_COLUMNS: tuple[str, ...] = ("model", "rating", "ci_lower", "ci_upper", "rank_ub", "num_battles")


def rank_upper_bound(lower: Iterable[float], upper: Iterable[float]) -> np.ndarray:
    """Chatbot Arena's rank (UB): 1 + number of models whose lower bound is above this upper bound."""
    lo = np.asarray(list(lower), dtype=np.float64)
    hi = np.asarray(list(upper), dtype=np.float64)
    return 1 + (lo[None, :] > hi[:, None]).sum(axis=1)


def percentile_bounds(boot: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The 2.5 and 97.5 percentiles (linear interpolation) of each column of bootstrap rounds."""
    q = boot.quantile([0.025, 0.975])
    return q.iloc[0].to_numpy(dtype=np.float64), q.iloc[1].to_numpy(dtype=np.float64)


def summarize(point: pd.Series, boot: pd.DataFrame | None, num_battles: pd.Series) -> pd.DataFrame:
    """Leaderboard frame: model, rating, ci_lower, ci_upper, rank_ub, num_battles, best first.

    The 95% interval is the 2.5/97.5 percentile (linear interpolation) of the bootstrap ratings;
    without a bootstrap both bounds equal the rating, so rank_ub is the plain rank by rating
    (equal ratings share a rank).
    """
    models = list(point.index)
    rating = point.to_numpy(dtype=np.float64)
    if boot is None or len(boot) == 0:
        lower = upper = rating
    else:
        missing = [m for m in models if m not in boot.columns]
        if missing:
            raise ValueError(f"bootstrap has no column for model(s): {', '.join(map(str, missing[:10]))}")
        lower, upper = percentile_bounds(boot[models])
    battles = num_battles.reindex(models).fillna(0).astype(np.int64).to_numpy()
    table = pd.DataFrame(
        {
            "model": models,
            "rating": rating,
            "ci_lower": lower,
            "ci_upper": upper,
            "rank_ub": rank_upper_bound(lower, upper).astype(np.int64),
            "num_battles": battles,
        }
    )
    table = table.sort_values(["rating", "model"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def check_bootstrap(bootstrap: int, rng: np.random.Generator | None) -> None:
    """Raise for a negative number of bootstrap rounds, or rounds without a generator."""
    if bootstrap < 0:
        raise ValueError(f"bootstrap rounds must be >= 0, got {bootstrap}")
    if bootstrap > 0 and rng is None:
        raise ValueError("a numpy.random.Generator (rng) is needed for the bootstrap")
