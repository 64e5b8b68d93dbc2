"""Leaderboard-level agreement between two rankings, as the Arena-Hard paper measures benchmarks.

Li et al. 2024, "From Crowdsourced Data to High-Quality Benchmarks: Arena-Hard and BenchBuilder
Pipeline", compare a benchmark (the *candidate*) with Chatbot Arena (the *reference*) on the models
both rank. The definitions here follow the paper's notebook (``notebook/benchmark_for_benchmarks.ipynb``
in lmarena/arena-hard-auto) exactly, because its published figures depend on two details:

- **Separability** of a leaderboard: the share of model pairs whose 95% intervals do not overlap. The
  notebook sorts the intervals by (lower, upper) and calls a pair overlapping when the later-starting
  interval starts strictly before the earlier one ends. Touching intervals are separated; a
  zero-width interval (an anchored or baseline model, e.g. gpt-4-0314 at 50% on Arena-Hard, mixtral at
  1114 on Chatbot Arena) lying strictly inside another one overlaps it (``overlapping_pairs``).
- **Agreement with confidence intervals**: over the model pairs whose *reference* intervals are
  separated, +1 when the candidate's intervals are separated and in the same order, +0.5 when the
  candidate's intervals overlap, 0 when they are separated in the opposite order; divided by the
  number of such pairs. Here the notebook's overlap test is "the overlap has positive length"
  (``min(upper) - max(lower) > 0``), so a zero-width interval inside another one counts as separated
  (``positive_overlap``). Order is the order of the intervals as (lower, upper) tuples.

With the first rule throughout, the published agreement figures do not come out (Arena-Hard 0.9138
instead of 0.9040); with the second throughout, the published separability figures do not (Chatbot
Arena 2,596 separated pairs instead of 2,592). The rules differ only for zero-width intervals.

Leaderboards are frames with ``model, score, lower, upper`` (``normalize_leaderboard`` accepts the
Arena-Hard bootstrap JSONL, FastChat's leaderboard table and ``analysis.ratings.ratings_table``'s frame);
``load_leaderboard`` reads them from JSONL, JSON, CSV or a Markdown table.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

LEADERBOARD_COLUMNS: tuple[str, ...] = ("model", "score", "lower", "upper")

# Column names recognised by ``normalize_leaderboard`` (compared case-insensitively), first match wins.
_MODEL_NAMES = ("model", "name", "key")
_SCORE_NAMES = (
    "score",
    "rating",
    "elo",
    "arena score",
    "arena elo",
    "arena elo rating (anony)",
    "arena elo (anony)",
)
_LOWER_NAMES = ("lower", "ci_lower", "rating_q025")
_UPPER_NAMES = ("upper", "ci_upper", "rating_q975")
_CI_TEXT_NAMES = ("95% ci", "ci")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

LeaderboardLike = pd.DataFrame | str | Path


# --------------------------------------------------------------------------------------------------
# Reading leaderboards
# --------------------------------------------------------------------------------------------------


def _find(columns: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first column (by its original name) whose lower-cased, stripped name is in ``names``."""
    for name in names:
        if name in columns:
            return columns[name]
    return None


def _ci_offsets(text: Any) -> tuple[float, float]:
    """Relative interval bounds from "(-1.9, 1.5)" (WildVision) or "+3/-4" (Chatbot Arena README)."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return math.nan, math.nan
    s = str(text).strip()
    m = re.fullmatch(rf"\(?\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)?", s)
    if m:
        lo, hi = float(m.group(1)), float(m.group(2))
        return min(lo, hi), max(lo, hi)
    m = re.fullmatch(rf"\+\s*({_NUMBER})\s*/\s*-\s*({_NUMBER})", s)
    if m:
        return -float(m.group(2)), float(m.group(1))
    raise ValueError(f"cannot read a confidence interval from {text!r}")


def normalize_leaderboard(frame: pd.DataFrame) -> pd.DataFrame:
    """Bring a leaderboard frame to the columns ``model, score, lower, upper``, best first.

    Recognised inputs: Arena-Hard bootstrap stats (``model, score, lower, upper``), FastChat's
    leaderboard table (``model, rating, rating_q025, rating_q975``; the model may be the index), our
    ``ratings_table`` (``model, rating, ci_lower, ci_upper``), and tables with a "95% CI" text column of
    offsets from the score ("(-1.9, 1.5)" or "+3/-4"). Without interval columns ``lower``/``upper`` are
    NaN (rank correlations still work; separability and agreement with CI need intervals).

    Raises ``ValueError`` for a frame without model or score column, missing model names or scores,
    duplicate models, or a lower bound above the upper bound.
    """
    df = frame
    columns = {str(c).strip().lower(): c for c in df.columns}
    model_col = _find(columns, _MODEL_NAMES)
    if model_col is None and not isinstance(df.index, pd.RangeIndex):
        df = df.rename_axis("model").reset_index()
        columns = {str(c).strip().lower(): c for c in df.columns}
        model_col = _find(columns, _MODEL_NAMES)
    score_col = _find(columns, _SCORE_NAMES)
    if model_col is None or score_col is None:
        raise ValueError(
            "a leaderboard needs a model column and a score column "
            f"(one of: {', '.join(_SCORE_NAMES)}); got columns {', '.join(map(str, frame.columns))}"
        )
    models = df[model_col].astype(object)
    if models.isna().any():
        raise ValueError(f"{int(models.isna().sum())} leaderboard row(s) have no model name")
    score = pd.to_numeric(df[score_col], errors="coerce").astype(np.float64)
    if score.isna().any():
        bad = models[score.isna()].map(str).tolist()
        raise ValueError(f"no numeric score for model(s): {', '.join(bad[:10])}")

    lower_col, upper_col = _find(columns, _LOWER_NAMES), _find(columns, _UPPER_NAMES)
    ci_col = _find(columns, _CI_TEXT_NAMES)
    if lower_col is not None and upper_col is not None:
        lower = pd.to_numeric(df[lower_col], errors="coerce").astype(np.float64)
        upper = pd.to_numeric(df[upper_col], errors="coerce").astype(np.float64)
    elif ci_col is not None:
        offsets = np.array([_ci_offsets(v) for v in df[ci_col]], dtype=np.float64).reshape(-1, 2)
        lower = score + offsets[:, 0]
        upper = score + offsets[:, 1]
    else:
        lower = upper = pd.Series(np.nan, index=df.index)

    out = pd.DataFrame(
        {
            "model": models.map(str).to_numpy(),
            "score": score.to_numpy(),
            "lower": lower.to_numpy(dtype=np.float64),
            "upper": upper.to_numpy(dtype=np.float64),
        }
    )
    dup = out["model"].duplicated(keep=False)
    if dup.any():
        raise ValueError(
            f"duplicate model(s) in the leaderboard: {', '.join(sorted(set(out.loc[dup, 'model'])))}"
        )
    inverted = out["lower"] > out["upper"]
    if inverted.any():
        raise ValueError(f"lower bound above upper bound for: {', '.join(out.loc[inverted, 'model'][:10])}")
    out = out.sort_values(["score", "model"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True)


def _read_markdown_table(text: str) -> pd.DataFrame:
    """The first pipe table of a Markdown text (header row, separator row, body)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells if c) and any(cells):
            continue
        rows.append(cells)
    if len(rows) < 2:
        raise ValueError("no Markdown table with a header row and data rows")
    header, body = rows[0], rows[1:]
    return pd.DataFrame([r[: len(header)] + [""] * (len(header) - len(r)) for r in body], columns=header)


def _read_json(text: str) -> pd.DataFrame:
    """A JSON leaderboard: a list of records, a dict of columns, or pandas' "split" layout."""
    data = json.loads(text)
    if isinstance(data, list):
        return pd.DataFrame.from_records(data)
    if isinstance(data, dict):
        if {"columns", "data"} <= set(data):
            return pd.DataFrame(data["data"], columns=data["columns"], index=data.get("index"))
        return pd.DataFrame(data)
    raise ValueError("expected a JSON list of records or an object of columns")


def load_leaderboard(path: str | Path) -> pd.DataFrame:
    """Read a leaderboard file and normalise it (see ``normalize_leaderboard``).

    Formats by extension: ``.jsonl`` (Arena-Hard ``bootstrap_stats_*.jsonl``), ``.json`` (list of
    records such as FastChat's leaderboard table or ``python -m analysis ratings --format json``, a dict
    of columns, or pandas ``orient="split"``), ``.csv``, ``.md`` (the first pipe table, e.g. a
    WildVision-Bench or Arena-Hard README table); other extensions are sniffed from the content.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(p)
        elif suffix in {".md", ".markdown"}:
            frame = _read_markdown_table(text)
        elif suffix == ".jsonl" or (suffix != ".json" and _looks_like_jsonl(text)):
            frame = pd.DataFrame.from_records(
                [json.loads(line) for line in text.splitlines() if line.strip()]
            )
        elif suffix == ".json" or text.lstrip()[:1] in {"[", "{"}:
            frame = _read_json(text)
        elif text.lstrip().startswith("|"):
            frame = _read_markdown_table(text)
        else:
            frame = pd.read_csv(p)
    except (json.JSONDecodeError, pd.errors.ParserError) as exc:
        raise ValueError(f"{p}: cannot read a leaderboard: {exc}") from None
    if len(frame) == 0:
        raise ValueError(f"{p}: the leaderboard is empty")
    try:
        return normalize_leaderboard(frame)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None


def _looks_like_jsonl(text: str) -> bool:
    """Several non-blank lines that each start with '{'."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return len(lines) > 1 and all(line.startswith("{") and line.endswith("}") for line in lines)


def _as_leaderboard(board: LeaderboardLike) -> pd.DataFrame:
    """A normalised leaderboard from a frame or a file path."""
    if isinstance(board, pd.DataFrame):
        return normalize_leaderboard(board)
    return load_leaderboard(board)


# --------------------------------------------------------------------------------------------------
# Interval tests
# --------------------------------------------------------------------------------------------------


def _bounds(lower: Any, upper: Any) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    if lo.shape != hi.shape or lo.ndim != 1:
        raise ValueError("lower and upper must be 1-d and of equal length")
    return lo, hi


def overlapping_pairs(lower: Any, upper: Any) -> np.ndarray:
    """Square bool matrix: do intervals i and j overlap, by the Arena-Hard separability rule.

    Of the two intervals, the one first by (lower, upper) is the earlier; they overlap when the later
    one starts strictly before the earlier one ends. The diagonal is False.
    """
    lo, hi = _bounds(lower, upper)
    li, lj = lo[:, None], lo[None, :]
    ui, uj = hi[:, None], hi[None, :]
    i_first = (li < lj) | ((li == lj) & (ui <= uj))
    out = np.where(i_first, lj < ui, li < uj)
    np.fill_diagonal(out, False)
    return out


def positive_overlap(lower: Any, upper: Any) -> np.ndarray:
    """Square bool matrix: do intervals i and j share a stretch of positive length (diagonal False)."""
    lo, hi = _bounds(lower, upper)
    out = np.minimum(hi[:, None], hi[None, :]) - np.maximum(lo[:, None], lo[None, :]) > 0
    np.fill_diagonal(out, False)
    return out


def _interval_order(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Sign matrix: +1 where interval i sorts above j as a (lower, upper) tuple, -1 below, 0 equal."""
    lo_cmp = np.sign(lower[:, None] - lower[None, :])
    hi_cmp = np.sign(upper[:, None] - upper[None, :])
    return np.where(lo_cmp != 0, lo_cmp, hi_cmp).astype(np.int64)


def _has_intervals(board: pd.DataFrame) -> bool:
    return bool(len(board)) and not (board["lower"].isna().any() or board["upper"].isna().any())


def separability(board: LeaderboardLike) -> dict[str, Any]:
    """Share of model pairs whose 95% intervals do not overlap (``overlapping_pairs``).

    Returns ``separability`` (None without intervals or with fewer than two models), ``n_pairs`` and
    ``n_separable``.
    """
    b = _as_leaderboard(board)
    n = len(b)
    n_pairs = n * (n - 1) // 2
    if not _has_intervals(b) or n_pairs == 0:
        return {"separability": None, "n_pairs": n_pairs, "n_separable": None}
    overlap = overlapping_pairs(b["lower"], b["upper"])
    n_overlap = int(np.triu(overlap, k=1).sum())
    return {
        "separability": (n_pairs - n_overlap) / n_pairs,
        "n_pairs": n_pairs,
        "n_separable": n_pairs - n_overlap,
    }


def agreement_with_ci(reference: pd.DataFrame, candidate: pd.DataFrame) -> dict[str, Any]:
    """Arena-Hard's agreement with confidence intervals on two aligned leaderboards (same models, same order).

    Over pairs whose reference intervals do not overlap (``positive_overlap``): +1 if the candidate's
    intervals do not overlap either and are in the same order, +0.5 if they overlap, 0 if they are in
    the opposite order. Returns ``agreement_with_ci`` (None without such pairs), ``n_pairs`` and the
    counts ``n_agree``, ``n_not_separated``, ``n_disagree``.
    """
    if list(reference["model"]) != list(candidate["model"]):
        raise ValueError("agreement_with_ci needs both leaderboards aligned on the same models")
    r_lo, r_hi = _bounds(reference["lower"], reference["upper"])
    c_lo, c_hi = _bounds(candidate["lower"], candidate["upper"])
    upper_triangle = np.triu(np.ones((len(r_lo), len(r_lo)), dtype=bool), k=1)
    considered = upper_triangle & ~positive_overlap(r_lo, r_hi)
    cand_overlap = positive_overlap(c_lo, c_hi)
    r_order = _interval_order(r_lo, r_hi)
    c_order = _interval_order(c_lo, c_hi)
    same = (r_order == c_order) & (r_order != 0)
    n_pairs = int(considered.sum())
    n_not_separated = int((considered & cand_overlap).sum())
    n_agree = int((considered & ~cand_overlap & same).sum())
    n_disagree = n_pairs - n_not_separated - n_agree
    return {
        "agreement_with_ci": (n_agree + 0.5 * n_not_separated) / n_pairs if n_pairs else None,
        "n_pairs": n_pairs,
        "n_agree": n_agree,
        "n_not_separated": n_not_separated,
        "n_disagree": n_disagree,
    }


# --------------------------------------------------------------------------------------------------
# Comparing two leaderboards
# --------------------------------------------------------------------------------------------------


def _apply_map(models: pd.Series, candidate_map: Mapping[str, str]) -> pd.Series:
    """Rename candidate models to reference names; a key that misses exactly is tried case-insensitively."""
    lowered: dict[str, list[str]] = {}
    for key in candidate_map:
        lowered.setdefault(str(key).lower(), []).append(str(key))

    def rename(name: str) -> str:
        if name in candidate_map:
            return str(candidate_map[name])
        keys = lowered.get(name.lower(), [])
        return str(candidate_map[keys[0]]) if len(keys) == 1 else name

    renamed = models.map(rename)
    dup = renamed.duplicated(keep=False)
    if dup.any():
        clash = sorted(set(renamed[dup]))
        raise ValueError(
            f"the candidate map gives several candidate models the same name: {', '.join(clash)}"
        )
    return renamed


def _correlation(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def compare(
    reference: LeaderboardLike,
    candidate: LeaderboardLike,
    *,
    candidate_map: Mapping[str, str] | None = None,
    models: Iterable[str] | None = None,
) -> dict[str, Any]:
    """How well a candidate leaderboard agrees with a reference one (Arena-Hard's benchmark metrics).

    ``reference`` / ``candidate``: leaderboard frames or files (see ``normalize_leaderboard`` and
    ``load_leaderboard``). ``candidate_map`` renames candidate models to reference names (candidate ->
    reference; a key that does not match exactly is tried case-insensitively). Models are shared when
    their names (after the map) are equal. ``models`` restricts the shared set to these names (after the
    map; each must be in both leaderboards), e.g. the 20 models the Arena-Hard paper compares on;
    separability over all models of each input is not affected.

    Returns a JSON-ready dict: ``n_models`` (shared), ``n_reference``, ``n_candidate``; ``spearman`` and
    ``kendall`` (tau-b) of the scores on the shared models; ``strict_agreement`` (share of shared pairs
    that both order the same way by score); ``separability_reference`` / ``separability_candidate``
    over all models of each input with their ``n_pairs_*`` and ``n_separable_*``;
    ``separability_reference_shared`` / ``separability_candidate_shared`` over the shared models;
    ``agreement_with_ci`` with ``n_pairs_agreement`` (reference-separated shared pairs), ``n_agree``,
    ``n_not_separated``, ``n_disagree``; ``unmatched_reference`` / ``unmatched_candidate`` (names).
    Figures that cannot be computed (no intervals, fewer than two shared models) are None.
    Raises ``ValueError`` when no model is shared or a model in ``models`` is missing from either side.
    """
    ref = _as_leaderboard(reference)
    cand = _as_leaderboard(candidate)
    if candidate_map:
        cand = cand.assign(model=_apply_map(cand["model"], candidate_map))
    shared = [m for m in ref["model"] if m in set(cand["model"])]
    if models is not None:
        wanted = [str(m) for m in models]
        absent = [m for m in wanted if m not in set(shared)]
        if absent:
            raise ValueError(f"model(s) not in both leaderboards: {', '.join(absent[:10])}")
        shared = [m for m in shared if m in set(wanted)]
    if not shared:
        raise ValueError(
            "the leaderboards share no model; pass candidate_map (--map-candidate) to match names "
            f"(reference e.g. {', '.join(ref['model'][:3])}; candidate e.g. {', '.join(cand['model'][:3])})"
        )
    ref_s = ref.set_index("model").loc[shared].reset_index()
    cand_s = cand.set_index("model").loc[shared].reset_index()

    n = len(shared)
    spearman = kendall = strict = None
    if n >= 2:
        with np.errstate(invalid="ignore", divide="ignore"):
            spearman = _correlation(stats.spearmanr(ref_s["score"], cand_s["score"]).statistic)
            kendall = _correlation(stats.kendalltau(ref_s["score"], cand_s["score"]).statistic)
        r, c = ref_s["score"].to_numpy(), cand_s["score"].to_numpy()
        same = [np.sign(r[i] - r[j]) == np.sign(c[i] - c[j]) != 0 for i, j in combinations(range(n), 2)]
        strict = float(np.mean(same))

    sep_ref, sep_cand = separability(ref), separability(cand)
    sep_ref_s, sep_cand_s = separability(ref_s), separability(cand_s)
    if _has_intervals(ref_s) and _has_intervals(cand_s) and n >= 2:
        agree = agreement_with_ci(ref_s, cand_s)
    else:
        agree = {
            "agreement_with_ci": None,
            "n_pairs": 0,
            "n_agree": None,
            "n_not_separated": None,
            "n_disagree": None,
        }
    shared_set = set(shared)
    return {
        "n_models": n,
        "n_reference": len(ref),
        "n_candidate": len(cand),
        "spearman": spearman,
        "kendall": kendall,
        "strict_agreement": strict,
        "separability_reference": sep_ref["separability"],
        "n_pairs_reference": sep_ref["n_pairs"],
        "n_separable_reference": sep_ref["n_separable"],
        "separability_candidate": sep_cand["separability"],
        "n_pairs_candidate": sep_cand["n_pairs"],
        "n_separable_candidate": sep_cand["n_separable"],
        "separability_reference_shared": sep_ref_s["separability"],
        "separability_candidate_shared": sep_cand_s["separability"],
        "n_pairs_shared": sep_cand_s["n_pairs"],
        "n_separable_reference_shared": sep_ref_s["n_separable"],
        "n_separable_candidate_shared": sep_cand_s["n_separable"],
        "agreement_with_ci": agree["agreement_with_ci"],
        "n_pairs_agreement": agree["n_pairs"],
        "n_agree": agree["n_agree"],
        "n_not_separated": agree["n_not_separated"],
        "n_disagree": agree["n_disagree"],
        "unmatched_reference": sorted(m for m in ref["model"] if m not in shared_set),
        "unmatched_candidate": sorted(m for m in cand["model"] if m not in shared_set),
    }


__all__ = [
    "LEADERBOARD_COLUMNS",
    "agreement_with_ci",
    "compare",
    "load_leaderboard",
    "normalize_leaderboard",
    "overlapping_pairs",
    "positive_overlap",
    "separability",
]
