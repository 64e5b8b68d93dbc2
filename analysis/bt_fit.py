"""Bradley–Terry point fit: the penalised likelihood (``analysis.fitting.BTPairs``) minimised by L-BFGS
plus Newton polishing (``fit_bt``), and BT win-probability matrices (``predict_win_rate``).
"""

from __future__ import annotations

import math
from typing import Unpack

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.aggregation import Aggregated, check_connected
from analysis.fitting import (
    DEFAULT_L2_C,
    Anchor,
    BTPairs,
    RatingScale,
    ScaleKeywords,
    single_thread_blas,
    sorted_series,
)


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
    pairs = BTPairs.from_counts(agg, base=base, l2_c=l2_c, weights=weights)
    start = np.zeros(len(agg.models)) if x0 is None else np.asarray(x0, dtype=np.float64)
    res = minimize(
        pairs.objective,
        start,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-11, "ftol": 1e-15, "maxcor": 20},
    )
    x = _newton_polish(res.x, pairs)
    return x - x.mean()


#: Newton polishing solves a dense models x models system; above this many models L-BFGS alone fits.
POLISH_MAX_MODELS = 1500

#: Largest Newton step (units of ``scale``) that polishing accepts: 0.05 x 400 = 20 rating points.
_POLISH_MAX_STEP = 0.05


def _newton_polish(x: np.ndarray, pairs: BTPairs, max_steps: int = 8) -> np.ndarray:
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
    grad_start = None
    for _ in range(max_steps):
        p = pairs.probabilities(current)
        grad = pairs.gradient(current, p)
        if grad_start is None:
            grad_start = float(np.abs(grad).max())
        try:
            step = np.linalg.solve(pairs.hessian(p, m), grad)
        except np.linalg.LinAlgError:
            return x
        size = float(np.abs(step).max())
        if not math.isfinite(size) or size > _POLISH_MAX_STEP:
            return x
        current -= step
        if size < 1e-13:
            break
    grad = pairs.gradient(current, pairs.probabilities(current))
    if grad_start is not None and float(np.abs(grad).max()) > grad_start:
        return x
    return current


def fit_bt(
    agg: Aggregated,
    *,
    anchor: Anchor | None = None,
    l2_c: float = DEFAULT_L2_C,
    **scale: Unpack[ScaleKeywords],
) -> pd.Series:
    """Bradley–Terry maximum-likelihood ratings from aggregated pair counts.

    A tie counts as half a win for each side (Chatbot Arena convention). The likelihood gets the same
    tiny L2 penalty as FastChat's ``LogisticRegression(C=1e6)`` (``l2_c``; ``math.inf`` disables it),
    which keeps a model that never loses or never wins finite and changes other ratings by far less
    than 0.01. The model is identified up to a constant: without ``anchor`` the mean rating is
    ``init_rating``; with ``anchor=(MODEL, RATING)`` that model gets exactly RATING. ``scale``,
    ``base`` and ``init_rating`` default to ``RatingScale``'s 400, 10 and 1000. Raises ``ValueError``
    for an unknown anchor model or a disconnected comparison graph. Returns a Series indexed by model,
    sorted by rating descending.
    """
    rs = RatingScale(**scale, anchor=anchor)
    rs.check_anchor(agg.models)
    check_connected(agg)
    with single_thread_blas():
        x = fit_bt_units(agg, base=rs.base, l2_c=l2_c)
    return sorted_series(rs.place(x, agg.models), agg.models)


def predict_win_rate(ratings: pd.Series, *, scale: float = 400.0, base: float = 10.0) -> pd.DataFrame:
    """Matrix of BT win probabilities: entry (row, col) = P(row beats col); diagonal is 0.5."""
    r = ratings.to_numpy(dtype=np.float64)
    p = RatingScale(scale=scale, base=base).win_probability(r[:, None], r[None, :])
    return pd.DataFrame(p, index=ratings.index, columns=ratings.index)
