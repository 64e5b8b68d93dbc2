"""Agreement between a judge (an LLM/VLM) and people on the same battles, as MT-Bench defines it.

Definitions follow Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena" (and
FastChat's ``compute_agreement.py``):

- Votes are keyed by ``(question_id, unordered model pair, turn)``. A verdict whose model order is
  swapped relative to a vote has its winner flipped before the two are compared; both tie kinds
  ("tie", "tie (bothbad)") are the same outcome.
- Judge–human agreement compares the judge's verdict with **every** human vote on its key: each
  (verdict, vote) pair is one *comparison*. ``agreement_with_ties`` is the share of comparisons with
  the same outcome among three (A / B / tie; MT-Bench setup S1); ``agreement_without_ties`` drops the
  comparisons where either side says tie (setup S2).
- Human–human agreement takes all pairs of votes by different people on the same key.
- Position consistency: the judge sees each battle in both answer orders; the battle is consistent when
  both orders pick the same winner once the swapped order is mapped back. The final verdict is that
  winner; a disagreement becomes a tie (counted inconsistent); a missing or unparseable order gives no
  verdict.

Frames use the FastChat vocabulary (``model_a``, ``model_b``, ``winner`` in {"model_a", "model_b", "tie",
"tie (bothbad)"}); model columns may be plain strings or categoricals (as ``analysis.io`` loads them).
Randomness (the bootstrap) comes in as a ``numpy.random.Generator``.

This module holds judge–human agreement and re-exports the rest: frame preparation lives in
``analysis.vote_keys``, human–human agreement in ``analysis.human_agreement``, and the answer-order
handling (``combine_orders``, ``position_consistency``) in ``analysis.judge_orders``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.human_agreement import HumanAgreement, human_human_agreement
from analysis.judge_orders import PositionConsistency, combine_orders, position_consistency
from analysis.vote_keys import FLIP, KEY_COLUMNS, json_number, prepare_votes
from analysis.vote_keys import REQUIRED_COLUMNS as REQUIRED_COLUMNS
from storage.vocabulary import VERDICT_LABELS, VerdictLabel

#: Outcome labels of the confusion matrix, the verdict labels read in model order: A = model_a won,
#: B = model_b won, tie = either tie kind.
LABELS: tuple[VerdictLabel, ...] = VERDICT_LABELS
_FIGURES: tuple[str, ...] = ("agreement_with_ties", "agreement_without_ties", "cohen_kappa")


def _select_judge(verdicts: pd.DataFrame, judge_name: str | None) -> pd.DataFrame:
    """Keep one judge's verdicts; several judges without ``judge_name`` is an error."""
    names = verdicts["judge"].dropna().unique()
    if judge_name is not None:
        keep = verdicts["judge"] == judge_name
        if not keep.any():
            shown = ", ".join(sorted(map(str, names))[:10]) or "none"
            raise ValueError(f"no verdicts by judge {judge_name!r}; judges present: {shown}")
        return verdicts.loc[keep].reset_index(drop=True)
    if len(names) > 1:
        shown = ", ".join(sorted(map(str, names))[:10])
        raise ValueError(f"the judge verdicts come from {len(names)} judges ({shown}); pass judge_name=")
    return verdicts


# --------------------------------------------------------------------------------------------------
# Matching and figures
# --------------------------------------------------------------------------------------------------


def match_votes(human: pd.DataFrame, judge: pd.DataFrame, *, judge_name: str | None = None) -> pd.DataFrame:
    """One row per (judge verdict, human vote) comparison on the same key.

    Keys are ``(question_id, unordered model pair, turn)``; ``turn`` defaults to 1 when a frame has
    no such column. Both outcomes are given in the orientation of the human vote: columns
    ``question_id, model_a, model_b, turn`` (as the person saw them), ``human`` and ``judge`` (labels
    "A", "B", "tie"), ``voter`` (the human frame's ``judge`` column, when present) and ``category``
    (from the human frame, else from the judge frame; None when neither has one).

    Judge rows without a winner are left out (``agreement`` reports how many). Raises ``ValueError``
    for missing columns, unknown winner values, several verdicts of one judge on one key, or
    verdicts from several judges when ``judge_name`` is not given.
    """
    h = prepare_votes(human, "human votes", allow_missing_winner=False)
    j, _ = _judge_verdicts(judge, judge_name)
    return _match(h, j)


def _judge_verdicts(judge: pd.DataFrame, judge_name: str | None) -> tuple[pd.DataFrame, int]:
    """Prepared verdicts of one judge that have a winner, and how many rows had none."""
    j_all = _select_judge(prepare_votes(judge, "judge verdicts", allow_missing_winner=True), judge_name)
    j = j_all.loc[j_all["code"] >= 0]
    if len(j) == 0:
        raise ValueError("no judge verdict has a winner")
    dup = j.duplicated(KEY_COLUMNS, keep=False)
    if dup.any():
        n_keys = int(j.loc[dup, KEY_COLUMNS].drop_duplicates().shape[0])
        raise ValueError(
            f"the judge gave several verdicts on {n_keys} key(s) (question_id, model pair, turn); "
            "combine the two answer orders first (combine_orders) or pass judge_name="
        )
    return j, int(len(j_all) - len(j))


def _match(h: pd.DataFrame, j: pd.DataFrame) -> pd.DataFrame:
    """Inner join of prepared human votes and judge verdicts on the canonical key."""
    jj = j[KEY_COLUMNS + ["canon", "category"]].rename(
        columns={"canon": "judge_canon", "category": "judge_category"}
    )
    m = h.merge(jj, on=KEY_COLUMNS, how="inner", sort=False)
    judge_code = np.where(m["flipped"].to_numpy(), FLIP[m["judge_canon"].to_numpy()], m["judge_canon"])
    labels = np.asarray(LABELS, dtype=object)
    flipped = m["flipped"].to_numpy()
    category = m["category"].where(m["category"].notna(), m["judge_category"])
    return pd.DataFrame(
        {
            "question_id": m["qid"].to_numpy(),
            "model_a": np.where(flipped, m["second"], m["first"]),
            "model_b": np.where(flipped, m["first"], m["second"]),
            "turn": m["turn"].to_numpy(),
            "human": labels[m["code"].to_numpy()],
            "judge": labels[judge_code],
            "voter": m["judge"].to_numpy(),
            "category": category.to_numpy(),
        }
    )


def _confusion_counts(comparisons: pd.DataFrame) -> np.ndarray:
    """3x3 counts, rows human, columns judge, in ``LABELS`` order."""
    index = {label: i for i, label in enumerate(LABELS)}
    hi = comparisons["human"].map(index).to_numpy(dtype=np.int64)
    ji = comparisons["judge"].map(index).to_numpy(dtype=np.int64)
    return np.bincount(hi * 3 + ji, minlength=9).reshape(3, 3)


def _figures(cells: np.ndarray) -> dict[str, np.ndarray]:
    """Agreement figures from confusion counts of shape (..., 3, 3); NaN where undefined."""
    cells = np.asarray(cells, dtype=np.float64)
    n = cells.sum(axis=(-2, -1))
    diag = np.trace(cells, axis1=-2, axis2=-1)
    decisive = cells[..., :2, :2]
    n_decisive = decisive.sum(axis=(-2, -1))
    agree_decisive = decisive[..., 0, 0] + decisive[..., 1, 1]
    rows = cells.sum(axis=-1)
    cols = cells.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = diag / n
        p_e = (rows * cols).sum(axis=-1) / (n * n)
        kappa = (p_o - p_e) / (1.0 - p_e)
        without = agree_decisive / n_decisive
    # p_e == 1: both sides always give the same single outcome; kappa is undefined
    kappa = np.where(np.isclose(p_e, 1.0), np.nan, kappa)
    return {
        "agreement_with_ties": p_o,
        "agreement_without_ties": without,
        "cohen_kappa": kappa,
        "n_without_ties": n_decisive,
    }


def cohen_kappa(confusion: np.ndarray | pd.DataFrame) -> float:
    """Cohen's kappa of a square confusion matrix of counts: (p_o - p_e) / (1 - p_e); NaN if p_e = 1."""
    cells = np.asarray(confusion, dtype=np.float64)
    if cells.ndim != 2 or cells.shape[0] != cells.shape[1] or cells.sum() <= 0:
        raise ValueError("cohen_kappa needs a square matrix of counts with a positive total")
    n = cells.sum()
    p_o = np.trace(cells) / n
    p_e = float((cells.sum(axis=1) * cells.sum(axis=0)).sum() / (n * n))
    return math.nan if math.isclose(p_e, 1.0) else float((p_o - p_e) / (1.0 - p_e))


@dataclass(frozen=True, eq=False)
class AgreementResult:
    """Judge–human agreement on matched comparisons (see the module docstring for definitions).

    ``intervals`` maps ``agreement_with_ties``, ``agreement_without_ties`` and ``cohen_kappa`` to 95%
    percentile bootstrap intervals (empty when ``bootstrap`` was 0). ``confusion`` has rows = human,
    columns = judge, labels A/B/tie in the human vote's model order. ``n_keys``: keys with at least one
    comparison; ``n_judge_unmatched``: verdicts with no human vote on their key; ``n_judge_missing``:
    judge rows without a winner (left out); both are None in the per-category results.
    """

    n: int
    agreement_with_ties: float
    n_without_ties: int
    agreement_without_ties: float
    cohen_kappa: float
    confusion: pd.DataFrame
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    bootstrap: int = 0
    n_keys: int = 0
    n_judge_unmatched: int | None = None
    n_judge_missing: int | None = None
    by_category: dict[str, AgreementResult] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes None)."""
        out: dict[str, Any] = {
            "n": int(self.n),
            "agreement_with_ties": json_number(self.agreement_with_ties),
            "n_without_ties": int(self.n_without_ties),
            "agreement_without_ties": json_number(self.agreement_without_ties),
            "cohen_kappa": json_number(self.cohen_kappa),
            "ci": {name: [json_number(lo), json_number(hi)] for name, (lo, hi) in self.intervals.items()},
            "bootstrap": int(self.bootstrap),
            "n_keys": int(self.n_keys),
            "n_judge_unmatched": self.n_judge_unmatched,
            "n_judge_missing": self.n_judge_missing,
            "confusion": {
                str(h): {str(j): int(self.confusion.loc[h, j]) for j in self.confusion.columns}
                for h in self.confusion.index
            },
        }
        if self.by_category is not None:
            out["by_category"] = {name: res.to_dict() for name, res in self.by_category.items()}
        return out


def _result_from(
    comparisons: pd.DataFrame, bootstrap: int, rng: np.random.Generator, **extra: Any
) -> AgreementResult:
    """Figures, confusion matrix and bootstrap intervals of a set of comparisons."""
    cells = _confusion_counts(comparisons)
    point = _figures(cells)
    n = int(cells.sum())
    intervals: dict[str, tuple[float, float]] = {}
    if bootstrap > 0:
        # resampling the n comparisons with replacement = one multinomial draw over the 9 cells
        draws = rng.multinomial(n, cells.ravel() / n, size=bootstrap).reshape(bootstrap, 3, 3)
        boot = _figures(draws)
        for name in _FIGURES:
            values = boot[name][~np.isnan(boot[name])]
            if len(values) == 0:
                intervals[name] = (math.nan, math.nan)
            else:
                lo, hi = np.percentile(values, [2.5, 97.5])
                intervals[name] = (float(lo), float(hi))
    confusion = pd.DataFrame(
        cells, index=pd.Index(LABELS, name="human"), columns=pd.Index(LABELS, name="judge")
    )
    a, b = comparisons["model_a"], comparisons["model_b"]
    keys = pd.DataFrame(
        {
            "q": comparisons["question_id"],
            "lo": a.where(a < b, b),
            "hi": b.where(a < b, a),
            "t": comparisons["turn"],
        }
    )
    n_keys = int(len(keys.drop_duplicates()))
    return AgreementResult(
        n=n,
        agreement_with_ties=float(point["agreement_with_ties"]),
        n_without_ties=int(point["n_without_ties"]),
        agreement_without_ties=float(point["agreement_without_ties"]),
        cohen_kappa=float(point["cohen_kappa"]),
        confusion=confusion,
        intervals=intervals,
        bootstrap=int(bootstrap),
        n_keys=n_keys,
        **extra,
    )


def agreement(
    human: pd.DataFrame,
    judge: pd.DataFrame,
    *,
    bootstrap: int = 1000,
    rng: np.random.Generator | None = None,
    by_category: bool = False,
    judge_name: str | None = None,
) -> AgreementResult:
    """Agreement between a judge's verdicts and human votes on the same battles (MT-Bench definitions).

    ``human`` and ``judge``: frames with ``question_id, model_a, model_b, winner`` and optionally
    ``turn`` (default 1), ``judge`` (voter id resp. judge name) and ``category``. Each judge verdict is
    compared with every human vote on its key. ``bootstrap`` rounds resample the matched comparisons
    for 95% percentile intervals (0 = none); ``rng`` defaults to an unseeded generator, pass one for
    reproducible intervals. ``by_category`` adds one result per category (comparisons without a
    category are left out of that breakdown). ``judge_name`` selects one judge when the judge frame
    holds several.

    Raises ``ValueError`` for missing columns, unknown winners, duplicate verdicts on a key, or when no
    verdict matches a human vote.
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap rounds must be >= 0, got {bootstrap}")
    rng = np.random.default_rng() if rng is None else rng
    h = prepare_votes(human, "human votes", allow_missing_winner=False)
    j, n_missing = _judge_verdicts(judge, judge_name)
    comparisons = _match(h, j)
    if len(comparisons) == 0:
        raise ValueError(
            "no judge verdict matches a human vote on (question_id, model pair, turn); "
            f"{len(j)} verdict(s), {len(h)} vote(s)"
        )
    matched_keys = h[KEY_COLUMNS].drop_duplicates()
    n_unmatched = int(len(j) - j.merge(matched_keys, on=KEY_COLUMNS, how="inner").shape[0])

    categories: dict[str, AgreementResult] | None = None
    if by_category:
        categories = {}
        has_cat = comparisons["category"].notna()
        groups = comparisons.loc[has_cat].groupby(comparisons.loc[has_cat, "category"].map(str), sort=True)
        for name, part in groups:
            categories[str(name)] = _result_from(part, bootstrap, rng)
    return _result_from(
        comparisons,
        bootstrap,
        rng,
        n_judge_unmatched=n_unmatched,
        n_judge_missing=n_missing,
        by_category=categories,
    )


__all__ = [
    "LABELS",
    "AgreementResult",
    "HumanAgreement",
    "PositionConsistency",
    "agreement",
    "cohen_kappa",
    "combine_orders",
    "human_human_agreement",
    "match_votes",
    "position_consistency",
]
