"""Leaderboard ratings from pairwise battles: Bradley–Terry (MLE + bootstrap) and online Elo.

Everything here is a pure function over pandas/numpy data; randomness comes in as a
``numpy.random.Generator``. Battle records use the FastChat vocabulary (``model_a``, ``model_b``,
``winner`` in {"model_a", "model_b", "tie", "tie (bothbad)"}). Ratings live on the Chatbot Arena
scale: a rating difference ``d`` means ``P(win) = 1 / (1 + base ** (-d / scale))`` (400·log10-odds).

Bradley–Terry fitting works on counts aggregated per unordered model pair, so the cost depends on the
number of pairs, not on the number of votes; the bootstrap resamples those counts with one
multinomial draw per round, which is exactly equivalent to resampling battles with replacement.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

WINNER_VALUES: tuple[str, ...] = ("model_a", "model_b", "tie", "tie (bothbad)")
TIE_VALUES: frozenset[str] = frozenset({"tie", "tie (bothbad)"})
REQUIRED_COLUMNS: tuple[str, ...] = ("model_a", "model_b", "winner")

#: Inverse strength of the tiny L2 penalty used by ``fit_bt``, in scikit-learn's ``C`` convention
#: (FastChat fits ``LogisticRegression(fit_intercept=False, C=1e6)`` on duplicated battle rows).
DEFAULT_L2_C: float = 1e6

SUMMARY_COLUMNS: tuple[str, ...] = ("model", "rating", "ci_lower", "ci_upper", "rank_ub", "num_battles")


# --------------------------------------------------------------------------------------------------
# Validation and aggregation
# --------------------------------------------------------------------------------------------------


def validate_battles(df: pd.DataFrame, *, self_battles: Literal["error", "drop"] = "error") -> pd.DataFrame:
    """Check a battle frame and return a clean copy (fresh index) that the rating functions accept.

    Raises ``ValueError`` for: no rows, missing ``model_a``/``model_b``/``winner`` columns, missing
    model names, winner values outside the FastChat vocabulary (the message lists the bad values and
    how many rows carry them), and rows where a model battles itself. ``self_battles="drop"`` removes
    such rows instead (WildVision-Bench's judge file contains baseline-vs-baseline rows, which the
    published fit skips).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"battles are missing required column(s): {', '.join(missing)}")
    if len(df) == 0:
        raise ValueError("no battles: the input is empty")

    out = df.reset_index(drop=True).copy()
    for col in ("model_a", "model_b"):
        null = out[col].isna()
        if null.any():
            raise ValueError(f"{int(null.sum())} battle row(s) have no {col}")

    bad = ~out["winner"].isin(WINNER_VALUES)
    if bad.any():
        counts = out.loc[bad, "winner"].astype(str).value_counts(dropna=False)
        shown = ", ".join(f"{value!r} ({n})" for value, n in counts.head(10).items())
        more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
        raise ValueError(
            f"unknown winner value(s) in {int(bad.sum())} row(s): {shown}{more}; "
            f"expected one of {', '.join(WINNER_VALUES)}"
        )

    same = out["model_a"] == out["model_b"]
    if same.any():
        if self_battles == "drop":
            out = out.loc[~same].reset_index(drop=True)
            if len(out) == 0:
                raise ValueError("no battles left after dropping rows where model_a == model_b")
        else:
            names = ", ".join(sorted(map(str, out.loc[same, "model_a"].unique()))[:5])
            raise ValueError(
                f"{int(same.sum())} row(s) have model_a == model_b (e.g. {names}); "
                "a model cannot battle itself (drop those rows: self_battles='drop', CLI --drop-self-battles)"
            )
    return out


@dataclass(frozen=True)
class Aggregated:
    """Battle outcomes counted per unordered model pair.

    ``models`` is sorted; pair ``k`` is ``(models[a[k]], models[b[k]])`` with ``a[k] < b[k]``, and
    ``wins_a``/``wins_b``/``ties`` count how often the first/second model won or the battle was a tie
    (both tie kinds), whatever side each model was shown on.
    """

    models: list[str]
    a: np.ndarray
    b: np.ndarray
    wins_a: np.ndarray
    wins_b: np.ndarray
    ties: np.ndarray

    @property
    def n_battles(self) -> int:
        """Total number of battles counted."""
        return int(self.wins_a.sum() + self.wins_b.sum() + self.ties.sum())

    def to_frame(self) -> pd.DataFrame:
        """The counts as a readable frame (one row per pair)."""
        names = np.asarray(self.models, dtype=object)
        return pd.DataFrame(
            {
                "model_a": names[self.a],
                "model_b": names[self.b],
                "wins_a": self.wins_a,
                "wins_b": self.wins_b,
                "ties": self.ties,
            }
        )

    def num_battles(self) -> pd.Series:
        """Battles per model (each battle counts for both of its models)."""
        n = self.wins_a + self.wins_b + self.ties
        per_model = np.bincount(self.a, weights=n, minlength=len(self.models)) + np.bincount(
            self.b, weights=n, minlength=len(self.models)
        )
        return pd.Series(
            per_model.astype(np.int64), index=pd.Index(self.models, name="model"), name="num_battles"
        )


def aggregate(df: pd.DataFrame) -> Aggregated:
    """Count wins and ties per unordered model pair of a validated battle frame."""
    models = sorted(set(df["model_a"]).union(df["model_b"]))
    index = {m: i for i, m in enumerate(models)}
    ia = df["model_a"].map(index).to_numpy(dtype=np.int64)
    ib = df["model_b"].map(index).to_numpy(dtype=np.int64)
    winner = df["winner"].to_numpy(dtype=object)
    a_won = winner == "model_a"
    b_won = winner == "model_b"
    tie = ~(a_won | b_won)

    swap = ia > ib
    lo = np.where(swap, ib, ia)
    hi = np.where(swap, ia, ib)
    lo_won = np.where(swap, b_won, a_won)
    hi_won = np.where(swap, a_won, b_won)

    m = len(models)
    keys, inverse = np.unique(lo * m + hi, return_inverse=True)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=mask.astype(np.float64), minlength=len(keys)).astype(np.int64)

    return Aggregated(
        models=models,
        a=(keys // m).astype(np.int64),
        b=(keys % m).astype(np.int64),
        wins_a=count(lo_won),
        wins_b=count(hi_won),
        ties=count(tie),
    )


def num_battles(df: pd.DataFrame) -> pd.Series:
    """Number of battles each model took part in (index = model, sorted by name)."""
    counts = pd.concat([df["model_a"], df["model_b"]], ignore_index=True).value_counts()
    counts = counts.sort_index().astype(np.int64)
    counts.index.name = "model"
    counts.name = "num_battles"
    return counts


def connected_groups(agg: Aggregated) -> list[list[str]]:
    """Groups of models linked directly or indirectly by at least one battle, largest first."""
    m = len(agg.models)
    played = (agg.wins_a + agg.wins_b + agg.ties) > 0
    graph = coo_matrix((np.ones(int(played.sum())), (agg.a[played], agg.b[played])), shape=(m, m))
    n_comp, labels = connected_components(graph, directed=False)
    groups = [[agg.models[i] for i in np.flatnonzero(labels == c)] for c in range(n_comp)]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def _check_connected(agg: Aggregated) -> None:
    """Raise if the comparison graph splits into groups whose ratings cannot be compared."""
    groups = connected_groups(agg)
    if len(groups) > 1:

        def show(group: list[str]) -> str:
            head = ", ".join(group[:6])
            return "{" + head + (f", ... ({len(group)} models)" if len(group) > 6 else "") + "}"

        raise ValueError(
            f"the comparison graph is disconnected into {len(groups)} groups that never battled each "
            f"other, so their ratings are not comparable: {'; '.join(show(g) for g in groups)}"
        )


# --------------------------------------------------------------------------------------------------
# Bradley–Terry
# --------------------------------------------------------------------------------------------------


def _bt_objective(
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    n: np.ndarray,
    s: np.ndarray,
    alpha: float,
    l2: float,
) -> tuple[float, np.ndarray]:
    """Penalised negative BT log-likelihood over pair counts and its gradient.

    ``x`` holds ratings in units of ``scale``; pair ``k`` has ``n[k]`` battles of which the first
    model scored ``s[k]`` (wins + half the ties). The loss is divided by ``n.sum()`` by the caller's
    choice of weights so that tolerances do not depend on data size.
    """
    z = alpha * (x[a] - x[b])
    # -log p = logaddexp(0, -z), -log(1 - p) = logaddexp(0, z)
    loss = float(np.dot(s, np.logaddexp(0.0, -z)) + np.dot(n - s, np.logaddexp(0.0, z)))
    p = 0.5 * (1.0 + np.tanh(0.5 * z))  # numerically safe sigmoid
    g_pair = alpha * (n * p - s)
    grad = np.bincount(a, weights=g_pair, minlength=x.size) - np.bincount(b, weights=g_pair, minlength=x.size)
    loss += 0.5 * l2 * float(np.dot(x, x))
    grad += l2 * x
    return loss, grad


def _single_thread_blas() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS to one thread while fitting, when threadpoolctl is installed.

    scipy's L-BFGS-B calls BLAS on tiny vectors; a multi-threaded OpenBLAS then spends far more time
    waking threads than computing (100x slower on a busy 2-core machine).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional speed-up only
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _fit_bt_units(
    agg: Aggregated,
    *,
    base: float,
    l2_c: float,
    x0: np.ndarray | None = None,
    weights: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Fit BT strengths in units of ``scale`` (mean 0); ``weights`` overrides the counts (bootstrap)."""
    wins_a, wins_b, ties = weights if weights is not None else (agg.wins_a, agg.wins_b, agg.ties)
    n = (wins_a + wins_b + ties).astype(np.float64)
    total = float(n.sum())
    if total <= 0:
        raise ValueError("no battles to fit")
    n_norm = n / total
    s_norm = (wins_a + 0.5 * ties).astype(np.float64) / total
    # scikit-learn minimises 0.5*|w|^2 + C * sum(loss over rows); FastChat's rows are every battle
    # twice (a tie once as a win and once as a loss), i.e. twice our per-battle loss. Dividing by
    # 2*C*total gives the same minimiser for our per-battle loss normalised by total.
    l2 = 0.0 if not math.isfinite(l2_c) else 1.0 / (2.0 * l2_c * total)
    m = len(agg.models)
    start = np.zeros(m) if x0 is None else np.asarray(x0, dtype=np.float64)
    res = minimize(
        _bt_objective,
        start,
        args=(agg.a, agg.b, n_norm, s_norm, math.log(base), l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-11, "ftol": 1e-15, "maxcor": 20},
    )
    x = res.x
    return x - x.mean()


def _place(
    x: np.ndarray, models: Sequence[str], scale: float, init_rating: float, anchor: tuple[str, float] | None
) -> np.ndarray:
    """Turn mean-zero strengths (units of ``scale``) into ratings, centred on init_rating or anchored."""
    ratings = scale * np.asarray(x, dtype=np.float64)
    if anchor is not None:
        idx = list(models).index(anchor[0])
        ratings = ratings + (float(anchor[1]) - ratings[..., [idx]])
    else:
        ratings = ratings - ratings.mean(axis=-1, keepdims=True) + init_rating
    return ratings


def _check_anchor(agg: Aggregated, anchor: tuple[str, float] | None) -> None:
    """Raise if the anchor names a model that has no battles."""
    if anchor is not None and anchor[0] not in agg.models:
        known = ", ".join(agg.models[:10]) + (" ..." if len(agg.models) > 10 else "")
        raise ValueError(f"unknown anchor model {anchor[0]!r}; models with battles: {known}")


def _sorted_series(values: np.ndarray, models: Sequence[str]) -> pd.Series:
    """A rating Series indexed by model, highest first (ties broken by name)."""
    s = pd.Series(
        np.asarray(values, dtype=np.float64), index=pd.Index(list(models), name="model"), name="rating"
    )
    order = sorted(range(len(models)), key=lambda i: (-s.iloc[i], models[i]))
    return s.iloc[order]


def fit_bt(
    agg: Aggregated,
    *,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    anchor: tuple[str, float] | None = None,
    l2_c: float = DEFAULT_L2_C,
) -> pd.Series:
    """Bradley–Terry maximum-likelihood ratings from aggregated pair counts.

    A tie counts as half a win for each side (Chatbot Arena convention). The likelihood gets the same
    tiny L2 penalty as FastChat's ``LogisticRegression(C=1e6)`` (``l2_c``; ``math.inf`` disables it),
    which keeps a model that never loses or never wins finite and changes other ratings by far less
    than 0.01. The model is identified up to a constant: without ``anchor`` the mean rating is
    ``init_rating``; with ``anchor=(MODEL, RATING)`` that model gets exactly RATING. Raises
    ``ValueError`` for an unknown anchor model or a disconnected comparison graph. Returns a Series
    indexed by model, sorted by rating descending.
    """
    _check_anchor(agg, anchor)
    _check_connected(agg)
    with _single_thread_blas():
        x = _fit_bt_units(agg, base=base, l2_c=l2_c)
    return _sorted_series(_place(x, agg.models, scale, init_rating, anchor), agg.models)


def bootstrap_bt(
    agg: Aggregated,
    n_rounds: int,
    rng: np.random.Generator,
    *,
    progress: bool = False,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    anchor: tuple[str, float] | None = None,
    l2_c: float = DEFAULT_L2_C,
) -> pd.DataFrame:
    """Bootstrap BT ratings: ``n_rounds`` × models, columns ordered by median rating (descending).

    Each round resamples all battles with replacement, done as one multinomial draw over the
    (pair, outcome) cells with the observed cell frequencies as probabilities and the number of
    battles as n. A round in which some group of models loses all links to the rest is still fitted
    (the L2 penalty keeps it finite), as FastChat does; this is rare unless a model has very few battles.
    """
    if n_rounds < 1:
        raise ValueError(f"n_rounds must be positive, got {n_rounds}")
    _check_anchor(agg, anchor)
    _check_connected(agg)
    cells = np.concatenate([agg.wins_a, agg.wins_b, agg.ties]).astype(np.float64)
    total = int(cells.sum())
    pvals = cells / cells.sum()
    k = len(agg.a)
    rows = np.empty((n_rounds, len(agg.models)))
    with _single_thread_blas():
        point = _fit_bt_units(agg, base=base, l2_c=l2_c)
        for r in tqdm(range(n_rounds), desc="bootstrap", disable=not progress, leave=False):
            draw = rng.multinomial(total, pvals)
            rows[r] = _fit_bt_units(
                agg, base=base, l2_c=l2_c, x0=point, weights=(draw[:k], draw[k : 2 * k], draw[2 * k :])
            )
    boot = pd.DataFrame(_place(rows, agg.models, scale, init_rating, anchor), columns=list(agg.models))
    boot.columns.name = "model"
    return boot[boot.median().sort_values(ascending=False, kind="stable").index]


def predict_win_rate(ratings: pd.Series, *, scale: float = 400.0, base: float = 10.0) -> pd.DataFrame:
    """Matrix of BT win probabilities: entry (row, col) = P(row beats col); diagonal is 0.5."""
    r = ratings.to_numpy(dtype=np.float64)
    p = 1.0 / (1.0 + base ** ((r[None, :] - r[:, None]) / scale))
    return pd.DataFrame(p, index=ratings.index, columns=ratings.index)


# --------------------------------------------------------------------------------------------------
# Online Elo
# --------------------------------------------------------------------------------------------------


def _elo_arrays(df: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Model list, model indices and first-model scores (1/0.5/0) of battles in time order."""
    if "tstamp" in df.columns:
        df = df.sort_values("tstamp", kind="stable", na_position="last")
    models = sorted(set(df["model_a"]).union(df["model_b"]))
    index = {m: i for i, m in enumerate(models)}
    ia = df["model_a"].map(index).to_numpy(dtype=np.int64)
    ib = df["model_b"].map(index).to_numpy(dtype=np.int64)
    winner = df["winner"].to_numpy(dtype=object)
    score = np.where(winner == "model_a", 1.0, np.where(winner == "model_b", 0.0, 0.5))
    return models, ia, ib, score


def online_elo(
    df: pd.DataFrame,
    *,
    k: float = 4.0,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
) -> pd.Series:
    """Classic online Elo over a validated battle frame, highest first.

    Battles are replayed in ``tstamp`` order when that column exists (stable sort, so equal or
    missing timestamps keep row order; missing ones go last), otherwise in row order. A tie scores
    0.5 for each side. Updates are zero-sum, so the mean rating stays ``init_rating``.
    """
    models, ia, ib, score = _elo_arrays(df)
    rating = [float(init_rating)] * len(models)
    for a, b, sa in zip(ia.tolist(), ib.tolist(), score.tolist(), strict=True):
        ea = 1.0 / (1.0 + base ** ((rating[b] - rating[a]) / scale))
        delta = k * (sa - ea)
        rating[a] += delta
        rating[b] -= delta
    return _sorted_series(np.array(rating), models)


def bootstrap_elo(
    df: pd.DataFrame,
    n_rounds: int,
    rng: np.random.Generator,
    *,
    progress: bool = False,
    k: float = 4.0,
    scale: float = 400.0,
    base: float = 10.0,
    init_rating: float = 1000.0,
    chunk_rounds: int = 200,
) -> pd.DataFrame:
    """Bootstrap online Elo: ``n_rounds`` × models, columns ordered by median rating (descending).

    Each round resamples battles with replacement but replays them in time order (no shuffling):
    a battle drawn ``c`` times is applied ``c`` times at its place in the sequence. All rounds run
    side by side as vectors, so the cost is one pass over the battles per ``chunk_rounds`` rounds.
    """
    if n_rounds < 1:
        raise ValueError(f"n_rounds must be positive, got {n_rounds}")
    models, ia, ib, score = _elo_arrays(df)
    n = len(ia)
    out = np.empty((n_rounds, len(models)))
    starts = list(range(0, n_rounds, chunk_rounds))
    for start in tqdm(starts, desc="bootstrap", disable=not progress, leave=False):
        r = min(chunk_rounds, n_rounds - start)
        counts = np.zeros((n, r), dtype=np.int32)
        for j in range(r):
            counts[:, j] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        rating = np.full((r, len(models)), float(init_rating))
        max_count = counts.max(axis=1)
        for t in range(n):
            a, b, sa = ia[t], ib[t], score[t]
            for rep in range(int(max_count[t])):
                active = counts[t] > rep
                ea = 1.0 / (1.0 + base ** ((rating[:, b] - rating[:, a]) / scale))
                delta = np.where(active, k * (sa - ea), 0.0)
                rating[:, a] += delta
                rating[:, b] -= delta
        out[start : start + r] = rating
    boot = pd.DataFrame(out, columns=models)
    boot.columns.name = "model"
    return boot[boot.median().sort_values(ascending=False, kind="stable").index]


# --------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------


def rank_upper_bound(lower: Iterable[float], upper: Iterable[float]) -> np.ndarray:
    """Chatbot Arena's rank (UB): 1 + number of models whose lower bound is above this upper bound."""
    lo = np.asarray(list(lower), dtype=np.float64)
    hi = np.asarray(list(upper), dtype=np.float64)
    return 1 + (lo[None, :] > hi[:, None]).sum(axis=1)


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
        q = boot[models].quantile([0.025, 0.975])
        lower = q.iloc[0].to_numpy(dtype=np.float64)
        upper = q.iloc[1].to_numpy(dtype=np.float64)
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


def ratings_table(
    df: pd.DataFrame,
    *,
    method: Literal["bt", "elo"] = "bt",
    bootstrap: int = 0,
    rng: np.random.Generator | None = None,
    anchor: tuple[str, float] | None = None,
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
    if bootstrap < 0:
        raise ValueError(f"bootstrap rounds must be >= 0, got {bootstrap}")
    if bootstrap > 0 and rng is None:
        raise ValueError("a numpy.random.Generator (rng) is needed for the bootstrap")
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
    "TIE_VALUES",
    "WINNER_VALUES",
    "Aggregated",
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
