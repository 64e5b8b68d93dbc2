"""Robust (sandwich) confidence intervals for Bradley–Terry and the tie models, from pair counts.

The covariance of the fitted strengths is ``H⁻¹ G H⁻¹`` (Huber–White), the estimator LMArena's
``arena-rank`` package (0.1.1, ``BradleyTerry.compute_ratings_and_cis(ci_method="sandwich")``) uses by
default, with its definitions:

- strengths ``u`` in natural-log units, ``P(first model wins) = σ(u_a − u_b)``; a tie is an outcome of
  0.5 (both tie kinds alike), so a battle's score (gradient of its log-likelihood) is
  ``(o − p)·(e_a − e_b)`` with ``o`` = 1, 0 or 0.5;
- ``G = Σ_battles score·scoreᵀ`` (per-battle scores, not centred per pair), ``H = Σ_battles p(1−p)·
  (e_a − e_b)(e_a − e_b)ᵀ + λ·I`` with ``λ = 1e-5 × number of battles`` (``hessian_reg``): the only
  identifiability device. Since ``G·1 = 0``, the covariance has ``1`` in its null space, i.e. it is the
  covariance of mean-centred strengths, which is what the ratings are (mean 1000) without an anchor;
- the 95 % interval is ``rating ± z·se`` with ``z = Φ⁻¹(0.975)`` and ``se`` scaled by
  ``scale / ln(base)`` (400/ln 10) like the ratings.

With ``anchor=(MODEL, RATING)`` a model's interval is that of its difference to the anchored model
(``var(u_i − u_anchor)``), so the anchor's own interval has zero width, as in the bootstrap.

Battles sharing a (pair, outcome) cell share a score, so both matrices are built from the cell counts of
``Aggregated``: the cost is O(pairs + models³), nothing per battle. The tie models (Davidson,
Rao–Kupper, see ``analysis.ties``) get the same treatment over ``[u, s]`` with their own per-outcome
scores and (observed) Hessians, ``s`` being log ν or log θ; their tie parameter's interval is
``exp(s ± z·se_s)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Unpack, cast

import numpy as np
import pandas as pd
from scipy.special import expit, ndtri

from analysis.fitting import (
    DEFAULT_L2_C,
    Anchor,
    RatingScale,
    ScaleKeywords,
    logistic,
    pair_laplacian,
    pair_sum,
)
from analysis.ratings import Aggregated, fit_bt
from analysis.ties import TIE_MODELS, TieFit, TieModel, fit_ties

#: arena-rank's ``hessian_reg``: λ = this × number of battles is added to H's diagonal.
DEFAULT_HESSIAN_REG: float = 1e-5


def normal_quantile(level: float = 0.95) -> float:
    """The two-sided normal critical value of a ``level`` interval (1.959964 for 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
    return float(ndtri(0.5 + level / 2.0))


def _laplacian(agg: Aggregated, w: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Σ_k w_k (e_a − e_b)(e_a − e_b)ᵀ + ridge·I over the pairs of ``agg`` (models × models)."""
    return pair_laplacian(agg.a, agg.b, w, len(agg.models), ridge)


def _sandwich(h: np.ndarray, g: np.ndarray) -> np.ndarray:
    """H⁻¹ G H⁻¹ for symmetric H and G."""
    left = np.linalg.solve(h, g)  # H⁻¹ G
    cov = np.linalg.solve(h, left.T)  # H⁻¹ (H⁻¹ G)ᵀ = H⁻¹ G H⁻¹
    return 0.5 * (cov + cov.T)


def _counts(agg: Aggregated) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    wa, wb, t = (np.asarray(c, dtype=np.float64) for c in (agg.wins_a, agg.wins_b, agg.ties))
    return wa, wb, t, float(wa.sum() + wb.sum() + t.sum())


def bt_covariance(
    agg: Aggregated, strengths: np.ndarray, *, hessian_reg: float = DEFAULT_HESSIAN_REG
) -> np.ndarray:
    """Sandwich covariance (models × models, natural-log units) of BT strengths at ``strengths``.

    ``strengths`` are natural-log strengths in the order of ``agg.models`` (any constant shift).
    """
    u = np.asarray(strengths, dtype=np.float64)
    wa, wb, t, total = _counts(agg)
    if total <= 0:
        raise ValueError("no battles")
    p = logistic(u[agg.a] - u[agg.b])
    # per-battle score (o − p)(e_a − e_b): o = 1 (first won), 0 (second won), 0.5 (tie)
    g_w = wa * (1.0 - p) ** 2 + wb * p**2 + t * (0.5 - p) ** 2
    h_w = (wa + wb + t) * p * (1.0 - p)
    return _sandwich(_laplacian(agg, h_w, hessian_reg * total), _laplacian(agg, g_w))


def _rk_log_terms(tau: float) -> tuple[float, float]:
    """First and second derivative in τ of log(θ² − 1), θ = e^τ (τ > 0)."""
    one_minus = -math.expm1(-2.0 * tau)
    return 2.0 / one_minus, -4.0 * math.exp(-2.0 * tau) / (one_minus * one_minus)


def tie_covariance(
    agg: Aggregated,
    strengths: np.ndarray,
    log_param: float,
    *,
    model: str,
    hessian_reg: float = DEFAULT_HESSIAN_REG,
) -> np.ndarray:
    """Sandwich covariance of a tie model's ``[u, s]`` at (``strengths``, ``log_param``).

    ``s`` = log ν (Davidson) or log θ (Rao–Kupper). Without ties in the data the tie parameter sits
    on its boundary (ν = 0, θ = 1) and is not estimated: the result is then models × models.
    """
    if model not in TIE_MODELS:
        raise ValueError(f"unknown tie model {model!r}; expected one of {', '.join(TIE_MODELS)}")
    u = np.asarray(strengths, dtype=np.float64)
    wa, wb, t, total = _counts(agg)
    if total <= 0:
        raise ValueError("no battles")
    free = float(t.sum()) > 0
    half = 0.5 * (u[agg.a] - u[agg.b])
    if model == "davidson":
        s = log_param if free else -math.inf
        dd = np.logaddexp(np.logaddexp(half, -half), s)
        pa, pb, pt = np.exp(half - dd), np.exp(-half - dd), np.exp(s - dd)
        diff = pa - pb
        # -log P: D - d/2 (a wins), D + d/2 (b wins), D - s (tie); the Hessian is the same for all
        gd = (0.5 * diff - 0.5, 0.5 * diff + 0.5, 0.5 * diff)
        gs = (pt, pt, pt - 1.0)
        n = wa + wb + t
        h_dd = n * 0.25 * (pa + pb - diff * diff)
        h_ds = n * (-0.5) * pt * diff
        h_ss = float(np.sum(n * pt * (1.0 - pt)))
    else:
        tau = log_param if free else 0.0
        qa = expit(2.0 * half - tau)  # σ(d − τ)
        qb = expit(-2.0 * half - tau)  # σ(−d − τ)
        va, vb = qa * (1.0 - qa), qb * (1.0 - qb)
        l1, l2 = _rk_log_terms(tau) if free else (0.0, 0.0)
        # -log P: A - d/2 (a wins), B + d/2 (b wins), A + B - log(θ²-1) (tie)
        gd = (qa - 1.0, 1.0 - qb, qa - qb)
        gs = (1.0 - qa, 1.0 - qb, 2.0 - qa - qb - l1)
        h_dd = (wa + t) * va + (wb + t) * vb
        h_ds = -(wa + t) * va + (wb + t) * vb
        h_ss = float(np.sum((wa + t) * va + (wb + t) * vb)) - float(t.sum()) * l2
    counts = (wa, wb, t)
    m = len(agg.models)
    g_uu = _laplacian(agg, sum(c * g * g for c, g in zip(counts, gd, strict=True)))
    h_uu = _laplacian(agg, h_dd, hessian_reg * total)
    if not free:
        return _sandwich(h_uu, g_uu)
    g = np.zeros((m + 1, m + 1))
    h = np.zeros((m + 1, m + 1))
    g[:m, :m], h[:m, :m] = g_uu, h_uu
    g_us = pair_sum(agg.a, agg.b, sum(c * x * y for c, x, y in zip(counts, gd, gs, strict=True)), m)
    h_us = pair_sum(agg.a, agg.b, h_ds, m)
    g[:m, m] = g[m, :m] = g_us
    h[:m, m] = h[m, :m] = h_us
    g[m, m] = float(sum(np.sum(c * y * y) for c, y in zip(counts, gs, strict=True)))
    h[m, m] = h_ss
    return _sandwich(h, g)


@dataclass(frozen=True)
class SandwichIntervals:
    """Ratings with sandwich standard errors and ``level`` intervals (rating ± z·se), by model."""

    ratings: pd.Series  # highest first, as ``fit_bt`` returns them
    se: pd.Series  # standard error on the rating scale, same index
    z: float
    level: float

    @property
    def lower(self) -> pd.Series:
        """Lower interval bounds."""
        return (self.ratings - self.z * self.se).rename("ci_lower")

    @property
    def upper(self) -> pd.Series:
        """Upper interval bounds."""
        return (self.ratings + self.z * self.se).rename("ci_upper")


def _rating_se(agg: Aggregated, cov_uu: np.ndarray, rs: RatingScale, order: pd.Index) -> pd.Series:
    """Standard errors on the rating scale (of differences to the anchor, when there is one), in ``order``."""
    var = np.diag(cov_uu).copy()
    if rs.anchor is not None:
        i = agg.models.index(rs.anchor[0])
        var = var + cov_uu[i, i] - 2.0 * cov_uu[:, i]
    se = rs.log_odds_factor * np.sqrt(np.clip(var, 0.0, None))
    return pd.Series(se, index=pd.Index(agg.models, name="model"), name="se").reindex(order)


def _strengths(ratings: pd.Series, agg: Aggregated, rs: RatingScale) -> np.ndarray:
    """Natural-log strengths (mean 0) in the order of ``agg.models`` from placed ratings."""
    r = ratings.reindex(agg.models).to_numpy(dtype=np.float64)
    return (r - r.mean()) / rs.log_odds_factor


def sandwich_bt(
    agg: Aggregated,
    *,
    level: float = 0.95,
    hessian_reg: float = DEFAULT_HESSIAN_REG,
    anchor: Anchor | None = None,
    l2_c: float = DEFAULT_L2_C,
    **scale: Unpack[ScaleKeywords],
) -> SandwichIntervals:
    """Bradley–Terry ratings (``fit_bt``, which takes the other keywords) with sandwich intervals (see
    the module docstring)."""
    rs = RatingScale(**scale, anchor=anchor)
    point = fit_bt(agg, anchor=anchor, l2_c=l2_c, **scale)
    cov = bt_covariance(agg, _strengths(point, agg, rs), hessian_reg=hessian_reg)
    return SandwichIntervals(point, _rating_se(agg, cov, rs, point.index), normal_quantile(level), level)


def sandwich_ties(
    agg: Aggregated,
    *,
    model: str = "davidson",
    level: float = 0.95,
    hessian_reg: float = DEFAULT_HESSIAN_REG,
    anchor: Anchor | None = None,
    l2_c: float = DEFAULT_L2_C,
    **scale: Unpack[ScaleKeywords],
) -> tuple[SandwichIntervals, TieFit, tuple[float, float]]:
    """A tie model (``fit_ties``, which takes the other keywords) with sandwich intervals: (intervals,
    the fit, tie parameter interval).

    The tie parameter's interval is ``exp(s ± z·se_s)``; without ties in the data it is the boundary
    value itself (ν = 0 or θ = 1, not estimated).
    """
    if model not in TIE_MODELS:
        raise ValueError(f"unknown tie model {model!r}; expected one of {', '.join(TIE_MODELS)}")
    rs = RatingScale(**scale, anchor=anchor)
    fit = fit_ties(agg, model=cast(TieModel, model), anchor=anchor, l2_c=l2_c, **scale)
    free = float(np.sum(agg.ties)) > 0
    log_param = math.log(fit.tie_param) if free else 0.0
    cov = tie_covariance(
        agg, _strengths(fit.ratings, agg, rs), log_param, model=model, hessian_reg=hessian_reg
    )
    m = len(agg.models)
    z = normal_quantile(level)
    se = _rating_se(agg, cov[:m, :m], rs, fit.ratings.index)
    bounds = (fit.tie_param, fit.tie_param)
    if free:
        se_s = math.sqrt(max(float(cov[m, m]), 0.0))
        bounds = (math.exp(log_param - z * se_s), math.exp(log_param + z * se_s))
    return SandwichIntervals(fit.ratings, se, z, level), fit, bounds


__all__ = [
    "DEFAULT_HESSIAN_REG",
    "SandwichIntervals",
    "bt_covariance",
    "normal_quantile",
    "sandwich_bt",
    "sandwich_ties",
    "tie_covariance",
]
