"""Tie-aware paired-comparison ratings: Davidson (1970) and Rao–Kupper (1967).

Plain Bradley–Terry (``analysis.ratings.fit_bt``) counts a tie as half a win each way. The models here
give ties their own probability instead, with one extra parameter fitted from the data. With strengths
``π_i = exp(u_i)``:

- **Davidson**: ``P(i beats j) = π_i / (π_i + π_j + ν·√(π_i π_j))``, ``P(tie) = ν·√(π_i π_j) / (same)``,
  ``ν ≥ 0``. Two equally strong models tie with probability ``ν / (2 + ν)``; ``ν = 0`` is plain BT.
- **Rao–Kupper**: ``P(i beats j) = π_i / (π_i + θ·π_j)``, ``P(tie) = (θ² − 1)·π_i·π_j /
  ((π_i + θ·π_j)(θ·π_i + π_j))``, ``θ ≥ 1``. Equal models tie with probability ``(θ − 1) / (θ + 1)``;
  ``θ = 1`` is plain BT.

In both, the odds of a decisive result are ``π_i / π_j``, so ratings sit on the same scale as
``fit_bt``: ``rating = scale · log_base(π)``, i.e. a difference ``d`` means ``P(i beats j | not a tie) =
1 / (1 + base ** (-d / scale))`` (400·log10-odds), mean ``init_rating`` unless anchored. Both tie kinds
("tie", "tie (bothbad)") count as ties.

The fit maximises the likelihood of the pair counts in ``Aggregated`` with damped Newton steps (the
negative log-likelihood is convex in the log-strengths and in ``log ν`` resp. ``log θ``), with the same
tiny L2 penalty on the strengths as ``fit_bt`` so that a model that never loses stays finite. The
bootstrap resamples the (pair, outcome) cells with one multinomial draw per round, exactly like
``bootstrap_bt``, so ``summarize`` and the rank (UB) work unchanged on its output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Unpack

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.aggregation import check_connected
from analysis.fitting import (
    DEFAULT_L2_C,
    Anchor,
    RatingScale,
    ScaleKeywords,
    cell_probabilities,
    check_rounds,
    damped_newton,
    l2_weight,
    pair_laplacian,
    pair_sum,
    pin_mean,
    single_thread_blas,
    sorted_series,
    split_cells,
)
from analysis.rating_summary import check_bootstrap
from analysis.ratings import Aggregated, aggregate, num_battles, summarize, validate_battles

TieModel = Literal["davidson", "rao-kupper"]
TIE_MODELS: tuple[str, ...] = ("davidson", "rao-kupper")

#: Name of the tie parameter of each model (for tables and JSON).
TIE_PARAM_NAMES: dict[str, str] = {"davidson": "nu", "rao-kupper": "theta"}


@dataclass(frozen=True)
class TieFit:
    """A fitted tie-aware model.

    ``ratings``: Series indexed by model, highest first (400·log10 scale). ``tie_param``: ν for
    Davidson, θ for Rao–Kupper. ``log_likelihood``: natural-log likelihood of the observed battles
    (multinomial coefficient left out, L2 penalty not included).
    """

    ratings: pd.Series
    tie_param: float
    model: str
    log_likelihood: float

    @property
    def tie_param_name(self) -> str:
        """``"nu"`` (Davidson) or ``"theta"`` (Rao–Kupper)."""
        return TIE_PARAM_NAMES[self.model]

    @property
    def tie_prob_equal(self) -> float:
        """Probability that two equally strong models tie under the fitted model."""
        return tie_prob_equal(self.model, self.tie_param)

    def summary(self, interval: tuple[float, float] | None = None) -> dict[str, object]:
        """The fit as leaderboards report it: ``tie_model``, ``tie_param_name`` (nu/theta),
        ``tie_param``, its ``interval`` as ``tie_param_ci_lower``/``tie_param_ci_upper`` (both the point
        when there is none), ``tie_prob_equal`` and ``log_likelihood``."""
        lo, hi = interval if interval is not None else (self.tie_param, self.tie_param)
        return {
            "tie_model": self.model,
            "tie_param_name": self.tie_param_name,
            "tie_param": self.tie_param,
            "tie_param_ci_lower": lo,
            "tie_param_ci_upper": hi,
            "tie_prob_equal": self.tie_prob_equal,
            "log_likelihood": self.log_likelihood,
        }


def tie_prob_equal(model: str, tie_param: float) -> float:
    """P(tie) between two equally strong models: ν/(2+ν) (Davidson) or (θ−1)/(θ+1) (Rao–Kupper)."""
    _check_model(model)
    if model == "davidson":
        return float(tie_param / (2.0 + tie_param))
    return float((tie_param - 1.0) / (tie_param + 1.0))


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _check_model(model: str) -> None:
    if model not in TIE_MODELS:
        raise ValueError(f"unknown tie model {model!r}; expected one of {', '.join(TIE_MODELS)}")


def _check_input(agg: Aggregated, rs: RatingScale) -> None:
    """Raise for no battles, no decisive battle, an unknown anchor or a disconnected comparison graph."""
    if len(agg.models) == 0 or agg.n_battles == 0:
        raise ValueError("no battles to fit")
    if float(np.sum(agg.wins_a) + np.sum(agg.wins_b)) <= 0:
        raise ValueError(
            "every battle is a tie: a tie model cannot be fitted without decisive battles "
            "(the tie parameter would be infinite)"
        )
    rs.check_anchor(agg.models)
    check_connected(agg)


# --------------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------------

# Per-pair terms: the pair's negative log-likelihood and its first and second derivatives with respect
# to d = u_a - u_b and to the tie parameter s (log ν for Davidson, τ = log θ for Rao–Kupper).
PairTerms = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _davidson_terms(d: np.ndarray, s: float, wa: np.ndarray, wb: np.ndarray, t: np.ndarray) -> PairTerms:
    """Davidson: -log P = D - d/2 (a wins), D + d/2 (b wins), D - s (tie), D = log(e^{d/2}+e^{-d/2}+e^s)."""
    half = 0.5 * d
    n = wa + wb + t
    dd = np.logaddexp(np.logaddexp(half, -half), s)
    pa = np.exp(half - dd)
    pb = np.exp(-half - dd)
    pt = np.exp(s - dd)
    loss = n * dd - (wa - wb) * half
    if math.isfinite(s):
        loss = loss - t * s
    diff = pa - pb
    g_d = 0.5 * (n * diff - (wa - wb))
    g_s = n * pt - t
    h_dd = 0.25 * n * (pa + pb - diff * diff)
    h_ds = -0.5 * n * pt * diff
    h_ss = n * pt * (1.0 - pt)
    return loss, g_d, g_s, h_dd, h_ds, h_ss


def _davidson_loss(d: np.ndarray, s: float, wa: np.ndarray, wb: np.ndarray, t: np.ndarray) -> float:
    """Sum of the Davidson per-pair losses of ``_davidson_terms`` (no derivatives)."""
    half = 0.5 * d
    dd = np.logaddexp(np.logaddexp(half, -half), s)
    loss = float(np.dot(wa + wb + t, dd) - np.dot(wa - wb, half))
    return loss - float(t.sum()) * s if math.isfinite(s) else loss


def _rao_kupper_loss(d: np.ndarray, s: float, wa: np.ndarray, wb: np.ndarray, t: np.ndarray) -> float:
    """Sum of the Rao–Kupper per-pair losses of ``_rao_kupper_terms`` (no derivatives, no log(θ²−1))."""
    half = 0.5 * d
    aa = np.logaddexp(half, s - half)
    bb = np.logaddexp(-half, s + half)
    return float(np.dot(wa + t, aa) + np.dot(wb + t, bb) - np.dot(wa - wb, half))


def _log_theta_sq_minus_one(tau: float) -> tuple[float, float, float]:
    """log(θ²−1) for θ = e^τ and its first two derivatives in τ (τ > 0)."""
    one_minus = -math.expm1(-2.0 * tau)  # 1 - e^{-2τ}
    value = 2.0 * tau + math.log(one_minus)
    first = 2.0 / one_minus
    second = -4.0 * math.exp(-2.0 * tau) / (one_minus * one_minus)
    return value, first, second


def _rao_kupper_terms(d: np.ndarray, s: float, wa: np.ndarray, wb: np.ndarray, t: np.ndarray) -> PairTerms:
    """Rao–Kupper with τ = log θ: -log P = A - d/2 (a wins), B + d/2 (b wins), A + B - log(θ²-1) (tie),
    A = log(e^{d/2} + e^{τ-d/2}), B = log(e^{-d/2} + e^{τ+d/2}). The log(θ²−1) term is added by the caller.
    """
    half = 0.5 * d
    aa = np.logaddexp(half, s - half)
    bb = np.logaddexp(-half, s + half)
    qa = np.exp(half - aa)  # σ(d - τ)
    qb = np.exp(-half - bb)  # σ(-d - τ)
    ca = wa + t
    cb = wb + t
    loss = ca * aa + cb * bb - (wa - wb) * half
    va = qa * (1.0 - qa)
    vb = qb * (1.0 - qb)
    g_d = ca * qa - cb * qb - wa + wb
    g_s = ca * (1.0 - qa) + cb * (1.0 - qb)
    h_dd = ca * va + cb * vb
    h_ds = -ca * va + cb * vb
    h_ss = ca * va + cb * vb
    return loss, g_d, g_s, h_dd, h_ds, h_ss


class _Objective:
    """Penalised, normalised negative log-likelihood of pair counts, with gradient and Hessian.

    Parameters are ``p = [u_0 .. u_{m-1}, s]`` (``s`` only when the tie parameter is free, i.e. when
    there are ties): ``u`` are natural-log strengths, ``s`` is log ν (Davidson) or τ = log θ
    (Rao–Kupper). Counts are divided by their total so that tolerances do not depend on data size.
    """

    def __init__(
        self,
        agg: Aggregated,
        model: str,
        weights: tuple[np.ndarray, np.ndarray, np.ndarray],
        l2: float,
    ) -> None:
        wa, wb, t = (np.asarray(w, dtype=np.float64) for w in weights)
        self.total = float(wa.sum() + wb.sum() + t.sum())
        self.wa, self.wb, self.t = wa / self.total, wb / self.total, t / self.total
        self.t_sum = float(self.t.sum())
        self.free_tie = self.t_sum > 0
        self.model = model
        self.terms: Callable[..., PairTerms] = _davidson_terms if model == "davidson" else _rao_kupper_terms
        self.loss_sum: Callable[..., float] = _davidson_loss if model == "davidson" else _rao_kupper_loss
        self.a, self.b = agg.a, agg.b
        self.m = len(agg.models)
        self.l2 = l2
        # tie parameter when it is not free: ν = 0 (s = -inf) or θ = 1 (τ = 0)
        self.fixed_s = -math.inf if model == "davidson" else 0.0

    def split(self, p: np.ndarray) -> tuple[np.ndarray, float]:
        """Strengths and tie parameter (log ν or τ) of a parameter vector."""
        if self.free_tie:
            return p[: self.m], float(p[self.m])
        return p, self.fixed_s

    def feasible(self, p: np.ndarray) -> bool:
        """Rao–Kupper needs τ > 0 when there are ties."""
        return not (self.free_tie and self.model == "rao-kupper" and not p[self.m] > 0.0)

    def loss(self, p: np.ndarray, *, penalty: bool = True) -> float:
        """Normalised negative log-likelihood, with the L2 penalty unless ``penalty=False``."""
        u, s = self.split(p)
        loss = self.loss_sum(u[self.a] - u[self.b], s, self.wa, self.wb, self.t)
        if self.free_tie and self.model == "rao-kupper":
            loss -= self.t_sum * _log_theta_sq_minus_one(s)[0]
        return loss + 0.5 * self.l2 * float(np.dot(u, u)) if penalty else loss

    def __call__(self, p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss, gradient and (regularised, see below) Hessian."""
        u, s = self.split(p)
        d = u[self.a] - u[self.b]
        loss_k, g_d, g_s, h_dd, h_ds, h_ss = self.terms(d, s, self.wa, self.wb, self.t)
        loss = float(loss_k.sum()) + 0.5 * self.l2 * float(np.dot(u, u))
        m = self.m
        grad_u = pair_sum(self.a, self.b, g_d, m)
        grad_u += self.l2 * u
        gs = float(g_s.sum())
        hss = float(h_ss.sum())
        if self.free_tie and self.model == "rao-kupper":
            lv, l1, l2nd = _log_theta_sq_minus_one(s)
            loss -= self.t_sum * lv
            gs -= self.t_sum * l1
            hss -= self.t_sum * l2nd
        grad = np.append(grad_u, gs) if self.free_tie else grad_u
        k = m + 1 if self.free_tie else m
        h = np.zeros((k, k))
        h[:m, :m] = pair_laplacian(self.a, self.b, h_dd, m, ridge=self.l2)
        pin_mean(h, m)  # the likelihood is flat along u + c·1
        if self.free_tie:
            h_us = pair_sum(self.a, self.b, h_ds, m)
            h[:m, m] = h_us
            h[m, :m] = h_us
            h[m, m] = hss
        return loss, grad, h


def _start(obj: _Objective) -> np.ndarray:
    """Starting point: equal strengths, tie parameter matching the observed tie share."""
    u = np.zeros(obj.m)
    if not obj.free_tie:
        return u
    share = min(max(obj.t_sum, 1e-6), 1.0 - 1e-6)
    if obj.model == "davidson":
        s0 = math.log(2.0 * share / (1.0 - share))  # P(tie | equal) = ν / (2 + ν)
    else:
        s0 = math.log((1.0 + share) / (1.0 - share))  # P(tie | equal) = (θ - 1) / (θ + 1)
    return np.append(u, s0)


def _tie_param(model: str, s: float) -> float:
    """ν = e^s (Davidson) or θ = e^τ (Rao–Kupper)."""
    return float(math.exp(s)) if math.isfinite(s) else 0.0


def _fit_units(
    agg: Aggregated,
    model: str,
    l2_c: float,
    base: float,
    weights: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Natural-log strengths (mean 0), tie parameter, log-likelihood and raw optimum (a warm start)."""
    counts = weights if weights is not None else (agg.wins_a, agg.wins_b, agg.ties)
    total = float(sum(float(np.sum(c)) for c in counts))
    obj = _Objective(agg, model, counts, l2_weight(l2_c, total, base))
    p0 = _start(obj)
    if start is not None and obj.free_tie == (start.size == obj.m + 1):
        p0 = np.array(start, dtype=np.float64)
    elif start is not None:
        p0[: obj.m] = start[: obj.m]
    p = damped_newton(obj, obj.loss, p0, obj.m, feasible=obj.feasible)
    u, s = obj.split(p)
    return u - u.mean(), _tie_param(model, s), -obj.loss(p, penalty=False) * obj.total, p


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def fit_ties(
    agg: Aggregated,
    *,
    model: TieModel = "davidson",
    anchor: Anchor | None = None,
    l2_c: float = DEFAULT_L2_C,
    **scale: Unpack[ScaleKeywords],
) -> TieFit:
    """Maximum-likelihood Davidson or Rao–Kupper ratings and tie parameter from aggregated pair counts.

    Ratings are on ``fit_bt``'s scale and take its keywords (mean ``init_rating``, or
    ``anchor=(MODEL, RATING)`` pins one model). Without any tie in the data the tie parameter is at its boundary (ν = 0, θ = 1) and the
    ratings equal plain BT. Raises ``ValueError`` for an unknown tie model, no battles, only ties, an
    unknown anchor model or a disconnected comparison graph.
    """
    _check_model(model)
    rs = RatingScale(**scale, anchor=anchor)
    _check_input(agg, rs)
    with single_thread_blas():
        u, param, loglik, _ = _fit_units(agg, model, l2_c, rs.base)
    ratings = rs.place(u, agg.models, natural_log=True)
    return TieFit(
        ratings=sorted_series(ratings, agg.models), tie_param=param, model=model, log_likelihood=loglik
    )


def bootstrap_ties(
    agg: Aggregated,
    n_rounds: int,
    rng: np.random.Generator,
    *,
    model: TieModel = "davidson",
    progress: bool = False,
    anchor: Anchor | None = None,
    l2_c: float = DEFAULT_L2_C,
    **scale: Unpack[ScaleKeywords],
) -> tuple[pd.DataFrame, np.ndarray]:
    """Bootstrap a tie model: (ratings ``n_rounds`` × models, tie parameter of each round).

    Each round resamples all battles with replacement as one multinomial draw over the (pair,
    outcome) cells, like ``bootstrap_bt``; the rating frame's columns are ordered by median rating
    (descending), so ``summarize`` and the rank (UB) take it as is. ``tie_param_interval`` turns the
    second value into a confidence interval.
    """
    check_rounds(n_rounds)
    _check_model(model)
    rs = RatingScale(**scale, anchor=anchor)
    _check_input(agg, rs)
    total, pvals = cell_probabilities(agg)
    k = len(agg.a)
    rows = np.empty((n_rounds, len(agg.models)))
    params = np.empty(n_rounds)
    with single_thread_blas():
        _, _, _, point = _fit_units(agg, model, l2_c, rs.base)
        for r in tqdm(range(n_rounds), desc="bootstrap", disable=not progress, leave=False):
            weights = split_cells(rng.multinomial(total, pvals), k)
            rows[r], params[r], _, _ = _fit_units(agg, model, l2_c, rs.base, weights=weights, start=point)
    return rs.bootstrap_frame(rows, agg.models, natural_log=True), params


def tie_param_interval(params: np.ndarray, *, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap tie parameters (2.5/97.5 % for ``level=0.95``)."""
    values = np.asarray(params, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no bootstrap tie parameters")
    lo, hi = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def tie_ratings_table(
    df: pd.DataFrame,
    *,
    model: TieModel = "davidson",
    bootstrap: int = 0,
    rng: np.random.Generator | None = None,
    anchor: Anchor | None = None,
    progress: bool = False,
    self_battles: Literal["error", "drop"] = "error",
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Validate battles and fit a tie model: (leaderboard frame as ``summarize`` builds it, tie summary).

    The tie summary holds ``tie_model``, ``tie_param_name`` (nu/theta), ``tie_param``, its bootstrap
    ``tie_param_ci_lower``/``tie_param_ci_upper`` (equal to the point without bootstrap),
    ``tie_prob_equal`` and ``log_likelihood``.
    """
    _check_model(model)
    check_bootstrap(bootstrap, rng)
    clean = validate_battles(df, self_battles=self_battles)
    agg = aggregate(clean)
    fit = fit_ties(agg, model=model, anchor=anchor)
    boot: pd.DataFrame | None = None
    lo = hi = fit.tie_param
    if bootstrap > 0:
        assert rng is not None
        boot, params = bootstrap_ties(agg, bootstrap, rng, model=model, anchor=anchor, progress=progress)
        lo, hi = tie_param_interval(params)
    return summarize(fit.ratings, boot, num_battles(clean)), fit.summary((lo, hi))


__all__ = [
    "TIE_MODELS",
    "TIE_PARAM_NAMES",
    "TieFit",
    "TieModel",
    "bootstrap_ties",
    "fit_ties",
    "tie_param_interval",
    "tie_prob_equal",
    "tie_ratings_table",
]
