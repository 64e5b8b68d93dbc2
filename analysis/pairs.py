"""Leaderboards from vote counts per (model pair, outcome), as the database aggregates them.

``storage.counts.pair_outcome_counts`` returns a few thousand ``(model_a, model_b, winner, count)``
rows however many votes are stored; ``aggregated_from_counts`` turns them into the ``Aggregated``
counts every Bradley–Terry-family fit works on, and ``leaderboard_from_counts`` fits one (BT, Davidson
or Rao–Kupper) with bootstrap or sandwich intervals. Pure: nothing here reads storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from analysis.fitting import Anchor
from analysis.ratings import (
    SUMMARY_COLUMNS,
    Aggregated,
    bootstrap_bt,
    fit_bt,
    rank_upper_bound,
    summarize,
)
from analysis.sandwich import sandwich_bt, sandwich_ties
from analysis.ties import TIE_MODELS, TieModel, bootstrap_ties, fit_ties, tie_param_interval
from storage.vocabulary import WINNERS

Method = Literal["bt", "davidson", "rao-kupper"]
CiMethod = Literal["sandwich", "bootstrap", "none"]
METHODS: tuple[str, ...] = ("bt", *TIE_MODELS)
CI_METHODS: tuple[str, ...] = ("sandwich", "bootstrap", "none")


def aggregated_from_counts(rows: Iterable[tuple[str, str, str, int]]) -> Aggregated:
    """``Aggregated`` pair counts from ``(model_a, model_b, winner, count)`` rows.

    Rows may repeat a (pair, winner) and list a pair in either order; both tie kinds count as ties,
    exactly as ``analysis.ratings.aggregate`` counts the same battles. Rows with a zero count are
    skipped. Raises ``ValueError`` for a winner outside the FastChat vocabulary, a negative count or a
    model paired with itself.
    """
    table = list(rows)
    if not table:
        return Aggregated(
            models=[], a=_ints([]), b=_ints([]), wins_a=_ints([]), wins_b=_ints([]), ties=_ints([])
        )
    model_a = [str(r[0]) for r in table]
    model_b = [str(r[1]) for r in table]
    winner = np.array([str(r[2]) for r in table], dtype=object)
    count = np.array([int(r[3]) for r in table], dtype=np.int64)
    bad = sorted(set(winner.tolist()) - set(WINNERS))
    if bad:
        raise ValueError(
            f"unknown winner value(s) {', '.join(map(repr, bad))}; expected one of {', '.join(WINNERS)}"
        )
    if (count < 0).any():
        raise ValueError("a pair count is negative")
    keep = count > 0
    names = sorted(
        set(np.array(model_a, dtype=object)[keep].tolist())
        | set(np.array(model_b, dtype=object)[keep].tolist())
    )
    index = {name: i for i, name in enumerate(names)}
    ia = np.array([index.get(n, -1) for n in model_a], dtype=np.int64)[keep]
    ib = np.array([index.get(n, -1) for n in model_b], dtype=np.int64)[keep]
    winner, count = winner[keep], count[keep]
    if (ia == ib).any():
        raise ValueError(f"a model cannot battle itself: {names[int(ia[ia == ib][0])]!r}")
    m = len(names)
    pair = np.minimum(ia, ib) * m + np.maximum(ia, ib)
    a_won, b_won = winner == "model_a", winner == "model_b"
    # outcome per row: 0 = the pair's first (lower-index) model won, 1 = its second won, 2 = tie
    outcome = np.where(a_won | b_won, np.where(ia > ib, a_won, b_won), 2).astype(np.int64)
    keys, inverse = np.unique(pair, return_inverse=True)
    cells = np.bincount(inverse * 3 + outcome, weights=count, minlength=3 * len(keys)).reshape(-1, 3)
    return Aggregated.from_cells(names, keys, np.rint(cells).astype(np.int64))


def _ints(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def summary_with_bounds(
    point: pd.Series, lower: pd.Series, upper: pd.Series, num_battles: pd.Series
) -> pd.DataFrame:
    """The leaderboard frame (``SUMMARY_COLUMNS``, best first) from ratings and explicit interval bounds."""
    models = list(point.index)
    lo = lower.reindex(models).to_numpy(dtype=np.float64)
    hi = upper.reindex(models).to_numpy(dtype=np.float64)
    table = pd.DataFrame(
        {
            "model": models,
            "rating": point.to_numpy(dtype=np.float64),
            "ci_lower": lo,
            "ci_upper": hi,
            "rank_ub": rank_upper_bound(lo, hi).astype(np.int64),
            "num_battles": num_battles.reindex(models).fillna(0).astype(np.int64).to_numpy(),
        },
        columns=list(SUMMARY_COLUMNS),
    )
    table = table.sort_values(["rating", "model"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def leaderboard_from_counts(
    agg: Aggregated,
    *,
    method: Method = "bt",
    ci: CiMethod = "sandwich",
    bootstrap: int = 0,
    rng: np.random.Generator | None = None,
    anchor: Anchor | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit a leaderboard to pair counts: (frame with ``SUMMARY_COLUMNS``, extras).

    ``method``: ``bt`` (a tie is half a win each way), ``davidson`` or ``rao-kupper`` (ties modelled,
    see ``analysis.ties``). ``ci``: ``sandwich`` (robust covariance, ``analysis.sandwich``; costs one
    models³ solve), ``bootstrap`` (``bootstrap`` multinomial rounds over the pair cells, needs ``rng``;
    0 rounds = no intervals), or ``none`` (bounds equal the rating). ``anchor=(MODEL, RATING)`` pins a
    model; otherwise the mean rating is 1000.

    Intervals are 95 %: the 2.5/97.5 percentiles of the bootstrap, or rating ± 1.96·se.

    Extras: ``method``, ``ci``, ``total_battles``; for the tie models also ``tie_model``,
    ``tie_param_name``, ``tie_param``, ``tie_param_ci_lower``/``upper``, ``tie_prob_equal`` and
    ``log_likelihood`` (as ``analysis.ties.tie_ratings_table``). Raises ``ValueError`` for no
    battles, an unknown method, interval kind or anchor, or a disconnected comparison graph.
    """
    if method not in METHODS:
        raise ValueError(f"unknown rating method {method!r}; expected one of {', '.join(METHODS)}")
    if ci not in CI_METHODS:
        raise ValueError(f"unknown interval method {ci!r}; expected one of {', '.join(CI_METHODS)}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap rounds must be >= 0, got {bootstrap}")
    if ci == "bootstrap" and bootstrap > 0 and rng is None:
        raise ValueError("a numpy.random.Generator (rng) is needed for the bootstrap")
    if agg.n_battles == 0:
        raise ValueError("no battles to fit")
    counts = agg.num_battles()
    extras: dict[str, Any] = {"method": method, "ci": ci, "total_battles": agg.n_battles}
    rounds = bootstrap if ci == "bootstrap" else 0
    if method == "bt":
        if ci == "sandwich":
            s = sandwich_bt(agg, anchor=anchor)
            return summary_with_bounds(s.ratings, s.lower, s.upper, counts), extras
        point = fit_bt(agg, anchor=anchor)
        boot = (
            bootstrap_bt(agg, rounds, cast(np.random.Generator, rng), anchor=anchor, progress=progress)
            if rounds
            else None
        )
        return summarize(point, boot, counts), extras
    model: TieModel = method
    if ci == "sandwich":
        s, fit, (lo, hi) = sandwich_ties(agg, model=model, anchor=anchor)
        table = summary_with_bounds(s.ratings, s.lower, s.upper, counts)
    else:
        fit = fit_ties(agg, model=model, anchor=anchor)
        lo = hi = fit.tie_param
        boot = None
        if rounds:
            boot, params = bootstrap_ties(
                agg, rounds, cast(np.random.Generator, rng), model=model, anchor=anchor, progress=progress
            )
            lo, hi = tie_param_interval(params)
        table = summarize(fit.ratings, boot, counts)
    extras.update(fit.summary((lo, hi)))
    return table, extras


__all__ = [
    "CI_METHODS",
    "METHODS",
    "CiMethod",
    "Method",
    "aggregated_from_counts",
    "leaderboard_from_counts",
    "summary_with_bounds",
]
