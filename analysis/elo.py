"""Online Elo ratings: one replay of the battles in time order (``online_elo``) and its bootstrap
(``bootstrap_elo``), all rounds replayed side by side.
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.aggregation import model_codes
from analysis.fitting import RatingScale, ScaleKeywords, check_rounds, median_ordered, sorted_series


def _elo_arrays(df: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Model list, model indices and first-model scores (1/0.5/0) of battles in time order."""
    if "tstamp" in df.columns:
        df = df.sort_values("tstamp", kind="stable", na_position="last")
    models, ia, ib = model_codes(df)
    winner = df["winner"]
    a_won = (winner == "model_a").to_numpy(dtype=bool, na_value=False)
    b_won = (winner == "model_b").to_numpy(dtype=bool, na_value=False)
    score = np.where(a_won, 1.0, np.where(b_won, 0.0, 0.5))
    return models, ia, ib, score


def online_elo(
    df: pd.DataFrame,
    *,
    k: float = 4.0,
    **scale: Unpack[ScaleKeywords],
) -> pd.Series:
    """Classic online Elo over a validated battle frame, highest first.

    Battles are replayed in ``tstamp`` order when that column exists (stable sort, so equal or
    missing timestamps keep row order; missing ones go last), otherwise in row order. A tie scores
    0.5 for each side. Updates are zero-sum, so the mean rating stays ``init_rating``. ``k`` is the
    K-factor; ``scale``, ``base`` and ``init_rating`` default to ``RatingScale``'s.
    """
    rs = RatingScale(**scale)
    models, ia, ib, score = _elo_arrays(df)
    rating = [float(rs.init_rating)] * len(models)
    base, points = rs.base, rs.scale
    for a, b, sa in zip(ia.tolist(), ib.tolist(), score.tolist(), strict=True):
        # RatingScale.win_probability, written out: a call per battle would slow this loop by half
        ea = 1.0 / (1.0 + base ** ((rating[b] - rating[a]) / points))
        delta = k * (sa - ea)
        rating[a] += delta
        rating[b] -= delta
    return sorted_series(np.array(rating), models)


def bootstrap_elo(
    df: pd.DataFrame,
    n_rounds: int,
    rng: np.random.Generator,
    *,
    progress: bool = False,
    k: float = 4.0,
    chunk_rounds: int = 200,
    **scale: Unpack[ScaleKeywords],
) -> pd.DataFrame:
    """Bootstrap online Elo: ``n_rounds`` × models, columns ordered by median rating (descending).

    Each round resamples battles with replacement but replays them in time order (no shuffling):
    a battle drawn ``c`` times is applied ``c`` times at its place in the sequence. All rounds run
    side by side as vectors, so the cost is one pass over the battles per ``chunk_rounds`` rounds.
    """
    check_rounds(n_rounds)
    rs = RatingScale(**scale)
    models, ia, ib, score = _elo_arrays(df)
    n = len(ia)
    out = np.empty((n_rounds, len(models)))
    starts = list(range(0, n_rounds, chunk_rounds))
    for start in tqdm(starts, desc="bootstrap", disable=not progress, leave=False):
        r = min(chunk_rounds, n_rounds - start)
        counts = np.zeros((n, r), dtype=np.int32)
        for j in range(r):
            counts[:, j] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        rating = np.full((r, len(models)), float(rs.init_rating))
        max_count = counts.max(axis=1)
        for t in range(n):
            a, b, sa = ia[t], ib[t], score[t]
            for rep in range(int(max_count[t])):
                active = counts[t] > rep
                delta = np.where(active, k * (sa - rs.win_probability(rating[:, a], rating[:, b])), 0.0)
                rating[:, a] += delta
                rating[:, b] -= delta
        out[start : start + r] = rating
    return median_ordered(out, models)
