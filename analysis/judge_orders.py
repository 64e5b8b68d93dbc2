"""Judge verdicts given in both answer orders: combining them per battle and position consistency."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.vote_keys import JsonSummary
from storage.vocabulary import ANSWER_ORDERS, ORDER_AB, ORDER_BA, TIE, VERDICT_LABELS, WIN_A, WIN_B

_CARRIED = ("question_id", "model_a", "model_b", "turn", "judge", "category")
_FIRST, _SECOND, _TIE = VERDICT_LABELS
#: A verdict given in the swapped order, read in the battle's order.
_MAP_BACK = {_FIRST: _SECOND, _SECOND: _FIRST, _TIE: _TIE}
_VERDICT_WINNER = {_FIRST: WIN_A, _SECOND: WIN_B, _TIE: TIE}


def _battle_keys(verdicts: pd.DataFrame) -> list[str]:
    """Columns that identify a battle: battle_id, else question_id + model_a + model_b (+ turn)."""
    if "battle_id" in verdicts.columns:
        return ["battle_id"]
    needed = ["question_id", "model_a", "model_b"]
    missing = [c for c in needed if c not in verdicts.columns]
    if missing:
        raise ValueError(
            "per-order verdicts need a battle_id column or question_id, model_a and model_b "
            f"(missing: {', '.join(missing)})"
        )
    return needed + (["turn"] if "turn" in verdicts.columns else [])


def combine_orders(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Combine a judge's verdicts on both answer orders into one verdict per battle.

    ``verdicts``: one row per (battle, order) with ``battle_id`` (or ``question_id, model_a, model_b``
    and optionally ``turn``), ``answer_order`` ("ab": model_a's answer shown first, "ba": model_b's
    shown first; any letter case) and ``verdict`` in {"A", "B", "tie", None}, where "A" is the answer
    the judge saw *first* in that order and None means missing or unparseable. Both rows of a battle must name its
    models in the same ``model_a``/``model_b`` order.

    Returns one row per battle: the key columns (plus ``question_id, model_a, model_b, turn, judge,
    category`` when present), ``verdict_ab`` and ``verdict_ba`` (the ba verdict mapped back, so "A" means
    model_a), ``status`` ("consistent", "inconsistent", "missing"), ``bias`` ("first"/"second" when an
    inconsistent judge picked the same position both times, else None) and ``winner`` in the FastChat
    vocabulary: the common winner, "tie" when the orders disagree, None when an order is missing. The
    frame can be passed to ``agreement`` as the judge verdicts (rows without a winner are skipped there).
    """
    for col in ("answer_order", "verdict"):
        if col not in verdicts.columns:
            raise ValueError(f"per-order verdicts are missing required column: {col}")
    if len(verdicts) == 0:
        raise ValueError("no per-order verdicts: the frame is empty")
    keys = _battle_keys(verdicts)
    df = verdicts.reset_index(drop=True).copy()
    for k in keys:
        df[k] = df[k].astype(object)
        if df[k].isna().any():
            raise ValueError(f"{int(df[k].isna().sum())} per-order verdict(s) have no {k}")

    order = df["answer_order"].astype(object).map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    bad_order = ~order.isin(ANSWER_ORDERS)
    if bad_order.any():
        shown = ", ".join(sorted({repr(v) for v in df.loc[bad_order, "answer_order"]})[:10])
        raise ValueError(f"answer_order must be {ORDER_AB!r} or {ORDER_BA!r} (any case); got {shown}")
    df["answer_order"] = order

    verdict = df["verdict"].astype(object)
    verdict = verdict.where(verdict.notna(), None)
    bad = verdict.notna() & ~verdict.isin(VERDICT_LABELS)
    if bad.any():
        shown = ", ".join(sorted({repr(v) for v in verdict[bad]})[:10])
        raise ValueError(f"unknown verdict value(s) {shown}; expected 'A', 'B', 'tie' or None (unparseable)")
    df["verdict"] = verdict

    dup = df.duplicated(keys + ["answer_order"], keep=False)
    if dup.any():
        raise ValueError(
            f"{int(dup.sum())} rows repeat a (battle, answer_order); expected one verdict per order"
        )

    carried = [c for c in _CARRIED if c in df.columns and c not in keys]
    df = df.sort_values("answer_order", kind="stable")  # ab rows first: carried values come from them
    battles = df.groupby(keys, sort=False, dropna=False)
    out = battles[carried].first() if carried else battles.size().to_frame().iloc[:, :0]
    ab = df.loc[df["answer_order"] == ORDER_AB].set_index(keys)["verdict"]
    ba = df.loc[df["answer_order"] == ORDER_BA].set_index(keys)["verdict"]
    out["verdict_ab"] = ab.reindex(out.index).astype(object)
    ba_raw = ba.reindex(out.index).astype(object)
    out["verdict_ba"] = ba_raw.map(_MAP_BACK).astype(object)
    out = out.reset_index()
    ba_values = ba_raw.to_numpy()

    v_ab = out["verdict_ab"].where(out["verdict_ab"].notna(), None).to_numpy(dtype=object)
    v_ba = out["verdict_ba"].where(out["verdict_ba"].notna(), None).to_numpy(dtype=object)
    missing = np.array([x is None or y is None for x, y in zip(v_ab, v_ba, strict=True)], dtype=bool)
    same = np.array([x == y for x, y in zip(v_ab, v_ba, strict=True)], dtype=bool) & ~missing
    status = np.where(missing, "missing", np.where(same, "consistent", "inconsistent"))
    bias = [
        ("first" if a == _FIRST and r == _FIRST else "second" if a == _SECOND and r == _SECOND else None)
        if s == "inconsistent"
        else None
        for s, a, r in zip(status, v_ab, ba_values, strict=True)
    ]
    winner = [
        _VERDICT_WINNER[a] if s == "consistent" else TIE if s == "inconsistent" else None
        for s, a in zip(status, v_ab, strict=True)
    ]
    out["verdict_ab"] = pd.Series(v_ab, dtype=object)
    out["verdict_ba"] = pd.Series(v_ba, dtype=object)
    out["status"] = status.astype(object)
    out["bias"] = pd.Series(bias, dtype=object)
    out["winner"] = pd.Series(winner, dtype=object)
    return out


@dataclass(frozen=True)
class PositionConsistency(JsonSummary):
    """How often a judge gives the same verdict in both answer orders.

    ``n_battles``: battles seen; ``n_missing``: battles where an order is missing or unparseable (no
    verdict); ``n_complete`` = the rest. ``consistency`` = ``n_consistent / n_complete``;
    ``biased_first`` / ``biased_second``: share of complete battles where the judge picked the answer
    shown first (resp. second) in both orders — MT-Bench's position-bias columns. NaN without complete
    battles.
    """

    n_battles: int
    n_complete: int
    n_consistent: int
    n_inconsistent: int
    n_missing: int
    consistency: float
    biased_first: float
    biased_second: float


def position_consistency(verdicts: pd.DataFrame) -> PositionConsistency:
    """Share of battles whose two answer orders agree (see ``combine_orders`` for the input)."""
    combined = combine_orders(verdicts)
    status = combined["status"]
    n_consistent = int((status == "consistent").sum())
    n_inconsistent = int((status == "inconsistent").sum())
    n_complete = n_consistent + n_inconsistent
    first = int((combined["bias"] == "first").sum())
    second = int((combined["bias"] == "second").sum())
    return PositionConsistency(
        n_battles=len(combined),
        n_complete=n_complete,
        n_consistent=n_consistent,
        n_inconsistent=n_inconsistent,
        n_missing=int((status == "missing").sum()),
        consistency=n_consistent / n_complete if n_complete else math.nan,
        biased_first=first / n_complete if n_complete else math.nan,
        biased_second=second / n_complete if n_complete else math.nan,
    )


__all__ = [
    "PositionConsistency",
    "combine_orders",
    "position_consistency",
]
