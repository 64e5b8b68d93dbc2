"""Derived tables for the leaderboard report: win-rate matrices, battle counts, vote counts, history.

Pure functions over a battle frame (columns ``model_a``, ``model_b``, ``winner`` in the FastChat
vocabulary, optional ``tstamp`` in unix seconds) or over ``ratings.Aggregated`` counts. Matrices are
square frames indexed by model on both axes. Model order is consistent everywhere: by rating
(highest first, ties by name) when ratings are given through ``order``, otherwise by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

from analysis.ratings import (
    Aggregated,
    aggregate,
    connected_groups,
    fit_bt,
    predict_win_rate,
    validate_battles,
)
from storage.vocabulary import TIE, TIE_BOTHBAD, WIN_A, WIN_B

#: ``order`` arguments: a rating Series (sorted by value, highest first) or model names in order.
Order = pd.Series | Iterable[str] | None


def model_order(models: Iterable[str], order: Order = None) -> list[str]:
    """The display order of ``models``: by ``order`` first, then any remaining models by name.

    ``order`` may be a rating Series indexed by model (highest rating first, equal ratings by name)
    or a sequence of model names; models in ``order`` but not in ``models`` are left out.
    """
    present = set(models)
    if order is None:
        ranked: list[str] = []
    elif isinstance(order, pd.Series):
        values = order.astype(np.float64)
        ranked = [str(m) for m in sorted(values.index, key=lambda m: (-values[m], str(m)))]
    else:
        ranked = [str(m) for m in order]
    seen: set[str] = set()
    out: list[str] = []
    for m in ranked:
        if m in present and m not in seen:
            out.append(m)
            seen.add(m)
    out.extend(sorted(present - seen))
    return out


def _as_aggregated(data: pd.DataFrame | Aggregated) -> Aggregated:
    """Aggregated counts from a battle frame (validated here) or pass ``Aggregated`` through."""
    if isinstance(data, Aggregated):
        return data
    return aggregate(validate_battles(data))


def _pair_matrices(agg: Aggregated) -> tuple[np.ndarray, np.ndarray]:
    """``wins[i, j]`` = battles model i won against model j; ``ties[i, j]`` symmetric tie counts."""
    m = len(agg.models)
    wins = np.zeros((m, m), dtype=np.int64)
    ties = np.zeros((m, m), dtype=np.int64)
    np.add.at(wins, (agg.a, agg.b), agg.wins_a)
    np.add.at(wins, (agg.b, agg.a), agg.wins_b)
    np.add.at(ties, (agg.a, agg.b), agg.ties)
    np.add.at(ties, (agg.b, agg.a), agg.ties)
    return wins, ties


def _square(values: np.ndarray, models: list[str], order: Order) -> pd.DataFrame:
    """A models × models frame in display order."""
    frame = pd.DataFrame(
        values, index=pd.Index(models, name="model"), columns=pd.Index(models, name="opponent")
    )
    ordered = model_order(models, order)
    return frame.loc[ordered, ordered]


def predicted_win_rate_matrix(
    ratings: pd.Series | pd.DataFrame, *, scale: float = 400.0, base: float = 10.0
) -> pd.DataFrame:
    """Bradley–Terry win probabilities: entry (row, col) = P(row beats col), diagonal 0.5.

    ``ratings`` is a Series indexed by model or a leaderboard frame with ``model`` and ``rating``
    columns; models are ordered by rating, highest first.
    """
    if isinstance(ratings, pd.DataFrame):
        series = pd.Series(ratings["rating"].to_numpy(dtype=np.float64), index=ratings["model"].astype(str))
    else:
        series = ratings.astype(np.float64)
    ordered = model_order(series.index, series)
    matrix = predict_win_rate(series.loc[ordered], scale=scale, base=base)
    matrix.index = pd.Index(ordered, name="model")
    matrix.columns = pd.Index(ordered, name="opponent")
    return matrix


def observed_win_fraction(data: pd.DataFrame | Aggregated, *, order: Order = None) -> pd.DataFrame:
    """Share of decisive battles the row model won against the column model (ties excluded).

    NaN where the pair had no decisive battle (and on the diagonal). Rows and columns follow
    ``order`` (see ``model_order``), else model name.
    """
    agg = _as_aggregated(data)
    wins, _ = _pair_matrices(agg)
    decisive = (wins + wins.T).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(decisive > 0, wins / np.where(decisive > 0, decisive, 1.0), np.nan)
    return _square(frac, agg.models, order)


def battle_count_matrix(data: pd.DataFrame | Aggregated, *, order: Order = None) -> pd.DataFrame:
    """Battles per model pair, ties included; symmetric, zero on the diagonal."""
    agg = _as_aggregated(data)
    wins, ties = _pair_matrices(agg)
    return _square(wins + wins.T + ties, agg.models, order)


def vote_counts(df: pd.DataFrame, *, order: Order = None) -> pd.DataFrame:
    """Per-model outcome counts: ``model, battles, wins, losses, ties, bothbad``.

    ``ties`` counts "tie" votes and ``bothbad`` counts "tie (bothbad)" votes, so
    ``battles = wins + losses + ties + bothbad``.
    """
    clean = validate_battles(df)
    winner = clean["winner"]
    sides = []
    for side, won, lost in (("model_a", WIN_A, WIN_B), ("model_b", WIN_B, WIN_A)):
        sides.append(
            pd.DataFrame(
                {
                    "model": clean[side].astype(str),
                    "wins": winner == won,
                    "losses": winner == lost,
                    "ties": winner == TIE,
                    "bothbad": winner == TIE_BOTHBAD,
                }
            )
        )
    long = pd.concat(sides, ignore_index=True)
    counts = long.groupby("model", sort=True)[["wins", "losses", "ties", "bothbad"]].sum().astype(np.int64)
    counts.insert(0, "battles", counts.sum(axis=1))
    counts = counts.loc[model_order(counts.index, order)]
    return counts.rename_axis("model").reset_index()


# --------------------------------------------------------------------------------------------------
# Ratings over time
# --------------------------------------------------------------------------------------------------


def _period_ends(tstamp: np.ndarray, freq: str | int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Period end times (UTC) and, for each, how many of the sorted timestamps fall before it.

    A string ``freq`` is a pandas offset alias ("D", "W", "MS", "h", ...): calendar periods, each
    labelled by its (exclusive) end. An integer splits [first, last] into that many equal spans,
    each labelled by its (inclusive) end.
    """
    n = len(tstamp)
    if isinstance(freq, bool) or not isinstance(freq, (str, int, np.integer)):
        raise ValueError(f"freq must be a pandas offset alias or a number of periods, got {freq!r}")
    if isinstance(freq, str):
        times = pd.to_datetime(tstamp, unit="s", utc=True)
        try:
            sizes = (
                pd.Series(np.ones(n, dtype=np.int64), index=times)
                .resample(freq, closed="left", label="right")
                .sum()
            )
        except ValueError as exc:
            raise ValueError(f"invalid period frequency {freq!r}: {exc}") from None
        return pd.DatetimeIndex(sizes.index), np.cumsum(sizes.to_numpy(dtype=np.int64))
    periods = int(freq)
    if periods < 1:
        raise ValueError(f"the number of periods must be positive, got {periods}")
    lo, hi = float(tstamp[0]), float(tstamp[-1])
    edges = np.linspace(lo, hi, periods + 1)[1:]
    cum = np.searchsorted(tstamp, edges, side="right").astype(np.int64)
    cum[-1] = n
    return pd.DatetimeIndex(pd.to_datetime(edges, unit="s", utc=True)), cum


def ratings_over_time(
    df: pd.DataFrame,
    *,
    freq: str | int = "D",
    method: Literal["elo", "bt"] = "elo",
    k: float = 4.0,
    anchor: tuple[str, float] | None = None,
    min_battles: int = 0,
) -> pd.DataFrame:
    """Rating of every model at the end of each period, from all battles up to that point.

    Needs a ``tstamp`` column (unix seconds); rows without a timestamp are left out. ``freq`` is a
    pandas offset alias (calendar periods, labelled by their end) or a number of equal time spans.
    ``method="elo"`` gives exactly ``online_elo`` on the battles so far (replayed once, sampled at
    period ends); ``method="bt"`` refits ``fit_bt`` on the cumulative counts, and while the
    comparison graph is still split only the largest connected group is rated. A model is NaN before
    its first battle, and also while it has fewer than ``min_battles`` battles (early fits on a handful
    of votes swing wildly; the model is still fitted, only hidden). With ``anchor`` a whole period is
    NaN until the anchor model is shown.

    Returns a frame indexed by period end (UTC, ``period_end``), one column per model, ordered by
    the last period's rating (highest first).
    """
    if method not in ("elo", "bt"):
        raise ValueError(f"unknown rating method {method!r}; expected 'elo' or 'bt'")
    if "tstamp" not in df.columns:
        raise ValueError("ratings over time need a 'tstamp' column (battle time, unix seconds)")
    clean = validate_battles(df)
    tstamp = pd.to_numeric(clean["tstamp"], errors="coerce").astype(np.float64)
    clean = clean.loc[tstamp.notna().to_numpy()]
    if len(clean) == 0:
        raise ValueError("ratings over time need timestamps, but no battle has a valid 'tstamp'")
    clean = clean.assign(tstamp=tstamp.loc[clean.index]).sort_values("tstamp", kind="stable")
    ends, cum = _period_ends(clean["tstamp"].to_numpy(dtype=np.float64), freq)

    models = sorted(set(clean["model_a"].astype(str)).union(clean["model_b"].astype(str)))
    index = {m: i for i, m in enumerate(models)}
    ia = clean["model_a"].astype(str).map(index).to_numpy(dtype=np.int64)
    ib = clean["model_b"].astype(str).map(index).to_numpy(dtype=np.int64)
    winner = clean["winner"].to_numpy(dtype=object)
    if method == "elo":
        values = _elo_history(ia, ib, winner, cum, len(models), k=k)
    else:
        values = _bt_history(ia, ib, winner, cum, models)

    if min_battles > 0:
        values[_battles_so_far(ia, ib, cum, len(models)) < min_battles] = np.nan
    out = pd.DataFrame(
        values, index=pd.Index(ends, name="period_end"), columns=pd.Index(models, name="model")
    )
    if anchor is not None:
        if anchor[0] not in out.columns:
            raise ValueError(f"unknown anchor model {anchor[0]!r}")
        out = out.sub(out[anchor[0]], axis=0) + float(anchor[1])
    last = out.ffill().iloc[-1]
    return out[model_order(models, last)]


def _battles_so_far(ia: np.ndarray, ib: np.ndarray, cum: np.ndarray, m: int) -> np.ndarray:
    """``counts[p, i]`` = battles of model i among the first ``cum[p]`` battles."""
    counts = np.zeros((len(cum), m), dtype=np.int64)
    start = 0
    for p, stop in enumerate(cum.tolist()):
        counts[p] = np.bincount(ia[start:stop], minlength=m) + np.bincount(ib[start:stop], minlength=m)
        start = stop
    return np.cumsum(counts, axis=0)


def _elo_history(
    ia: np.ndarray, ib: np.ndarray, winner: np.ndarray, cum: np.ndarray, m: int, *, k: float
) -> np.ndarray:
    """Online Elo (as ``ratings.online_elo``) replayed once, sampled after ``cum[p]`` battles."""
    scale, base, init = 400.0, 10.0, 1000.0
    score = np.where(winner == WIN_A, 1.0, np.where(winner == WIN_B, 0.0, 0.5)).tolist()
    rating = [init] * m
    first_seen = np.full(m, np.iinfo(np.int64).max)
    np.minimum.at(first_seen, ia, np.arange(len(ia)))
    np.minimum.at(first_seen, ib, np.arange(len(ib)))
    out = np.full((len(cum), m), np.nan)
    t = 0
    a_list, b_list = ia.tolist(), ib.tolist()
    for p, stop in enumerate(cum.tolist()):
        while t < stop:
            a, b = a_list[t], b_list[t]
            ea = 1.0 / (1.0 + base ** ((rating[b] - rating[a]) / scale))
            delta = k * (score[t] - ea)
            rating[a] += delta
            rating[b] -= delta
            t += 1
        seen = first_seen < stop
        out[p, seen] = np.asarray(rating)[seen]
    return out


def _bt_history(
    ia: np.ndarray, ib: np.ndarray, winner: np.ndarray, cum: np.ndarray, models: list[str]
) -> np.ndarray:
    """``fit_bt`` on the cumulative pair counts at each period end (largest connected group)."""
    m = len(models)
    a_won = winner == WIN_A
    b_won = winner == WIN_B
    swap = ia > ib
    lo, hi = np.where(swap, ib, ia), np.where(swap, ia, ib)
    lo_won = np.where(swap, b_won, a_won).astype(np.float64)
    hi_won = np.where(swap, a_won, b_won).astype(np.float64)
    tie = (~(a_won | b_won)).astype(np.float64)
    keys, inverse = np.unique(lo * m + hi, return_inverse=True)
    key_a, key_b = keys // m, keys % m
    position = {name: i for i, name in enumerate(models)}
    out = np.full((len(cum), m), np.nan)
    previous: tuple[int, np.ndarray] | None = None
    for p, stop in enumerate(cum.tolist()):
        if stop == 0:
            continue
        if previous is not None and previous[0] == stop:
            out[p] = previous[1]
            continue
        inv = inverse[:stop]

        def count(weights: np.ndarray, inv: np.ndarray = inv, stop: int = stop) -> np.ndarray:
            return np.bincount(inv, weights=weights[:stop], minlength=len(keys)).astype(np.int64)

        wa, wb, wt = count(lo_won), count(hi_won), count(tie)
        played = (wa + wb + wt) > 0
        present = np.unique(np.concatenate([key_a[played], key_b[played]]))
        remap = np.full(m, -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        agg = Aggregated(
            models=[models[i] for i in present],
            a=remap[key_a[played]],
            b=remap[key_b[played]],
            wins_a=wa[played],
            wins_b=wb[played],
            ties=wt[played],
        )
        groups = connected_groups(agg)
        if len(groups) > 1:
            agg = _restrict(agg, set(groups[0]))
        point = fit_bt(agg)
        row = np.full(m, np.nan)
        row[[position[name] for name in point.index]] = point.to_numpy()
        out[p] = row
        previous = (stop, row)
    return out


def _restrict(agg: Aggregated, keep: set[str]) -> Aggregated:
    """The counts among the models in ``keep`` only."""
    names = [m for m in agg.models if m in keep]
    remap = np.full(len(agg.models), -1, dtype=np.int64)
    remap[[i for i, m in enumerate(agg.models) if m in keep]] = np.arange(len(names))
    mask = (remap[agg.a] >= 0) & (remap[agg.b] >= 0)
    return Aggregated(
        models=names,
        a=remap[agg.a[mask]],
        b=remap[agg.b[mask]],
        wins_a=agg.wins_a[mask],
        wins_b=agg.wins_b[mask],
        ties=agg.ties[mask],
    )


__all__ = [
    "battle_count_matrix",
    "model_order",
    "observed_win_fraction",
    "predicted_win_rate_matrix",
    "ratings_over_time",
    "vote_counts",
]
