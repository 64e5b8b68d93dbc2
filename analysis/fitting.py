"""The fitting toolkit shared by the rating models (Bradley–Terry, the tie models, style control).

- ``RatingScale``: the rating scale (``scale``·log_base odds, mean ``init_rating`` or an anchored
  model) and how fitted strengths are placed on it; ``ScaleKeywords`` are its keyword arguments as the
  public fitting functions accept them.
- The Bradley–Terry pair terms: ``logistic``, the per-pair sums ``pair_sum`` (a gradient) and
  ``pair_laplacian`` (a Hessian), ``pin_mean``, and ``BTPairs``, the penalised BT likelihood of
  normalised pair counts with its gradient and Hessian.
- ``damped_newton``, the solver of the tie and style models; ``l2_weight``, the tiny L2 penalty of
  every fit; ``single_thread_blas``.
- Bootstrap scaffolding: ``check_rounds``, ``cell_probabilities``/``split_cells`` (resampling the
  (pair, outcome) cells), ``sorted_series`` and ``median_ordered`` (the frames the rating tables take).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import pandas as pd

from analysis.aggregation import Aggregated

#: Inverse strength of the tiny L2 penalty on strengths, in scikit-learn's ``C`` convention (FastChat
#: fits ``LogisticRegression(fit_intercept=False, C=1e6)`` on duplicated battle rows).
DEFAULT_L2_C: float = 1e6

#: ``(MODEL, RATING)``: that model gets exactly that rating.
Anchor = tuple[str, float]


class ScaleKeywords(TypedDict, total=False):
    """The rating-scale keywords of the fitting functions (defaults: those of ``RatingScale``)."""

    scale: float
    base: float
    init_rating: float


@dataclass(frozen=True)
class RatingScale:
    """Where ratings live: a difference ``d`` means ``P(win) = 1 / (1 + base ** (-d / scale))``.

    Ratings average ``init_rating`` unless ``anchor=(MODEL, RATING)`` pins one model instead.
    """

    scale: float = 400.0
    base: float = 10.0
    init_rating: float = 1000.0
    anchor: Anchor | None = None

    @property
    def alpha(self) -> float:
        """Natural-log odds per rating point, ln(base) / scale."""
        return math.log(self.base) / self.scale

    @property
    def log_odds_factor(self) -> float:
        """Rating points per unit of natural-log odds, scale / ln(base)."""
        return self.scale / math.log(self.base)

    def win_probability(self, rating: np.ndarray | float, other: np.ndarray | float) -> np.ndarray | float:
        """P(a model rated ``rating`` beats one rated ``other``) (elementwise for arrays)."""
        return 1.0 / (1.0 + self.base ** ((other - rating) / self.scale))

    def check_anchor(self, models: Sequence[str]) -> None:
        """Raise if the anchor names a model outside ``models`` (the models with battles)."""
        if self.anchor is not None and self.anchor[0] not in models:
            known = ", ".join(models[:10]) + (" ..." if len(models) > 10 else "")
            raise ValueError(f"unknown anchor model {self.anchor[0]!r}; models with battles: {known}")

    def place(self, x: np.ndarray, models: Sequence[str], *, natural_log: bool = False) -> np.ndarray:
        """Ratings from strengths (last axis: models), centred on ``init_rating`` or anchored.

        ``x`` is in units of ``scale``, or with ``natural_log`` in natural-log odds units.
        """
        factor = self.log_odds_factor if natural_log else self.scale
        ratings = factor * np.asarray(x, dtype=np.float64)
        if self.anchor is not None:
            idx = list(models).index(self.anchor[0])
            ratings = ratings + (float(self.anchor[1]) - ratings[..., [idx]])
        else:
            ratings = ratings - ratings.mean(axis=-1, keepdims=True) + self.init_rating
        return ratings

    def bootstrap_frame(
        self, rows: np.ndarray, models: Sequence[str], *, natural_log: bool = False
    ) -> pd.DataFrame:
        """Bootstrap strengths (rounds x models) placed on the scale, as ``median_ordered`` orders them."""
        return median_ordered(self.place(rows, models, natural_log=natural_log), models)


def single_thread_blas() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS to one thread while fitting, when threadpoolctl is installed.

    scipy's L-BFGS-B and the Newton solvers call BLAS on tiny arrays; a multi-threaded OpenBLAS then
    spends far more time waking threads than computing (100x slower on a busy 2-core machine).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional speed-up only
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def l2_weight(l2_c: float, total: float, base: float | None = None) -> float:
    """The L2 weight on strengths for a loss normalised by ``total`` battles (0 for infinite ``l2_c``).

    scikit-learn minimises 0.5*|w|^2 + C * sum(loss over rows); FastChat's rows are every battle
    twice (a tie once as a win and once as a loss), i.e. twice our per-battle loss. Dividing by
    2*C*total gives the same minimiser for our per-battle loss normalised by total. The weight is for
    strengths in units of ``scale``; with ``base`` it is converted to natural-log strengths
    (``u = x·ln base``), which the tie and style models fit.
    """
    weight = 0.0 if not math.isfinite(l2_c) else 1.0 / (2.0 * l2_c * total)
    return weight if base is None else weight / math.log(base) ** 2


# --------------------------------------------------------------------------------------------------
# Pair terms: one implementation of the BT gradient and Hessian assembly
# --------------------------------------------------------------------------------------------------


def logistic(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^-z), written with tanh so that it never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def pair_sum(a: np.ndarray, b: np.ndarray, w: np.ndarray, m: int) -> np.ndarray:
    """Σ_k w_k (e_a − e_b) over pairs (or battles) ``k = (a_k, b_k)``: a vector over ``m`` models."""
    return np.bincount(a, weights=w, minlength=m) - np.bincount(b, weights=w, minlength=m)


def pair_laplacian(a: np.ndarray, b: np.ndarray, w: np.ndarray, m: int, ridge: float = 0.0) -> np.ndarray:
    """Σ_k w_k (e_a − e_b)(e_a − e_b)ᵀ + ridge·I, an ``m`` x ``m`` matrix (pairs may repeat)."""
    out = np.zeros(m * m)
    np.add.at(out, a * m + b, -w)
    np.add.at(out, b * m + a, -w)
    out[np.arange(m) * (m + 1)] += (
        np.bincount(a, weights=w, minlength=m) + np.bincount(b, weights=w, minlength=m) + ridge
    )
    return out.reshape(m, m)


def pin_mean(hess: np.ndarray, m: int) -> np.ndarray:
    """Add a rank-one term to the strengths block (the first ``m`` rows/columns) of ``hess``, in place.

    Strengths are identified up to a constant, so their Hessian is singular along ``1``; the term makes
    the system regular without changing a Newton step whose gradient has no component along ``1``.
    """
    hess[:m, :m] += max(float(np.trace(hess[:m, :m])), 1e-12) / (m * m)
    return hess


@dataclass(frozen=True)
class BTPairs:
    """The penalised Bradley–Terry negative log-likelihood of normalised pair counts.

    Pair ``k`` (models ``a[k]`` and ``b[k]``) has a share ``n[k]`` of all battles, of which the first
    model scored ``s[k]`` (wins + half the ties, as a share of all battles too), so tolerances do not
    depend on data size. Strengths ``x`` are in units of ``scale``; ``alpha = ln(base)`` turns their
    differences into log-odds. ``l2`` is the penalty weight (``l2_weight``).
    """

    a: np.ndarray
    b: np.ndarray
    n: np.ndarray
    s: np.ndarray
    alpha: float
    l2: float
    total: float

    @classmethod
    def from_counts(
        cls,
        agg: Aggregated,
        *,
        base: float,
        l2_c: float,
        weights: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> BTPairs:
        """The pairs of ``agg`` with its counts, or with ``weights`` = (wins_a, wins_b, ties) instead."""
        wins_a, wins_b, ties = weights if weights is not None else (agg.wins_a, agg.wins_b, agg.ties)
        n = (wins_a + wins_b + ties).astype(np.float64)
        total = float(n.sum())
        if total <= 0:
            raise ValueError("no battles to fit")
        s = (wins_a + 0.5 * ties).astype(np.float64) / total
        return cls(agg.a, agg.b, n / total, s, math.log(base), l2_weight(l2_c, total), total)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(first model of each pair wins) at strengths ``x``."""
        return logistic(self.alpha * (x[self.a] - x[self.b]))

    def objective(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and gradient at ``x`` (the form scipy's ``minimize(jac=True)`` takes)."""
        z = self.alpha * (x[self.a] - x[self.b])
        # -log p = logaddexp(0, -z), -log(1 - p) = logaddexp(0, z)
        loss = float(np.dot(self.s, np.logaddexp(0.0, -z)) + np.dot(self.n - self.s, np.logaddexp(0.0, z)))
        loss += 0.5 * self.l2 * float(np.dot(x, x))
        return loss, self.gradient(x, logistic(z))

    def gradient(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Gradient at ``x``, given the pairs' win probabilities ``p`` there."""
        grad = pair_sum(self.a, self.b, self.alpha * (self.n * p - self.s), x.size)
        grad += self.l2 * x
        return grad

    def hessian(self, p: np.ndarray, m: int) -> np.ndarray:
        """Hessian (mean pinned, see ``pin_mean``) given the pairs' win probabilities ``p``."""
        w = self.alpha * self.alpha * self.n * p * (1.0 - p)
        return pin_mean(pair_laplacian(self.a, self.b, w, m, ridge=self.l2), m)


# --------------------------------------------------------------------------------------------------
# Solver
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Bootstrap scaffolding and result frames
# --------------------------------------------------------------------------------------------------


def check_rounds(n_rounds: int) -> None:
    """Raise unless a bootstrap asks for at least one round."""
    if n_rounds < 1:
        raise ValueError(f"n_rounds must be positive, got {n_rounds}")


def cell_probabilities(agg: Aggregated) -> tuple[int, np.ndarray]:
    """Number of battles and the frequency of each (pair, outcome) cell: the multinomial a bootstrap
    round draws from (cells ordered as ``split_cells`` reads them)."""
    cells = np.concatenate([agg.wins_a, agg.wins_b, agg.ties]).astype(np.float64)
    return int(round(cells.sum())), cells / cells.sum()


def split_cells(draw: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wins_a, wins_b, ties) of ``k`` pairs from one draw over the cells of ``cell_probabilities``."""
    return draw[..., :k], draw[..., k : 2 * k], draw[..., 2 * k :]


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
