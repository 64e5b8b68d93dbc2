"""Judge ensembles: several judges' verdicts on a battle combined into one (Tiny LVLM-eHub's ensemble).

Each judge's verdict on a battle is first its own two-order combination
(:func:`analysis.judge_orders.combine_orders`): ``model_a``, ``model_b``, ``tie`` (the same tie when the
two orders disagreed), or no verdict (an order failed or was unparseable). The ensemble then combines
the judges' verdicts per battle under one of two rules:

``majority``
    The verdict that a *strict* majority of the judges with a verdict give wins; without a strict
    majority (``A, B, tie``; ``A, B``; ``A, A, B, B``) the ensemble says ``tie``, as one judge does when its
    two answer orders disagree: the panel found neither answer clearly better. A tie given by a judge is
    a vote like any other (``tie, tie, A`` is a tie by majority).
``unanimous``
    The verdict when every judge with a verdict gives the same one, else ``tie`` (the panel disagrees).
    Ties rather than "no verdict" keep every battle the judges saw in the comparison with people, so
    the ensemble is measured on the same battles as its members and the side-by-side table compares
    like with like; how many battles were unanimous is reported beside it (``status`` counts).

Judges that failed on a battle (no verdict, or the battle never judged by them) abstain. A battle
needs a *quorum* of judges with a verdict, else the ensemble gives no verdict (status ``missing``,
left out of the agreement like a failed single judge). The default quorum is a strict majority of the
ensemble (2 of 3, 3 of 4, 2 of 2) for ``majority`` and every judge for ``unanimous``: unanimity that
a judge could not take part in is not unanimity. ``quorum=`` overrides it (1 = any judge suffices).

Per battle the ``status`` says how the verdict came about: ``agree`` (every judge with a verdict gave
it), ``majority`` (a strict majority, not all), ``split`` (no majority or not unanimous: a tie) or
``missing`` (below the quorum: no verdict).

Pure functions over DataFrames in the FastChat vocabulary; "tie (bothbad)" counts as "tie".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import pandas as pd

from storage.vocabulary import TIE, TIE_BOTHBAD, WIN_A, WIN_B

#: The combination rules, in the order the command line lists them.
EnsembleRule = Literal["majority", "unanimous"]
ENSEMBLE_RULES: Final[tuple[EnsembleRule, ...]] = get_args(EnsembleRule)
MAJORITY, UNANIMOUS = ENSEMBLE_RULES

#: How an ensemble verdict came about (see the module docstring).
EnsembleStatus = Literal["agree", "majority", "split", "missing"]
ENSEMBLE_STATUSES: Final[tuple[EnsembleStatus, ...]] = get_args(EnsembleStatus)
AGREE, BY_MAJORITY, SPLIT, MISSING = ENSEMBLE_STATUSES

_OUTCOMES: tuple[str, ...] = (WIN_A, WIN_B, TIE)
_FLIP: dict[str, str] = {WIN_A: WIN_B, WIN_B: WIN_A, TIE: TIE}
_KEYS = ["question_id", "model_a", "model_b", "turn"]


@dataclass(frozen=True)
class EnsembleVerdict:
    """One battle's ensemble verdict: ``winner`` (None when ``status`` is ``missing``) and how it came."""

    winner: str | None
    status: EnsembleStatus


def default_quorum(rule: EnsembleRule, n_judges: int) -> int:
    """Judges with a verdict a battle needs: a strict majority of the ensemble, or all for unanimity."""
    if rule not in ENSEMBLE_RULES:
        raise ValueError(f"ensemble rule must be one of {ENSEMBLE_RULES}, got {rule!r}")
    if n_judges < 1:
        raise ValueError("an ensemble needs at least one judge")
    return n_judges if rule == UNANIMOUS else n_judges // 2 + 1


def _outcome(value: Any) -> str | None:
    """A judge's winner as one of model_a / model_b / tie, or None for no verdict."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if value == TIE_BOTHBAD:
        return TIE
    if value not in _OUTCOMES:
        raise ValueError(f"unknown judge winner {value!r}; expected {', '.join(_OUTCOMES)} or None")
    return str(value)


def ensemble_verdict(
    verdicts: Sequence[str | None], rule: EnsembleRule, *, quorum: int | None = None
) -> EnsembleVerdict:
    """Combine one battle's verdicts, one per judge of the ensemble (None: that judge has no verdict).

    ``verdicts`` are winners in one battle orientation (``model_a``, ``model_b``, ``tie``); the rules and
    the quorum are the module docstring's.
    """
    need = default_quorum(rule, len(verdicts)) if quorum is None else quorum
    if need < 1 or need > len(verdicts):
        raise ValueError(f"quorum must be between 1 and the {len(verdicts)} judges, got {need}")
    present = [v for v in map(_outcome, verdicts) if v is not None]
    if len(present) < need:
        return EnsembleVerdict(None, MISSING)
    top, count = Counter(present).most_common(1)[0]
    if count == len(present):
        return EnsembleVerdict(top, AGREE)
    if rule == MAJORITY and 2 * count > len(present):
        return EnsembleVerdict(top, BY_MAJORITY)
    return EnsembleVerdict(TIE, SPLIT)


def _oriented(frame: pd.DataFrame, judge: str) -> pd.DataFrame:
    """One judge's final verdicts keyed by (question_id, sorted model pair, turn), winners flipped to match."""
    missing = [c for c in ("question_id", "model_a", "model_b", "winner") if c not in frame.columns]
    if missing:
        raise ValueError(f"verdicts of judge {judge!r} lack column(s): {', '.join(missing)}")
    a = frame["model_a"].astype(str).to_numpy()
    b = frame["model_b"].astype(str).to_numpy()
    swap = a > b
    winners = [_outcome(w) for w in frame["winner"].astype(object)]
    out = pd.DataFrame(
        {
            "question_id": frame["question_id"].astype(object).to_numpy(),
            "model_a": [y if s else x for x, y, s in zip(a, b, swap, strict=True)],
            "model_b": [x if s else y for x, y, s in zip(a, b, swap, strict=True)],
            "turn": frame["turn"].to_numpy() if "turn" in frame.columns else 1,
            "winner": [_FLIP[w] if s and w is not None else w for w, s in zip(winners, swap, strict=True)],
        }
    )
    dup = out.duplicated(_KEYS, keep=False)
    if dup.any():
        raise ValueError(
            f"judge {judge!r} has several verdicts on {int(dup.sum())} row(s) of one battle; "
            "combine its answer orders first (combine_orders)"
        )
    return out


def combine_judges(
    finals: Mapping[str, pd.DataFrame],
    rule: EnsembleRule,
    *,
    quorum: int | None = None,
    name: str | None = None,
) -> pd.DataFrame:
    """The ensemble's verdict on every battle any of the judges saw.

    ``finals`` maps each judge's name to its final verdicts (``question_id, model_a, model_b, winner``,
    optionally ``turn``; e.g. ``combine_orders`` output with ``battle_id`` renamed ``question_id``).
    Returns one row per battle: ``question_id, model_a, model_b, turn`` (models in sorted order, winner
    oriented to match), ``judge`` (``name``, default ``"<rule>(A,B,...)"``), ``winner`` (None when the
    quorum is not met), ``status``, ``n_verdicts`` (judges with a verdict) and one ``verdict:<judge>``
    column per judge. The frame can be passed to ``analysis.agreement.agreement`` as the judge verdicts.
    """
    if len(finals) < 2:
        raise ValueError(f"an ensemble needs at least two judges, got {len(finals)}")
    judges = list(finals)
    need = default_quorum(rule, len(judges)) if quorum is None else quorum
    if need < 1 or need > len(judges):
        raise ValueError(f"quorum must be between 1 and the {len(judges)} judges, got {need}")
    wide: pd.DataFrame | None = None
    for judge in judges:
        part = _oriented(finals[judge], judge).rename(columns={"winner": f"verdict:{judge}"})
        wide = part if wide is None else wide.merge(part, on=_KEYS, how="outer")
    assert wide is not None
    columns = [f"verdict:{judge}" for judge in judges]
    wide[columns] = wide[columns].astype(object).where(wide[columns].notna(), None)
    combined = [
        ensemble_verdict(list(row), rule, quorum=need) for row in wide[columns].itertuples(index=False)
    ]
    wide["judge"] = name or f"{rule}({','.join(judges)})"
    wide["winner"] = pd.Series([c.winner for c in combined], index=wide.index, dtype=object)
    wide["status"] = [c.status for c in combined]
    wide["n_verdicts"] = wide[columns].notna().sum(axis=1).astype(int)
    order = [*_KEYS, "judge", "winner", "status", "n_verdicts", *columns]
    return wide[order].sort_values(_KEYS, kind="stable").reset_index(drop=True)


def status_counts(combined: pd.DataFrame) -> dict[str, int]:
    """How many battles of ``combine_judges`` output have each status (every status listed, 0 too)."""
    counts = combined["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in ENSEMBLE_STATUSES}


#: Figures of the side-by-side table, each with its 95% interval columns.
SIDE_BY_SIDE_FIGURES: tuple[str, ...] = ("agreement_with_ties", "agreement_without_ties", "cohen_kappa")


def side_by_side(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per judge (and ensemble) from ``AgreementResult.to_dict()`` figure sets, in the given order.

    Columns: ``judge, n, n_without_ties``, then each of ``SIDE_BY_SIDE_FIGURES`` with ``<figure>_lo`` /
    ``<figure>_hi`` (its 95% bootstrap interval, NaN without a bootstrap), ``n_judge_missing`` and
    ``consistency`` (position consistency of a single judge, NaN for an ensemble).
    """
    rows = []
    for judge, figures in results.items():
        row: dict[str, Any] = {
            "judge": judge,
            "n": figures["n"],
            "n_without_ties": figures["n_without_ties"],
        }
        for figure in SIDE_BY_SIDE_FIGURES:
            lo, hi = figures.get("ci", {}).get(figure, (None, None))
            row[figure] = figures[figure]
            row[f"{figure}_lo"], row[f"{figure}_hi"] = lo, hi
        row["n_judge_missing"] = figures.get("n_judge_missing")
        row["consistency"] = figures.get("position_consistency", {}).get("consistency")
        rows.append(row)
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("judge",)]
    table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
    return table


__all__ = [
    "AGREE",
    "BY_MAJORITY",
    "ENSEMBLE_RULES",
    "ENSEMBLE_STATUSES",
    "MAJORITY",
    "MISSING",
    "SIDE_BY_SIDE_FIGURES",
    "SPLIT",
    "UNANIMOUS",
    "EnsembleRule",
    "EnsembleStatus",
    "EnsembleVerdict",
    "combine_judges",
    "default_quorum",
    "ensemble_verdict",
    "side_by_side",
    "status_counts",
]
