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
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.sparse import coo_matrix, csr_matrix
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

    same = _same_model(out["model_a"], out["model_b"])
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


def _shared_categories(a: pd.Series, b: pd.Series) -> pd.Index | None:
    """The categories of two categorical columns when they are the same (codes then compare)."""
    if (
        isinstance(a.dtype, pd.CategoricalDtype)
        and isinstance(b.dtype, pd.CategoricalDtype)
        and a.cat.categories.equals(b.cat.categories)
    ):
        return a.cat.categories
    return None


def _same_model(a: pd.Series, b: pd.Series) -> pd.Series:
    """Rows where model_a equals model_b, for plain and categorical columns alike."""
    if _shared_categories(a, b) is not None:
        ca, cb = a.cat.codes.to_numpy(), b.cat.codes.to_numpy()
        return pd.Series((ca == cb) & (ca >= 0), index=a.index)
    if isinstance(a.dtype, pd.CategoricalDtype) or isinstance(b.dtype, pd.CategoricalDtype):
        return pd.Series(a.to_numpy(dtype=object) == b.to_numpy(dtype=object), index=a.index)
    return a == b


def _model_codes(df: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sorted model names of a validated battle frame and each row's model_a / model_b index into them.

    Same result as ``sorted(set(model_a) | set(model_b))`` plus a dict lookup per row, but hashed once
    per distinct name (categorical columns need no hashing at all).
    """
    a, b = df["model_a"], df["model_b"]
    cats = _shared_categories(a, b)
    if cats is not None:
        ca = a.cat.codes.to_numpy().astype(np.int64)
        cb = b.cat.codes.to_numpy().astype(np.int64)
        names_index = cats
    else:
        codes, uniques = pd.factorize(pd.concat([a, b], ignore_index=True), use_na_sentinel=True)
        ca, cb = codes[: len(a)].astype(np.int64), codes[len(a) :].astype(np.int64)
        names_index = pd.Index(uniques)
    if len(ca) and min(int(ca.min()), int(cb.min())) < 0:
        raise ValueError("battle rows without a model name: validate the battles first")
    k = len(names_index)
    present = np.flatnonzero(np.bincount(ca, minlength=k) + np.bincount(cb, minlength=k))
    names = names_index[present].tolist()
    order = sorted(range(len(names)), key=names.__getitem__)
    remap = np.full(k, -1, dtype=np.int64)
    remap[present[order]] = np.arange(len(order), dtype=np.int64)
    return [names[i] for i in order], remap[ca], remap[cb]


#: Count pairs in a dense models x models table up to this size (else sort the pair keys).
_DENSE_PAIR_LIMIT = 1 << 20


def aggregate(df: pd.DataFrame) -> Aggregated:
    """Count wins and ties per unordered model pair of a validated battle frame."""
    models, ia, ib = _model_codes(df)
    winner = df["winner"]
    a_won = (winner == "model_a").to_numpy(dtype=bool, na_value=False)
    b_won = (winner == "model_b").to_numpy(dtype=bool, na_value=False)

    swap = ia > ib
    m = len(models)
    pair = np.minimum(ia, ib) * m + np.maximum(ia, ib)
    # outcome class per battle: 0 = first model of the pair (lower index) won, 1 = second won, 2 = tie
    outcome = np.where(a_won | b_won, np.where(swap, a_won, b_won), 2)
    if m * m <= _DENSE_PAIR_LIMIT:
        counts = np.bincount(pair * 3 + outcome, minlength=3 * m * m).reshape(m * m, 3)
        keys = np.flatnonzero(counts.any(axis=1))
        counts = counts[keys]
    else:
        keys, inverse = np.unique(pair, return_inverse=True)
        counts = np.bincount(inverse * 3 + outcome, minlength=3 * len(keys)).reshape(len(keys), 3)
    counts = counts.astype(np.int64)
    return Aggregated(
        models=models,
        a=(keys // m).astype(np.int64),
        b=(keys % m).astype(np.int64),
        wins_a=np.ascontiguousarray(counts[:, 0]),
        wins_b=np.ascontiguousarray(counts[:, 1]),
        ties=np.ascontiguousarray(counts[:, 2]),
    )


def num_battles(df: pd.DataFrame) -> pd.Series:
    """Number of battles each model took part in (index = model, sorted by name)."""
    cats = _shared_categories(df["model_a"], df["model_b"])
    if cats is not None:
        codes = np.concatenate([df["model_a"].cat.codes.to_numpy(), df["model_b"].cat.codes.to_numpy()])
        per_cat = np.bincount(codes[codes >= 0].astype(np.int64), minlength=len(cats))
        present = np.flatnonzero(per_cat)
        names = cats[present].tolist()
        order = sorted(range(len(names)), key=names.__getitem__)
        return pd.Series(
            per_cat[present[order]].astype(np.int64),
            index=pd.Index([names[i] for i in order], name="model"),
            name="num_battles",
        )
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
    """Fit BT strengths in units of ``scale`` (mean 0); ``weights`` overrides the counts (bootstrap).

    L-BFGS gets close; a few Newton steps then land on the optimum (see ``_newton_polish``).
    """
    wins_a, wins_b, ties = weights if weights is not None else (agg.wins_a, agg.wins_b, agg.ties)
    n = (wins_a + wins_b + ties).astype(np.float64)
    total = float(n.sum())
    if total <= 0:
        raise ValueError("no battles to fit")
    n_norm = n / total
    s_norm = (wins_a + 0.5 * ties).astype(np.float64) / total
    l2 = _l2_weight(l2_c, total)
    m = len(agg.models)
    start = np.zeros(m) if x0 is None else np.asarray(x0, dtype=np.float64)
    alpha = math.log(base)
    res = minimize(
        _bt_objective,
        start,
        args=(agg.a, agg.b, n_norm, s_norm, alpha, l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-11, "ftol": 1e-15, "maxcor": 20},
    )
    x = _newton_polish(res.x, agg.a, agg.b, n_norm, s_norm, alpha, l2)
    return x - x.mean()


def _l2_weight(l2_c: float, total: float) -> float:
    """The L2 weight on strengths for the loss normalised by ``total`` battles.

    scikit-learn minimises 0.5*|w|^2 + C * sum(loss over rows); FastChat's rows are every battle
    twice (a tie once as a win and once as a loss), i.e. twice our per-battle loss. Dividing by
    2*C*total gives the same minimiser for our per-battle loss normalised by total.
    """
    return 0.0 if not math.isfinite(l2_c) else 1.0 / (2.0 * l2_c * total)


#: Newton polishing solves a dense models x models system; above this many models L-BFGS alone fits.
_POLISH_MAX_MODELS = 1500


def _newton_polish(
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    n: np.ndarray,
    s: np.ndarray,
    alpha: float,
    l2: float,
    max_steps: int = 8,
) -> np.ndarray:
    """Newton steps from L-BFGS's answer to the exact optimum of the penalised likelihood.

    L-BFGS stops when the loss stops changing in the 15th digit, which leaves the gradient near 1e-9
    and ratings up to ~1e-4 points off; Newton from there converges in one or two steps. A step
    larger than 20 rating points means the point was not close (a model that never wins or loses,
    where the optimum sits far out on a flat likelihood): then L-BFGS's answer is kept as it is.
    """
    m = x.size
    if m < 2 or m > _POLISH_MAX_MODELS:
        return x
    current = np.array(x, dtype=np.float64)
    diag = np.arange(m) * (m + 1)
    grad_start = None
    for _ in range(max_steps):
        z = alpha * (current[a] - current[b])
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        g_pair = alpha * (n * p - s)
        grad = np.bincount(a, weights=g_pair, minlength=m) - np.bincount(b, weights=g_pair, minlength=m)
        grad += l2 * current
        if grad_start is None:
            grad_start = float(np.abs(grad).max())
        w = alpha * alpha * n * p * (1.0 - p)
        hess = np.zeros(m * m)
        np.add.at(hess, a * m + b, -w)
        np.add.at(hess, b * m + a, -w)
        hess[diag] += np.bincount(a, weights=w, minlength=m) + np.bincount(b, weights=w, minlength=m) + l2
        hess = hess.reshape(m, m)
        # strengths are identified up to a constant: pin the mean (the gradient has no such component)
        hess += float(np.trace(hess)) / (m * m)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return x
        size = float(np.abs(step).max())
        if not math.isfinite(size) or size > _POLISH_MAX_STEP:
            return x
        current -= step
        if size < 1e-13:
            break
    z = alpha * (current[a] - current[b])
    g_pair = alpha * (n * 0.5 * (1.0 + np.tanh(0.5 * z)) - s)
    grad = np.bincount(a, weights=g_pair, minlength=m) - np.bincount(b, weights=g_pair, minlength=m)
    grad += l2 * current
    if grad_start is not None and float(np.abs(grad).max()) > grad_start:
        return x
    return current


#: Largest Newton step (units of ``scale``) that polishing accepts: 0.05 x 400 = 20 rating points.
_POLISH_MAX_STEP = 0.05


def _damped_newton(
    derivatives: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]],
    loss: Callable[[np.ndarray], float],
    start: np.ndarray,
    m: int,
    *,
    feasible: Callable[[np.ndarray], bool] | None = None,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> np.ndarray:
    """Minimise a convex objective with damped Newton steps (Armijo backtracking).

    ``derivatives(p)`` gives the loss, gradient and (regular) Hessian at ``p``, ``loss(p)`` the loss
    alone. The first ``m`` parameters are strengths, re-centred to mean 0 after every step; a step to
    a point where ``feasible`` is false is shortened. Used by the tie (``analysis.ties``) and style
    (``analysis.style``) models.
    """
    p = np.array(start, dtype=np.float64)
    for _ in range(max_iter):
        f, g, h = derivatives(p)
        try:
            step = -np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(h, g, rcond=None)[0]
        slope = float(np.dot(g, step))
        if not slope < 0.0 or not np.all(np.isfinite(step)):
            step, slope = -g, -float(np.dot(g, g))
        size = float(np.max(np.abs(step))) if step.size else 0.0
        # converged: the step is tiny, or the predicted decrease is below rounding (ill-conditioned
        # directions, e.g. a model that never loses, then stop wandering in the noise)
        if size < tol or -slope < 1e-22:
            return p
        lr = 1.0
        while True:
            cand = p + lr * step
            cand[:m] -= cand[:m].mean()
            if feasible is None or feasible(cand):
                fc = loss(cand)
                # near the optimum the decrease drowns in rounding: trust a small full Newton step
                if fc <= f + 1e-4 * lr * slope or (lr == 1.0 and size < 1e-6 and fc <= f + 1e-12):
                    break
            lr *= 0.5
            if lr < 1e-12:
                return p  # no further decrease possible: numerical optimum
        p = cand
        if lr * size < tol:
            return p
    return p


def _place(
    x: np.ndarray,
    models: Sequence[str],
    scale: float,
    init_rating: float,
    anchor: tuple[str, float] | None,
    *,
    base: float | None = None,
) -> np.ndarray:
    """Turn mean-zero strengths into ratings, centred on init_rating or anchored.

    ``x`` is in units of ``scale``, or with ``base`` in natural-log units (``scale``·log_base scale).
    """
    factor = scale if base is None else scale / math.log(base)
    ratings = factor * np.asarray(x, dtype=np.float64)
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


def _median_ordered(rows: np.ndarray, models: Sequence[str]) -> pd.DataFrame:
    """Bootstrap ratings (rounds x models) as a frame, columns ordered by median rating (descending)."""
    boot = pd.DataFrame(rows, columns=list(models))
    boot.columns.name = "model"
    return boot[boot.median().sort_values(ascending=False, kind="stable").index]


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
    battles as n. Every round is fitted to its maximum-likelihood optimum (the same answer as fitting
    the round on its own with ``fit_bt``), all rounds side by side (see ``_bootstrap_units``). A round
    in which some group of models loses all links to the rest is still fitted (the L2 penalty keeps it
    finite), as FastChat does; this is rare unless a model has very few battles.
    """
    if n_rounds < 1:
        raise ValueError(f"n_rounds must be positive, got {n_rounds}")
    _check_anchor(agg, anchor)
    _check_connected(agg)
    with _single_thread_blas():
        rows = _bootstrap_units(agg, n_rounds, rng, base=base, l2_c=l2_c, progress=progress)
    return _median_ordered(_place(rows, agg.models, scale, init_rating, anchor), agg.models)


#: A batched round counts as fitted once its last step, and the estimated distance still to go, are
#: below this (units of ``scale``: 1e-10 x 400 = 4e-8 rating points).
_BOOT_TOL = 1e-10
#: Iterations of the batched fit before a round is handed to the one-round fit instead.
_BOOT_MAX_ITER = 60
#: Pair x round cells per batch (memory of the work arrays: ~8 bytes x this, a few times over).
_BOOT_CHUNK_CELLS = 1 << 19
#: Draw the multinomials on a worker thread when a run samples at least this many cells in all.
_BOOT_THREAD_CELLS = 1 << 21


def _bootstrap_units(
    agg: Aggregated,
    n_rounds: int,
    rng: np.random.Generator,
    *,
    base: float,
    l2_c: float,
    progress: bool = False,
) -> np.ndarray:
    """Bootstrap strengths in units of ``scale`` (each row mean 0), one row per round.

    The draws are ``rng.multinomial(total, pvals)`` for round 0, 1, ... in order, as a plain loop would
    make them (big runs make them on a worker thread, one batch ahead, while this thread fits). Rounds
    are fitted in batches by the iteration ``x <- x - P grad_r(x)``, where ``P`` is the inverse Hessian
    of the full data at the point estimate: a resample's Hessian differs from it by a few percent, so
    each iteration gains about a digit, with no per-round linear algebra and no exp() per pair (a pair's
    win probability is ``e_a / (e_a + e_b)`` with ``e = exp(alpha * x)`` per model). A round that does
    not settle quickly (a resample that drops most of a model's battles) is fitted on its own with
    ``_fit_bt_units`` instead; both give the optimum to far better than 1e-6 rating points.
    """
    m, k = len(agg.models), len(agg.a)
    cells = np.concatenate([agg.wins_a, agg.wins_b, agg.ties]).astype(np.float64)
    total = int(cells.sum())
    pvals = cells / cells.sum()
    chunk = max(1, min(n_rounds, _BOOT_CHUNK_CELLS // max(k, 1)))
    sizes = [min(chunk, n_rounds - start) for start in range(0, n_rounds, chunk)]
    threaded = n_rounds * 3 * k >= _BOOT_THREAD_CELLS
    rows = np.empty((n_rounds, m))
    with _multinomial_draws(rng, total, pvals, sizes, threaded) as draws:
        point = _fit_bt_units(agg, base=base, l2_c=l2_c)
        batch = _BatchFit.build(agg, point, base=base, l2_c=l2_c, total=total)
        bar = tqdm(total=n_rounds, desc="bootstrap", disable=not progress, leave=False)
        start = 0
        for counts in draws:
            r = len(counts)
            if batch is not None:
                x, ok = batch.fit(counts)
            else:
                x, ok = np.empty((r, m)), np.zeros(r, dtype=bool)
            for j in np.flatnonzero(~ok):
                draw = counts[j]
                x[j] = _fit_bt_units(
                    agg, base=base, l2_c=l2_c, x0=point, weights=(draw[:k], draw[k : 2 * k], draw[2 * k :])
                )
            rows[start : start + r] = x
            start += r
            bar.update(r)
        bar.close()
    return rows


@contextlib.contextmanager
def _multinomial_draws(
    rng: np.random.Generator, total: int, pvals: np.ndarray, sizes: list[int], threaded: bool
) -> Iterator[Iterator[np.ndarray]]:
    """Batches of ``rng.multinomial(total, pvals, size=s)`` for each ``s`` in ``sizes``, in order.

    With ``threaded`` one worker thread makes them, up to two batches ahead of the consumer (numpy
    releases the GIL while it samples). The generator is only ever used by one thread at a time and
    in the same order as a plain loop, so the draws are the same either way.
    """
    if not threaded:
        yield (rng.multinomial(total, pvals, size=s) for s in sizes)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bt-bootstrap-draws")
    pending: deque[Future[np.ndarray]] = deque()
    queue = iter(sizes)

    def submit() -> None:
        size = next(queue, None)
        if size is not None:
            pending.append(pool.submit(rng.multinomial, total, pvals, size))

    def batches() -> Iterator[np.ndarray]:
        while pending:
            counts = pending.popleft().result()
            submit()
            yield counts

    try:
        submit()
        submit()
        yield batches()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _BatchFit:
    """Fits many resamples of the same pairs at once (see ``_bootstrap_units``)."""

    a: np.ndarray
    b: np.ndarray
    incidence: csr_matrix  # models x pairs: +1 for the pair's first model, -1 for its second
    precond: np.ndarray  # models x models inverse Hessian (mean pinned) at the point estimate
    point: np.ndarray
    alpha: float
    l2: float
    total: float

    @classmethod
    def build(
        cls, agg: Aggregated, point: np.ndarray, *, base: float, l2_c: float, total: int
    ) -> _BatchFit | None:
        """Set up for ``agg`` around the point estimate; None when there are too many models."""
        m, k = len(agg.models), len(agg.a)
        if m < 2 or m > _POLISH_MAX_MODELS:
            return None
        alpha = math.log(base)
        l2 = _l2_weight(l2_c, float(total))
        n = (agg.wins_a + agg.wins_b + agg.ties).astype(np.float64) / total
        z = alpha * (point[agg.a] - point[agg.b])
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        w = alpha * alpha * n * p * (1.0 - p)
        hess = np.zeros(m * m)
        np.add.at(hess, agg.a * m + agg.b, -w)
        np.add.at(hess, agg.b * m + agg.a, -w)
        hess[np.arange(m) * (m + 1)] += (
            np.bincount(agg.a, weights=w, minlength=m) + np.bincount(agg.b, weights=w, minlength=m) + l2
        )
        hess = hess.reshape(m, m)
        hess += float(np.trace(hess)) / (m * m)
        try:
            precond = np.linalg.inv(hess)
        except np.linalg.LinAlgError:
            return None
        if not np.isfinite(precond).all():
            return None
        pairs = np.arange(k)
        incidence = csr_matrix(
            (np.concatenate([np.ones(k), -np.ones(k)]), (np.concatenate([agg.a, agg.b]), np.tile(pairs, 2))),
            shape=(m, k),
        )
        return cls(agg.a, agg.b, incidence, precond, point, alpha, l2, float(total))

    def fit(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Strengths (rounds x models, each row mean 0) for multinomial draws ``counts`` (rounds x 3K),
        and which rounds converged (the others are left for the one-round fit)."""
        k = len(self.a)
        rounds = len(counts)
        wins_a, wins_b, ties = counts[:, :k], counts[:, k : 2 * k], counts[:, 2 * k :]
        n = np.ascontiguousarray((wins_a + wins_b + ties).T, dtype=np.float64) / self.total
        # grad = alpha * D (n * p - s) + l2 x; the D s part is fixed per round
        fixed = self.incidence @ (
            np.ascontiguousarray((wins_a + 0.5 * ties).T, dtype=np.float64) / self.total
        )
        x = np.repeat(self.point[:, None], rounds, axis=1)
        out = np.empty_like(x)
        done = np.zeros(rounds, dtype=bool)
        active = np.arange(rounds)
        last = np.full(rounds, np.inf)
        ea, eb = np.empty((k, rounds)), np.empty((k, rounds))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for _ in range(_BOOT_MAX_ITER):
                if ea.shape[1] != len(active):
                    ea, eb = np.empty((k, len(active))), np.empty((k, len(active)))
                e = np.exp(self.alpha * x)
                np.take(e, self.a, axis=0, out=ea)
                np.take(e, self.b, axis=0, out=eb)
                eb += ea
                np.divide(ea, eb, out=ea)  # P(first model wins)
                ea *= n
                grad = self.incidence @ ea
                grad -= fixed
                grad *= self.alpha
                grad += self.l2 * x
                step = self.precond @ grad
                x -= step
                size = np.abs(step).max(axis=0)
                # linear convergence at rate q leaves at most size * q / (1 - q) to go
                rate = size / last
                left = np.where(rate < 1.0, size * rate / np.maximum(1.0 - rate, 1e-300), np.inf)
                settled = (size < _BOOT_TOL) & (left < _BOOT_TOL)
                broken = ~np.isfinite(size)
                last = size
                finished = settled | broken
                if finished.any():
                    idx = active[settled]
                    out[:, idx] = x[:, settled]
                    done[idx] = True
                    keep = ~finished
                    active, x, n, fixed, last = (
                        active[keep],
                        x[:, keep],
                        n[:, keep],
                        fixed[:, keep],
                        last[keep],
                    )
                    if len(active) == 0:
                        break
                    n, fixed, x = (
                        np.ascontiguousarray(n),
                        np.ascontiguousarray(fixed),
                        np.ascontiguousarray(x),
                    )
        out = out.T
        out -= out.mean(axis=1, keepdims=True)
        return out, done


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
    models, ia, ib = _model_codes(df)
    winner = df["winner"]
    a_won = (winner == "model_a").to_numpy(dtype=bool, na_value=False)
    b_won = (winner == "model_b").to_numpy(dtype=bool, na_value=False)
    score = np.where(a_won, 1.0, np.where(b_won, 0.0, 0.5))
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
    return _median_ordered(out, models)


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


def _check_bootstrap(bootstrap: int, rng: np.random.Generator | None) -> None:
    """Raise for a negative number of bootstrap rounds, or rounds without a generator."""
    if bootstrap < 0:
        raise ValueError(f"bootstrap rounds must be >= 0, got {bootstrap}")
    if bootstrap > 0 and rng is None:
        raise ValueError("a numpy.random.Generator (rng) is needed for the bootstrap")


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
    _check_bootstrap(bootstrap, rng)
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
