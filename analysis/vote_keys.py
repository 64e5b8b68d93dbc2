"""Vote and verdict frames brought to canonical agreement keys.

Validates FastChat-vocabulary frames and gives their canonical form keyed by ``(question_id, unordered
model pair, turn)``: question id as text, models sorted, winner code in sorted-model order. Shared by
judge–human and human–human agreement, with the JSON number helper of their result classes.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd

from storage.vocabulary import TIE, TIE_BOTHBAD, WIN_A, WIN_B, WINNERS

REQUIRED_COLUMNS: tuple[str, ...] = ("question_id", "model_a", "model_b", "winner")

_WINNER_CODE: dict[str, int] = {WIN_A: 0, WIN_B: 1, TIE: 2, TIE_BOTHBAD: 2}
FLIP = np.array([1, 0, 2])  # code seen from the other model order
KEY_COLUMNS = ["qid", "first", "second", "turn"]


def _key_text(value: Any) -> str:
    """A question id as text, so 81, 81.0 and "81" from different loaders match."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def prepare_votes(frame: pd.DataFrame, what: str, *, allow_missing_winner: bool) -> pd.DataFrame:
    """Validate a vote/verdict frame and bring it to canonical form.

    Returns columns ``qid, first, second, turn`` (the key, models sorted), ``flipped`` (the row lists
    the models in the other order), ``code`` (0 = model_a, 1 = model_b, 2 = tie in the row's own order;
    -1 = no winner), ``canon`` (the code in sorted-model order), ``judge`` and ``category`` (or None).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} are missing required column(s): {', '.join(missing)}")
    if len(frame) == 0:
        raise ValueError(f"no {what}: the frame is empty")

    a = frame["model_a"].astype(object)
    b = frame["model_b"].astype(object)
    qid = frame["question_id"].astype(object)
    for name, col in (("question_id", qid), ("model_a", a), ("model_b", b)):
        null = col.isna()
        if null.any():
            raise ValueError(f"{int(null.sum())} row(s) of the {what} have no {name}")
    a = a.map(str)
    b = b.map(str)
    same = (a == b).to_numpy()
    if same.any():
        raise ValueError(f"{int(same.sum())} row(s) of the {what} have model_a == model_b")

    winner = frame["winner"].astype(object)
    no_winner = winner.isna().to_numpy()
    if no_winner.any() and not allow_missing_winner:
        raise ValueError(f"{int(no_winner.sum())} row(s) of the {what} have no winner")
    known = winner.isin(WINNERS).to_numpy()
    bad = ~known & ~no_winner
    if bad.any():
        counts = winner[bad].astype(str).value_counts()
        shown = ", ".join(f"{v!r} ({n})" for v, n in counts.head(10).items())
        raise ValueError(
            f"unknown winner value(s) in {int(bad.sum())} row(s) of the {what}: {shown}; "
            f"expected one of {', '.join(WINNERS)}"
        )
    code = np.full(len(frame), -1, dtype=np.int64)
    code[known] = winner[known].map(_WINNER_CODE).to_numpy(dtype=np.int64)

    if "turn" in frame.columns:
        turn = pd.to_numeric(frame["turn"].astype(object), errors="coerce").fillna(1)
        turn = turn.astype(np.int64) if (turn % 1 == 0).all() else turn.astype(np.float64)
    else:
        turn = pd.Series(1, index=frame.index, dtype=np.int64)

    flipped = (a > b).to_numpy()
    canon = np.where(flipped & (code >= 0), FLIP[np.clip(code, 0, 2)], code)
    out = pd.DataFrame(
        {
            "qid": qid.map(_key_text).to_numpy(),
            "first": np.where(flipped, b, a),
            "second": np.where(flipped, a, b),
            "turn": turn.to_numpy(),
            "flipped": flipped,
            "code": code,
            "canon": canon,
            "judge": frame["judge"].astype(object).to_numpy() if "judge" in frame.columns else None,
            "category": frame["category"].astype(object).to_numpy() if "category" in frame.columns else None,
        }
    )
    return out


def json_number(x: float) -> float | None:
    """A float for JSON: NaN becomes None."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


class JsonSummary:
    """Mixin for a dataclass of counts and rates: ``to_dict`` is ``json_fields(self)``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes None)."""
        return json_fields(self)


def json_fields(summary: Any) -> dict[str, Any]:
    """A dataclass of counts and rates as a JSON-ready dict: integers as ``int``, rates through
    ``json_number`` (NaN becomes None), in field order."""
    out: dict[str, Any] = {}
    for item in fields(summary):
        value = getattr(summary, item.name)
        if isinstance(value, (float, np.floating)):
            out[item.name] = json_number(float(value))
        elif isinstance(value, (int, np.integer)):
            out[item.name] = int(value)
        else:
            out[item.name] = value
    return out


__all__ = [
    "FLIP",
    "KEY_COLUMNS",
    "REQUIRED_COLUMNS",
    "JsonSummary",
    "json_fields",
    "json_number",
    "prepare_votes",
]
