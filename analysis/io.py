"""Loading battle records for analysis: FastChat-style JSON/JSONL files or the arena database.

This is the only module of ``analysis`` that touches ``storage`` (imported lazily, inside
``load_battles_db``). Both loaders return one row per battle with at least the columns
``question_id, model_a, model_b, winner, judge, turn, anony, tstamp``; extra fields are kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REQUIRED_FIELDS: tuple[str, ...] = ("model_a", "model_b", "winner")
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "question_id": None,
    "judge": None,
    "turn": 1,
    "anony": True,
    "tstamp": math.nan,
}
BATTLE_COLUMNS: tuple[str, ...] = (
    "question_id",
    "model_a",
    "model_b",
    "winner",
    "judge",
    "turn",
    "anony",
    "tstamp",
)


def _first_char(text: str) -> str:
    """First non-whitespace character of ``text`` ('' when there is none)."""
    stripped = text.lstrip()
    return stripped[:1]


def _parse_json_list(text: str, path: Path) -> list[tuple[int, Any]]:
    """Parse a whole-file JSON array; items are paired with their position (1-based)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: malformed or truncated JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of battle records")
    return [(i + 1, item) for i, item in enumerate(data)]


def _parse_jsonl(text: str, path: Path) -> list[tuple[int, Any]]:
    """Parse JSON Lines (blank lines skipped); records are paired with their line number."""
    out: list[tuple[int, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: line {lineno}: malformed or truncated JSON record: {exc.msg}"
            ) from None
    return out


def battles_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a battle frame from record dicts, filling missing optional columns with defaults.

    Defaults: ``anony`` True, ``turn`` 1, ``judge`` and ``question_id`` None, ``tstamp`` NaN.
    Required fields are not checked here (see ``load_battles_file`` and ``ratings.validate_battles``).
    """
    df = pd.DataFrame.from_records(list(records))
    for col in REQUIRED_FIELDS:
        if col not in df.columns:
            df[col] = pd.Series(dtype=object)
    for col, default in OPTIONAL_DEFAULTS.items():
        values = df[col].astype(object) if col in df.columns else pd.Series(index=df.index, dtype=object)
        df[col] = values.mask(values.isna(), pd.Series([default] * len(df), index=df.index, dtype=object))
    df["anony"] = df["anony"].map(_as_bool).astype(bool)
    df["tstamp"] = pd.to_numeric(df["tstamp"], errors="coerce").astype(np.float64)
    turn = pd.to_numeric(df["turn"], errors="coerce")
    df["turn"] = turn.fillna(1).astype(np.int64) if (turn.dropna() % 1 == 0).all() else turn
    ordered = list(BATTLE_COLUMNS) + [c for c in df.columns if c not in BATTLE_COLUMNS]
    return df[ordered]


def _as_bool(value: Any) -> bool:
    """Read a JSON flag that may be a bool, a 0/1 number or a 'true'/'false' string."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "t"}
    return bool(value)


def load_battles_file(path: str | Path) -> pd.DataFrame:
    """Read battle records from a JSON list or a JSONL file (decided by the first non-space char).

    Raises ``ValueError`` for a malformed or truncated file (with the line number for JSONL),
    a record that is not an object, or a record missing ``model_a``/``model_b``/``winner``.
    Missing optional columns are filled (see ``battles_frame``). An empty file gives an empty frame.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a UTF-8 text file ({exc.reason})") from None
    first = _first_char(text)
    if first == "":
        return battles_frame([])
    is_list = first == "["
    items = _parse_json_list(text, p) if is_list else _parse_jsonl(text, p)
    where = "record" if is_list else "line"
    records: list[Mapping[str, Any]] = []
    for pos, item in items:
        if not isinstance(item, dict):
            raise ValueError(f"{p}: {where} {pos}: expected a JSON object, got {type(item).__name__}")
        missing = [f for f in REQUIRED_FIELDS if item.get(f) is None]
        if missing:
            raise ValueError(f"{p}: {where} {pos}: missing required field(s): {', '.join(missing)}")
        records.append(item)
    return battles_frame(records)


def load_battles_db(url: str, *, anony_only: bool = True) -> pd.DataFrame:
    """Read voted battles from the arena database at ``url`` (SQLAlchemy URL).

    Uses ``storage.db.make_engine`` and ``storage.repo.vote_records``; with ``anony_only`` only
    anonymous battles are kept (the leaderboard convention: named battles can bias votes).
    """
    from sqlalchemy.orm import Session

    from storage.db import make_engine
    from storage.repo import vote_records

    engine = make_engine(url)
    try:
        with Session(engine) as session:
            records = vote_records(session, anony_only=anony_only)
    finally:
        engine.dispose()
    return battles_frame(records)


__all__ = ["BATTLE_COLUMNS", "battles_frame", "load_battles_db", "load_battles_file"]
