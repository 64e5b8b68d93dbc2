"""Bradley–Terry point fit: the penalised likelihood, L-BFGS plus Newton polishing (``fit_bt``), the
damped Newton solver shared with the tie and style models, placing strengths on the rating scale
(centre or anchor), and BT win-probability matrices (``predict_win_rate``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.aggregation import Aggregated, check_connected

#: Inverse strength of the tiny L2 penalty used by ``fit_bt``, in scikit-learn's ``C`` convention
#: (FastChat fits ``LogisticRegression(fit_intercept=False, C=1e6)`` on duplicated battle rows).
DEFAULT_L2_C: float = 1e6


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


def single_thread_blas() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS to one thread while fitting, when threadpoolctl is installed.

    scipy's L-BFGS-B calls BLAS on tiny vectors; a multi-threaded OpenBLAS then spends far more time
    waking threads than computing (100x slower on a busy 2-core machine).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional speed-up only
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def fit_bt_units(
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
    l2 = l2_weight(l2_c, total)
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


def l2_weight(l2_c: float, total: float) -> float:
    """The L2 weight on strengths for the loss normalised by ``total`` battles.

    scikit-learn minimises 0.5*|w|^2 + C * sum(loss over rows); FastChat's rows are every battle
    twice (a tie once as a win and once as a loss), i.e. twice our per-battle loss. Dividing by
    2*C*total gives the same minimiser for our per-battle loss normalised by total.
    """
    return 0.0 if not math.isfinite(l2_c) else 1.0 / (2.0 * l2_c * total)


#: Newton polishing solves a dense models x models system; above this many models L-BFGS alone fits.
POLISH_MAX_MODELS = 1500


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
    if m < 2 or m > POLISH_MAX_MODELS:
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


def damped_newton(
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


def place(
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


def check_anchor(agg: Aggregated, anchor: tuple[str, float] | None) -> None:
    """Raise if the anchor names a model that has no battles."""
    if anchor is not None and anchor[0] not in agg.models:
        known = ", ".join(agg.models[:10]) + (" ..." if len(agg.models) > 10 else "")
        raise ValueError(f"unknown anchor model {anchor[0]!r}; models with battles: {known}")


def sorted_series(values: np.ndarray, models: Sequence[str]) -> pd.Series:
    """A rating Series indexed by model, highest first (ties broken by name)."""
    s = pd.Series(
        np.asarray(values, dtype=np.float64), index=pd.Index(list(models), name="model"), name="rating"
    )
    order = sorted(range(len(models)), key=lambda i: (-s.iloc[i], models[i]))
    return s.iloc[order]


def median_ordered(rows: np.ndarray, models: Sequence[str]) -> pd.DataFrame:
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
    check_anchor(agg, anchor)
    check_connected(agg)
    with single_thread_blas():
        x = fit_bt_units(agg, base=base, l2_c=l2_c)
    return sorted_series(place(x, agg.models, scale, init_rating, anchor), agg.models)


def predict_win_rate(ratings: pd.Series, *, scale: float = 400.0, base: float = 10.0) -> pd.DataFrame:
    """Matrix of BT win probabilities: entry (row, col) = P(row beats col); diagonal is 0.5."""
    r = ratings.to_numpy(dtype=np.float64)
    p = 1.0 / (1.0 + base ** ((r[None, :] - r[:, None]) / scale))
    return pd.DataFrame(p, index=ratings.index, columns=ratings.index)
