"""Leaderboard ratings from pairwise battles: Bradley–Terry (MLE + bootstrap) and online Elo.

Everything here is a pure function over pandas/numpy data; randomness comes in as a
``numpy.random.Generator``. Battle records use the FastChat vocabulary (``model_a``, ``model_b``,
``winner`` in {"model_a", "model_b", "tie", "tie (bothbad)"}). Ratings live on the Chatbot Arena
scale: a rating difference ``d`` means ``P(win) = 1 / (1 + base ** (-d / scale))`` (400·log10-odds).

Bradley–Terry fitting works on counts aggregated per unordered model pair, so the cost depends on the
number of pairs, not on the number of votes; the bootstrap resamples those counts with one
multinomial draw per round, which is exactly equivalent to resampling battles with replacement, and
fits all rounds together (see ``bootstrap_bt``).

Battle frames may hold the model names as plain strings or as categoricals (``analysis.io`` loads them
dictionary-encoded); aggregation then works on the integer codes.

The code lives in ``analysis.aggregation``, ``analysis.fitting`` (the toolkit shared with the tie and
style models), ``analysis.bt_fit``, ``analysis.bt_bootstrap``, ``analysis.elo`` and
``analysis.rating_summary``; this module re-exports their public names and builds the leaderboard
(``ratings_table``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from analysis.aggregation import REQUIRED_COLUMNS as REQUIRED_COLUMNS
from analysis.aggregation import (
    Aggregated,
    aggregate,
    connected_groups,
    num_battles,
    validate_battles,
)
from analysis.bt_bootstrap import bootstrap_bt
from analysis.bt_fit import fit_bt, predict_win_rate
from analysis.elo import bootstrap_elo, online_elo
from analysis.fitting import DEFAULT_L2_C, Anchor, RatingScale
from analysis.rating_summary import SUMMARY_COLUMNS, check_bootstrap, rank_upper_bound, summarize


def ratings_table(
    df: pd.DataFrame,
    *,
    method: Literal["bt", "elo"] = "bt",
    bootstrap: int = 0,
    rng: np.random.Generator | None = None,
    anchor: Anchor | None = None,
    progress: bool = False,
    self_battles: Literal["error", "drop"] = "error",
    k: float = 4.0,
) -> pd.DataFrame:
    """Validate battles and build the leaderboard frame (see ``summarize``) with BT or online Elo.

    ``bootstrap`` rounds (0 = none) give the confidence intervals: BT resamples aggregated counts
    (``bootstrap_bt``); Elo resamples battles and replays each round in time order (``bootstrap_elo``).
    With ``anchor`` the anchored model gets exactly that rating in the point estimate and in every
    bootstrap round (so its own interval has zero width). ``k`` is the Elo K-factor.
    """
    if method not in ("bt", "elo"):
        raise ValueError(f"unknown rating method {method!r}; expected 'bt' or 'elo'")
    check_bootstrap(bootstrap, rng)
    clean = validate_battles(df, self_battles=self_battles)
    counts = num_battles(clean)
    boot: pd.DataFrame | None = None
    if method == "bt":
        agg = aggregate(clean)
        point = fit_bt(agg, anchor=anchor)
        if bootstrap > 0:
            assert rng is not None
            boot = bootstrap_bt(agg, bootstrap, rng, anchor=anchor, progress=progress)
    else:
        point = online_elo(clean, k=k)
        if anchor is not None and anchor[0] not in point.index:
            raise ValueError(f"unknown anchor model {anchor[0]!r}")
        if bootstrap > 0:
            assert rng is not None
            boot = bootstrap_elo(clean, bootstrap, rng, k=k, progress=progress)
        if anchor is not None:
            point = point + (anchor[1] - point[anchor[0]])
            if boot is not None:
                boot = boot.sub(boot[anchor[0]], axis=0) + anchor[1]
    return summarize(point, boot, counts)


__all__ = [
    "DEFAULT_L2_C",
    "SUMMARY_COLUMNS",
    "Aggregated",
    "RatingScale",
    "aggregate",
    "bootstrap_bt",
    "bootstrap_elo",
    "connected_groups",
    "fit_bt",
    "num_battles",
    "online_elo",
    "predict_win_rate",
    "rank_upper_bound",
    "ratings_table",
    "summarize",
    "validate_battles",
]
