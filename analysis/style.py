"""Style-controlled Bradley–Terry ratings (Chatbot Arena's "style control", Aug 2024).

Voters tend to prefer longer and more heavily formatted answers. Style control fits the BT logistic
regression on per-battle rows with extra covariates that describe how the two answers differ in style,
so that the model ratings measure what is left once style is accounted for:

    logit P(a beats b) = (u_a − u_b) + Σ_f β_f · z_f,    z_f = (f_a − f_b) / (f_a + f_b) / scale_f

where ``f_a``/``f_b`` are a style measure of each answer (length in characters or tokens, counts of
markdown headers, list items, bold spans), the difference is normalised by the sum (0 when both are
0), and ``scale_f`` is its root mean square over the battles (the covariate is scaled to unit size but
not centred, so equal style means no adjustment and swapping the two sides just flips the sign).
A tie counts as half a win each way (a target of 0.5, the same as FastChat's duplicated rows).

Ratings come out on the same 400·log10-odds scale as ``analysis.ratings.fit_bt`` (mean
``init_rating`` or anchored); ``coefficients`` are the β in log-odds per ``scale_f`` (one root mean
square of the covariate), ``raw_coefficients`` the same per unit of the normalised difference. The
fit uses damped Newton steps on the convex log-likelihood with ``fit_bt``'s tiny L2 penalty. The
bootstrap resamples battles with replacement (the covariate scales stay those of the full data).

Battle frames need ``model_a``, ``model_b``, ``winner`` and, per feature, two columns: ``len_a`` and
``len_b`` for ``"length"``, ``{name}_a``/``{name}_b`` for any other feature name (``header_count``,
``list_count``, ``bold_count``, which ``add_style_columns`` computes from the answer texts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    check_rounds,
    damped_newton,
    l2_weight,
    logistic,
    pair_laplacian,
    pair_sum,
    pin_mean,
    single_thread_blas,
    sorted_series,
)
from analysis.rating_summary import check_bootstrap, percentile_bounds
from analysis.ratings import Aggregated, num_battles, summarize, validate_battles

#: Markdown features of Chatbot Arena's style control, beside the answer length.
MARKDOWN_FEATURES: tuple[str, ...] = ("header_count", "list_count", "bold_count")

#: Column pairs of the features with a fixed name; any other feature ``f`` uses ``f_a`` / ``f_b``.
FEATURE_COLUMNS: dict[str, tuple[str, str]] = {"length": ("len_a", "len_b")}

COEFFICIENT_COLUMNS: tuple[str, ...] = ("feature", "coefficient", "ci_lower", "ci_upper", "scale")


def feature_columns(feature: str) -> tuple[str, str]:
    """The (side a, side b) columns a feature is read from: ``len_a``/``len_b`` or ``{f}_a``/``{f}_b``."""
    return FEATURE_COLUMNS.get(feature, (f"{feature}_a", f"{feature}_b"))


# --------------------------------------------------------------------------------------------------
# Style measures of answer texts
# --------------------------------------------------------------------------------------------------

_CODE_BLOCK = re.compile(r"```[^\n]*\n.*?```", re.DOTALL)
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:\d+\.|[-*+])\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def style_counts(text: str | None) -> dict[str, int]:
    """Style measures of one answer: ``length`` (characters) and markdown header, list-item and bold counts.

    Markdown is counted outside fenced code blocks, as Chatbot Arena does.
    """
    text = text or ""
    prose = _CODE_BLOCK.sub("", text)
    return {
        "length": len(text),
        "header_count": len(_HEADER.findall(prose)),
        "list_count": len(_LIST_ITEM.findall(prose)),
        "bold_count": len(_BOLD.findall(prose)),
    }


def add_style_columns(df: pd.DataFrame, text_a: str, text_b: str) -> pd.DataFrame:
    """A copy of ``df`` with ``len_a``/``len_b`` and the markdown count columns computed from two text columns."""
    missing = [c for c in (text_a, text_b) if c not in df.columns]
    if missing:
        raise ValueError(f"battles are missing the answer text column(s): {', '.join(missing)}")
    out = df.copy()
    for side, col in (("a", text_a), ("b", text_b)):
        counts = [style_counts(t) for t in out[col]]
        out[f"len_{side}"] = np.array([c["length"] for c in counts], dtype=np.int64)
        for feat in MARKDOWN_FEATURES:
            out[f"{feat}_{side}"] = np.array([c[feat] for c in counts], dtype=np.int64)
    return out


# --------------------------------------------------------------------------------------------------
# Design
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Design:
    """Per-battle arrays of a validated battle frame."""

    models: list[str]
    ia: np.ndarray
    ib: np.ndarray
    y: np.ndarray  # score of model_a: 1, 0.5 (tie) or 0
    z: np.ndarray  # battles × features, scaled covariates
    scales: np.ndarray  # root mean square of each normalised difference


def _check_features(df: pd.DataFrame, features: Sequence[str]) -> list[str]:
    """Raise if a feature's columns are missing; return the feature names (deduplicated, in order)."""
    if isinstance(features, str):
        features = (features,)
    names = list(dict.fromkeys(features))
    if not names:
        raise ValueError("no style features given; use fit_bt for ratings without style control")
    missing: list[str] = []
    for feat in names:
        missing.extend(c for c in feature_columns(feat) if c not in df.columns)
    if missing:
        needs = "; ".join(f"{f} needs {' and '.join(feature_columns(f))}" for f in names)
        raise ValueError(
            f"battles are missing style column(s): {', '.join(missing)} ({needs}); "
            "add_style_columns(df, text_a, text_b) computes them from answer texts"
        )
    return names


def _normalised_difference(df: pd.DataFrame, feature: str) -> np.ndarray:
    """(f_a − f_b) / (f_a + f_b), 0 where both are 0; raises for missing or negative values."""
    col_a, col_b = feature_columns(feature)
    values = []
    for col in (col_a, col_b):
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} battle row(s) have no numeric {col} (style feature {feature!r})"
            )
        if (v < 0).any():
            raise ValueError(
                f"{int((v < 0).sum())} battle row(s) have a negative {col} (style feature {feature!r})"
            )
        values.append(v)
    fa, fb = values
    total = fa + fb
    return np.divide(fa - fb, total, out=np.zeros_like(total), where=total > 0)


def _design(clean: pd.DataFrame, features: list[str]) -> _Design:
    n = len(clean)
    codes, uniques = pd.factorize(
        pd.concat([clean["model_a"], clean["model_b"]], ignore_index=True), sort=True
    )
    models = list(uniques.tolist())
    ia = codes[:n].astype(np.int64)
    ib = codes[n:].astype(np.int64)
    winner = clean["winner"].to_numpy(dtype=object)
    y = np.where(winner == "model_a", 1.0, np.where(winner == "model_b", 0.0, 0.5))
    raw = np.column_stack([_normalised_difference(clean, f) for f in features])
    scales = np.sqrt(np.mean(raw * raw, axis=0))
    flat = [f for f, s in zip(features, scales, strict=True) if not s > 0]
    if flat:
        raise ValueError(
            f"style feature(s) {', '.join(map(repr, flat))} never differ between the two answers of a "
            "battle, so their effect cannot be estimated; leave them out"
        )
    return _Design(models=models, ia=ia, ib=ib, y=y, z=raw / scales, scales=scales)


def _check_graph(design: _Design, rs: RatingScale) -> None:
    """Raise for an unknown anchor model or a comparison graph that splits into separate groups."""
    models = design.models
    m = len(models)
    keys = np.unique(np.minimum(design.ia, design.ib) * m + np.maximum(design.ia, design.ib))
    ones = np.ones(keys.size, dtype=np.int64)
    pairs = Aggregated(models, keys // m, keys % m, ones, 0 * ones, 0 * ones)
    rs.check_anchor(models)
    check_connected(pairs)


# --------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------


def _loss(p: np.ndarray, design: _Design, w: np.ndarray, l2u: float, l2b: float) -> float:
    """Weighted (normalised) BT log-loss with style covariates, plus the L2 penalty."""
    m = len(design.models)
    u, beta = p[:m], p[m:]
    eta = u[design.ia] - u[design.ib] + design.z @ beta
    loss = float(np.dot(w, np.logaddexp(0.0, eta) - design.y * eta))
    return loss + 0.5 * l2u * float(np.dot(u, u)) + 0.5 * l2b * float(np.dot(beta, beta))


def _derivatives(
    p: np.ndarray, design: _Design, w: np.ndarray, l2u: float, l2b: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, gradient and Hessian in ``p = [u_0 .. u_{m-1}, β_1 .. β_k]`` (natural-log strengths u)."""
    m = len(design.models)
    u, beta = p[:m], p[m:]
    ia, ib, y, z = design.ia, design.ib, design.y, design.z
    eta = u[ia] - u[ib] + z @ beta
    loss = float(np.dot(w, np.logaddexp(0.0, eta) - y * eta))
    loss += 0.5 * l2u * float(np.dot(u, u)) + 0.5 * l2b * float(np.dot(beta, beta))
    prob = logistic(eta)
    r = w * (prob - y)
    grad = np.concatenate([pair_sum(ia, ib, r, m) + l2u * u, z.T @ r + l2b * beta])
    h = w * prob * (1.0 - prob)
    k = z.shape[1]
    hess = np.zeros((m + k, m + k))
    hess[:m, :m] = pair_laplacian(ia, ib, h, m, ridge=l2u)
    pin_mean(hess, m)  # the likelihood is flat along u + c·1
    hz = h[:, None] * z
    cross = np.stack([pair_sum(ia, ib, hz[:, j], m) for j in range(k)], axis=1)
    hess[:m, m:] = cross
    hess[m:, :m] = cross.T
    hess[m:, m:] = z.T @ hz + l2b * np.eye(k)
    return loss, grad, hess


def _subset(design: _Design, keep: np.ndarray) -> _Design:
    """The battles selected by ``keep`` (same models and scales)."""
    return _Design(
        models=design.models,
        ia=design.ia[keep],
        ib=design.ib[keep],
        y=design.y[keep],
        z=design.z[keep],
        scales=design.scales,
    )


def _fit(
    design: _Design,
    counts: np.ndarray | None,
    *,
    base: float,
    l2_c: float,
    start: np.ndarray | None = None,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> tuple[np.ndarray, float]:
    """Newton fit; returns the parameter vector (u centred) and the unpenalised log-likelihood.

    ``counts`` weights the battles (a bootstrap draw); battles drawn 0 times are left out.
    """
    if counts is None:
        weights = np.ones(design.y.size)
    else:
        keep = np.flatnonzero(counts)
        design = _subset(design, keep)
        weights = np.asarray(counts, dtype=np.float64)[keep]
    total = float(weights.sum())
    w = weights / total
    m = len(design.models)
    # fit_bt's penalty on β, and on strengths in scale units (u = x·ln base)
    l2b = l2_weight(l2_c, total)
    l2u = l2_weight(l2_c, total, base)
    p = damped_newton(
        lambda q: _derivatives(q, design, w, l2u, l2b),
        lambda q: _loss(q, design, w, l2u, l2b),
        np.zeros(m + design.z.shape[1]) if start is None else start,
        m,
        max_iter=max_iter,
        tol=tol,
    )
    return p, -_loss(p, design, w, 0.0, 0.0) * total


def _prepare(
    df: pd.DataFrame,
    features: Sequence[str],
    rs: RatingScale,
    self_battles: Literal["error", "drop"],
) -> tuple[pd.DataFrame, list[str], _Design]:
    names = _check_features(df, features)
    clean = validate_battles(df, self_battles=self_battles)
    design = _design(clean, names)
    _check_graph(design, rs)
    return clean, names, design


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleFit:
    """A style-controlled BT fit.

    ``ratings``: Series indexed by model, highest first. ``coefficients``: feature → β in log-odds per
    one root mean square (``scales[feature]``) of the normalised difference; positive means voters
    prefer the answer with more of it. ``log_likelihood``: natural-log likelihood of the battles (a tie
    scores 0.5 each way; penalty not included).
    """

    ratings: pd.Series
    coefficients: dict[str, float]
    scales: dict[str, float] = field(default_factory=dict)
    log_likelihood: float = float("nan")

    @property
    def raw_coefficients(self) -> dict[str, float]:
        """β per unit of the normalised difference (f_a − f_b)/(f_a + f_b)."""
        return {f: c / self.scales[f] for f, c in self.coefficients.items()}


def fit_style_controlled(
    df: pd.DataFrame,
    *,
    features: Sequence[str] = ("length",),
    anchor: Anchor | None = None,
    l2_c: float = DEFAULT_L2_C,
    self_battles: Literal["error", "drop"] = "error",
    **scale: Unpack[ScaleKeywords],
) -> StyleFit:
    """Style-controlled BT ratings and style coefficients from a battle frame with style columns.

    ``features``: ``"length"`` (columns ``len_a``/``len_b``) and/or any ``f`` with columns
    ``f_a``/``f_b`` (e.g. ``header_count``, ``list_count``, ``bold_count``); ``anchor``, ``l2_c`` and
    the scale keywords are those of ``fit_bt``. Raises ``ValueError`` for missing style columns (naming
    them), missing/negative style values, a feature that never differs, the battle problems
    ``validate_battles`` reports, an unknown anchor or a disconnected graph.
    """
    rs = RatingScale(**scale, anchor=anchor)
    _, names, design = _prepare(df, features, rs, self_battles)
    return _fit_point(design, names, rs, l2_c)


def _fit_point(design: _Design, names: list[str], rs: RatingScale, l2_c: float) -> StyleFit:
    m = len(design.models)
    with single_thread_blas():
        p, loglik = _fit(design, None, base=rs.base, l2_c=l2_c)
    return StyleFit(
        ratings=sorted_series(rs.place(p[:m], design.models, natural_log=True), design.models),
        coefficients={f: float(c) for f, c in zip(names, p[m:], strict=True)},
        scales={f: float(s) for f, s in zip(names, design.scales, strict=True)},
        log_likelihood=loglik,
    )


def bootstrap_style_controlled(
    df: pd.DataFrame,
    n_rounds: int,
    rng: np.random.Generator,
    *,
    features: Sequence[str] = ("length",),
    progress: bool = False,
    anchor: Anchor | None = None,
    l2_c: float = DEFAULT_L2_C,
    self_battles: Literal["error", "drop"] = "error",
    **scale: Unpack[ScaleKeywords],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bootstrap style control: (ratings ``n_rounds`` × models, coefficients ``n_rounds`` × features).

    Each round resamples battles with replacement; rating columns are ordered by median rating
    (descending), so ``summarize`` and the rank (UB) take the first frame as is.
    """
    check_rounds(n_rounds)
    rs = RatingScale(**scale, anchor=anchor)
    _, names, design = _prepare(df, features, rs, self_battles)
    return _bootstrap(design, names, n_rounds, rng, rs, l2_c, progress=progress)


def _bootstrap(
    design: _Design,
    names: list[str],
    n_rounds: int,
    rng: np.random.Generator,
    rs: RatingScale,
    l2_c: float,
    *,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    m = len(design.models)
    n = design.y.size
    ratings = np.empty((n_rounds, m))
    coefs = np.empty((n_rounds, len(names)))
    with single_thread_blas():
        point, _ = _fit(design, None, base=rs.base, l2_c=l2_c)
        for r in tqdm(range(n_rounds), desc="bootstrap", disable=not progress, leave=False):
            counts = np.bincount(rng.integers(0, n, size=n), minlength=n)
            p, _ = _fit(design, counts, base=rs.base, l2_c=l2_c, start=point)
            ratings[r] = p[:m]
            coefs[r] = p[m:]
    boot = rs.bootstrap_frame(ratings, design.models, natural_log=True)
    return boot, pd.DataFrame(coefs, columns=pd.Index(names, name="feature"))


def style_ratings_table(
    df: pd.DataFrame,
    *,
    features: Sequence[str] = ("length",),
    bootstrap: int = 0,
    rng: np.random.Generator | None = None,
    anchor: Anchor | None = None,
    progress: bool = False,
    self_battles: Literal["error", "drop"] = "error",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Style-controlled leaderboard (as ``summarize`` builds it) and a coefficient table.

    The coefficient table has one row per feature: ``feature, coefficient, ci_lower, ci_upper, scale``
    (95% bootstrap percentile interval; both bounds equal the coefficient without bootstrap).
    """
    check_bootstrap(bootstrap, rng)
    rs = RatingScale(anchor=anchor)
    clean, names, design = _prepare(df, features, rs, self_battles)
    fit = _fit_point(design, names, rs, DEFAULT_L2_C)
    point = np.array([fit.coefficients[f] for f in names])
    lower = upper = point
    boot: pd.DataFrame | None = None
    if bootstrap > 0:
        assert rng is not None
        boot, coefs = _bootstrap(design, names, bootstrap, rng, rs, DEFAULT_L2_C, progress=progress)
        lower, upper = percentile_bounds(coefs[names])
    table = pd.DataFrame(
        {
            "feature": names,
            "coefficient": point,
            "ci_lower": lower,
            "ci_upper": upper,
            "scale": [fit.scales[f] for f in names],
        }
    )
    return summarize(fit.ratings, boot, num_battles(clean)), table


__all__ = [
    "COEFFICIENT_COLUMNS",
    "FEATURE_COLUMNS",
    "MARKDOWN_FEATURES",
    "StyleFit",
    "add_style_columns",
    "bootstrap_style_controlled",
    "feature_columns",
    "fit_style_controlled",
    "style_counts",
    "style_ratings_table",
]
