"""Loading battle records for analysis: FastChat-style JSON/JSONL files or the arena database.

This is the only module of ``analysis`` that touches ``storage`` (imported lazily, inside
``load_battles_db``). Both loaders return one row per battle with at least the columns
``question_id, model_a, model_b, winner, judge, turn, anony, tstamp``; extra fields are kept.

``model_a``/``model_b`` come back as categoricals sharing one sorted set of categories and ``winner``
as a categorical, so a million battles hold a hundred name strings, not two million, and the rating
code aggregates integer codes. Big files are parsed by pyarrow's multithreaded JSON reader; extra
fields stay Arrow-backed (pandas ``str`` / ``ArrowDtype`` columns) instead of becoming Python objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from analysis.ratings import Aggregated

try:  # orjson comes with gradio; it parses a JSON list of battles several times faster than json
    import orjson

    _fast_loads: Callable[[bytes], Any] | None = orjson.loads
except ImportError:  # pragma: no cover - exercised only without orjson
    _fast_loads = None

REQUIRED_FIELDS: tuple[str, ...] = ("model_a", "model_b", "winner")
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "question_id": None,
    "judge": None,
    "turn": 1,
    "anony": True,
    "tstamp": math.nan,
}
#: Record fields ``load_battles_file(fields=...)`` can read on their own, with their JSON types.
PROJECTABLE_FIELDS: dict[str, str] = {
    "question_id": "string",
    "model_a": "string",
    "model_b": "string",
    "winner": "string",
    "judge": "string",
    "turn": "int64",
    "anony": "bool",
    "tstamp": "float64",
    "category": "string",
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
    df["turn"] = _turn_column(df["turn"])
    _categorize(df)
    ordered = list(BATTLE_COLUMNS) + [c for c in df.columns if c not in BATTLE_COLUMNS]
    return df[ordered]


def _turn_column(values: pd.Series) -> pd.Series:
    """Turn counts as int64 (missing = 1), or as floats when some are not whole numbers."""
    turn = pd.to_numeric(values, errors="coerce")
    return turn.fillna(1).astype(np.int64) if (turn.dropna() % 1 == 0).all() else turn


def _categorize(df: pd.DataFrame) -> None:
    """Make model_a/model_b categoricals over one sorted category set, and winner a categorical.

    Columns whose values cannot be sorted together (mixed types) are left as they are.
    """
    models = pd.concat([df["model_a"], df["model_b"]], ignore_index=True).dropna().unique()
    try:
        categories = sorted(models)
    except TypeError:
        pass
    else:
        dtype = pd.CategoricalDtype(pd.Index(categories))
        df["model_a"] = df["model_a"].astype(dtype)
        df["model_b"] = df["model_b"].astype(dtype)
    try:
        winners = sorted(df["winner"].dropna().unique())
    except TypeError:
        return
    df["winner"] = df["winner"].astype(pd.CategoricalDtype(pd.Index(winners)))


def _as_bool(value: Any) -> bool:
    """Read a JSON flag that may be a bool, a 0/1 number or a 'true'/'false' string."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "t"}
    return bool(value)


def load_battles_file(path: str | Path, *, fields: Iterable[str] | None = None) -> pd.DataFrame:
    """Read battle records from a JSON list or a JSONL file (decided by the first non-space char).

    Raises ``ValueError`` for a malformed or truncated file (with the line number for JSONL),
    a record that is not an object, or a record missing ``model_a``/``model_b``/``winner``.
    Missing optional columns are filled (see ``battles_frame``). An empty file gives an empty frame.

    Well-formed files take the fast path (pyarrow's JSON reader for JSONL, orjson for a JSON list,
    then column-wise conversion); anything unusual — an error to report, values of mixed types in
    one field — is read again by the plain line-by-line parser, which gives the exact messages above.

    ``fields`` (a subset of ``PROJECTABLE_FIELDS``) asks for only those record fields besides
    ``model_a``/``model_b``/``winner``, for callers that need no more (a Bradley–Terry fit): the
    JSON reader then skips the rest of each record, which halves the time on big files. The other
    ``BATTLE_COLUMNS`` get their defaults; a file whose values do not fit the expected types is read
    in full instead.
    """
    p = Path(path)
    data = p.read_bytes()
    wanted = None if fields is None else frozenset(fields) | frozenset(REQUIRED_FIELDS)
    if wanted is not None and not wanted <= PROJECTABLE_FIELDS.keys():
        raise ValueError(f"cannot read only {sorted(wanted - PROJECTABLE_FIELDS.keys())}: not projectable")
    frame = _load_fast(data, wanted) if wanted is not None else None
    if frame is None:
        frame = _load_fast(data)
    if frame is not None:
        return frame
    return _load_plain(p)


def _load_plain(p: Path) -> pd.DataFrame:
    """The reference reader: json per line (or per file), checks record by record, ``battles_frame``."""
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


_ASCII_SPACE = b" \t\n\r\x0b\x0c"


def _load_fast(data: bytes, fields: frozenset[str] | None = None) -> pd.DataFrame | None:
    """The battle frame of a well-formed file (only ``fields``, when given), or None when the plain
    reader must decide."""
    start = data.lstrip(_ASCII_SPACE)[:1]
    if start not in (b"{", b"["):
        return None  # empty, or something the plain reader reports
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    import pyarrow as pa

    try:
        table = _arrow_jsonl(data, fields) if start == b"{" else _arrow_json_list(data, fields)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None
    if table is None:
        return None
    if fields is not None:  # a projected field that no record has is absent, as without projection
        table = table.drop_columns(
            [
                n
                for n in table.column_names
                if n not in BATTLE_COLUMNS and table[n].null_count == table.num_rows
            ]
        )
    return _frame_from_arrow(table)


def _arrow_jsonl(data: bytes, fields: frozenset[str] | None = None):  # type: ignore[no-untyped-def]
    """JSON Lines parsed by pyarrow (multithreaded C++); raises on anything it cannot type. With
    ``fields``, only those are parsed (typed as ``PROJECTABLE_FIELDS`` says), the rest skipped."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    if fields is not None:
        types = {"string": pa.string(), "bool": pa.bool_(), "float64": pa.float64(), "int64": pa.int64()}
        schema = pa.schema([(name, types[PROJECTABLE_FIELDS[name]]) for name in sorted(fields)])
        options = pa_json.ParseOptions(
            newlines_in_values=False, explicit_schema=schema, unexpected_field_behavior="ignore"
        )
    else:
        options = pa_json.ParseOptions(newlines_in_values=False)
    return pa_json.read_json(pa.BufferReader(pa.py_buffer(data)), parse_options=options)


def _arrow_json_list(data: bytes, fields: frozenset[str] | None = None):  # type: ignore[no-untyped-def]
    """A JSON list of record objects as an Arrow table (None: leave it to the plain reader)."""
    if _fast_loads is None:
        return None
    import pyarrow as pa

    items = _fast_loads(data)
    if type(items) is not list or not all(type(item) is dict for item in items):
        return None
    columns: dict[str, None] = {}
    for item in items:
        columns.update(dict.fromkeys(item))
    if fields is not None:
        columns = {name: None for name in columns if name in fields}
    arrays = {}
    for name in columns:
        values = [item.get(name) for item in items]
        if name in REQUIRED_FIELDS and None in values:
            return None
        arrays[name] = pa.array(values)
    return pa.table(arrays) if arrays else None


def _frame_from_arrow(table) -> pd.DataFrame | None:  # type: ignore[no-untyped-def]
    """The battle frame of an Arrow table of records (None when a required field is missing or
    not a string in some record, so that the plain reader reports it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    for name in REQUIRED_FIELDS:
        if name not in table.column_names:
            return None
        column = table[name]
        if column.null_count or not (
            pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        ):
            return None
    out: dict[str, Any] = {}

    def categorical(names: list[str], *columns: Any) -> list[pd.Categorical]:
        dtype = pd.CategoricalDtype(pd.Index(names))
        value_set = pa.array(names, type=pa.string())
        return [
            pd.Categorical.from_codes(
                pc.index_in(pc.cast(c, pa.string()), value_set=value_set).to_numpy().astype(np.int32),
                dtype=dtype,
            )
            for c in columns
        ]

    models = sorted(
        set(pc.unique(table["model_a"]).to_pylist()).union(pc.unique(table["model_b"]).to_pylist())
    )
    winners = sorted(pc.unique(table["winner"]).to_pylist())
    model_a, model_b = categorical(models, table["model_a"], table["model_b"])
    (winner,) = categorical(winners, table["winner"])

    for name in ("question_id", "judge"):
        if name not in table.column_names:
            values = np.full(n, None, dtype=object)
        else:
            column = table[name]
            if (
                pa.types.is_string(column.type)
                or pa.types.is_large_string(column.type)
                or pa.types.is_null(column.type)
            ):
                values = column.to_numpy(zero_copy_only=False).astype(object, copy=False)
            else:
                values = np.array(column.to_pylist() + [None], dtype=object)[:-1]
        out[name] = pd.Series(values, dtype=object)  # Python objects, None when missing (as documented)
    out["model_a"], out["model_b"], out["winner"] = model_a, model_b, winner
    if "turn" in table.column_names:
        turn = table["turn"]
        raw = (
            turn.to_pandas()
            if pa.types.is_integer(turn.type) or pa.types.is_floating(turn.type)
            else turn.to_pylist()
        )
        out["turn"] = _turn_column(pd.Series(raw, dtype=None if len(raw) else object)).to_numpy()
    else:
        out["turn"] = np.ones(n, dtype=np.int64)
    if "anony" in table.column_names:
        anony = table["anony"]
        if pa.types.is_boolean(anony.type):
            out["anony"] = pc.fill_null(anony, True).to_numpy(zero_copy_only=False).astype(bool)
        else:
            out["anony"] = np.array(
                [True if v is None else _as_bool(v) for v in anony.to_pylist()], dtype=bool
            )
    else:
        out["anony"] = np.ones(n, dtype=bool)
    if "tstamp" in table.column_names:
        tstamp = table["tstamp"]
        if (
            pa.types.is_integer(tstamp.type)
            or pa.types.is_floating(tstamp.type)
            or pa.types.is_null(tstamp.type)
        ):
            out["tstamp"] = pc.cast(tstamp, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            out["tstamp"] = pd.to_numeric(
                pd.Series(tstamp.to_pylist(), dtype=object), errors="coerce"
            ).to_numpy(dtype=np.float64)
    else:
        out["tstamp"] = np.full(n, math.nan)
    frame = pd.DataFrame(out, columns=list(BATTLE_COLUMNS))
    for name in table.column_names:
        if name in BATTLE_COLUMNS:
            continue
        column = table[name]
        nested = pa.types.is_nested(column.type)
        frame[name] = column.to_pandas(types_mapper=pd.ArrowDtype if nested else None)
    return frame


def _vote_filter(
    anony_only: bool,
    since: datetime | str | None,
    until: datetime | str | None,
    category: str | None,
    include_flagged: bool,
):  # type: ignore[no-untyped-def]
    """The ``storage.counts.VoteFilter`` of the loaders' keyword arguments (ISO strings accepted)."""
    from storage.counts import VoteFilter

    return VoteFilter(
        anony_only=anony_only,
        include_flagged=include_flagged,
        since=_as_datetime(since, "since"),
        until=_as_datetime(until, "until"),
        category=category,
    )


def load_pair_counts_db(
    url: str,
    *,
    anony_only: bool = True,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    category: str | None = None,
    include_flagged: bool = False,
) -> Aggregated:
    """Counted votes of the arena database at ``url`` per model pair and outcome, for the BT-family fits.

    One aggregate query (``storage.counts.pair_outcome_counts``): the database groups the votes, so
    a million votes cost a few thousand rows here. The filters are those of ``load_battles_db``.
    """
    from sqlalchemy.orm import Session

    from analysis.pairs import aggregated_from_counts
    from storage.counts import pair_outcome_counts
    from storage.db import make_engine

    flt = _vote_filter(anony_only, since, until, category, include_flagged)
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            rows = pair_outcome_counts(session, flt)
    finally:
        engine.dispose()
    return aggregated_from_counts(rows)


def load_battles_db(
    url: str,
    *,
    anony_only: bool = True,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    category: str | None = None,
    include_flagged: bool = False,
    answers: bool = False,
    categories: bool = False,
) -> pd.DataFrame:
    """Read voted battles from the arena database at ``url`` (SQLAlchemy URL), one row per vote.

    For what needs each vote (online Elo, style control, reports); Bradley–Terry-family leaderboards
    need only ``load_pair_counts_db``. The filters run in SQL (``storage.counts.vote_conditions``):
    with ``anony_only`` only anonymous battles are kept (the leaderboard convention: named battles can
    bias votes); ``since``/``until`` keep votes cast at or after / before those moments (a datetime
    or an ISO 8601 string; without a zone, UTC); ``category`` keeps battles tagged with it;
    ``include_flagged`` also counts votes from voter sessions flagged as banned or anomalous.
    Battles marked invalid, whose answers leaked a model's identity, or excluded by an operator are
    never counted. ``answers`` adds each side's whole answer text as ``answer_a``/``answer_b`` (for
    style control); ``categories`` adds ``category``: the battle's tags joined with '+', or "untagged".

    The frame is built column by column: the driver's rows are fetched in chunks
    (``storage.counts.vote_columns``) and each chunk becomes arrays at once, so no dict or record
    object is made per vote; model names and winners arrive as categoricals, as from a file.
    """
    from sqlalchemy.orm import Session

    from analysis.vote_frame import column_arrays, frame_from_columns
    from storage.counts import model_names, vote_columns
    from storage.db import make_engine
    from storage.repo import answer_texts, battle_categories

    flt = _vote_filter(anony_only, since, until, category, include_flagged)
    engine = make_engine(url)
    chunks: list[tuple[Any, ...]] = []
    try:
        with Session(engine) as session:
            names = model_names(session)
            for chunk in vote_columns(session, flt):
                chunks.append(column_arrays(chunk))
            frame = frame_from_columns(chunks, names)
            del chunks
            ids = frame["question_id"].tolist() if answers or categories else []
            texts = answer_texts(session, ids) if answers else {}
            tags = battle_categories(session, ids) if categories else {}
    finally:
        engine.dispose()
    if answers:
        pairs = [texts.get(str(i), ("", "")) for i in ids]
        frame["answer_a"] = pd.Series([a for a, _ in pairs], index=frame.index, dtype=object)
        frame["answer_b"] = pd.Series([b for _, b in pairs], index=frame.index, dtype=object)
    if categories:
        frame["category"] = pd.Series(
            [tags.get(str(i), "untagged") for i in ids], index=frame.index, dtype=object
        )
    return frame


def _as_datetime(value: datetime | str | None, name: str) -> datetime | None:
    """A datetime bound from a datetime or an ISO 8601 string ('2026-03-01', '2026-03-01T12:00Z')."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(
            f"bad {name} time {value!r}: expected ISO 8601, e.g. 2026-03-01 or 2026-03-01T12:00Z"
        ) from None


def with_style_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The battles with the per-side style columns style control needs (``len_a``/``len_b`` and markdown
    counts), taken from what the records carry, in this order of preference:

    * ``len_a``/``len_b`` already present: kept as they are;
    * ``answer_a``/``answer_b`` texts (``load_battles_db(..., answers=True)``);
    * ``conversation_a``/``conversation_b`` (FastChat / our export): the assistant turns' text;
    * ``conv_metadata`` (Chatbot Arena's clean battles): its token and markdown counts.

    Raises ``ValueError`` naming these options when none is there.
    """
    from analysis.style import add_style_columns

    if {"len_a", "len_b"} <= set(df.columns):
        return df
    if {"answer_a", "answer_b"} <= set(df.columns):
        return add_style_columns(df, "answer_a", "answer_b")
    if {"conversation_a", "conversation_b"} <= set(df.columns):
        out = df.assign(
            answer_a=[_assistant_text(c) for c in df["conversation_a"]],
            answer_b=[_assistant_text(c) for c in df["conversation_b"]],
        )
        return add_style_columns(out, "answer_a", "answer_b")
    if "conv_metadata" in df.columns:
        return _style_from_metadata(df)
    raise ValueError(
        "style control needs each battle's answers: len_a/len_b columns, conversation_a/conversation_b, "
        "conv_metadata, or a database (read with answers)"
    )


def _assistant_text(conversation: Any) -> str:
    """The assistant turns of a FastChat conversation (a list of {role, content}) joined by blank lines."""
    if hasattr(conversation, "tolist"):
        conversation = conversation.tolist()
    if not isinstance(conversation, list):
        return ""
    return "\n\n".join(
        str(m.get("content") or "")
        for m in conversation
        if isinstance(m, dict) and m.get("role") == "assistant"
    )


def _style_from_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """Style columns from Chatbot Arena's ``conv_metadata`` (assistant token counts, markdown counts)."""
    out = df.copy()
    meta = [m if isinstance(m, dict) else {} for m in df["conv_metadata"]]
    for side in ("a", "b"):
        out[f"len_{side}"] = [int(m.get(f"sum_assistant_{side}_tokens") or 0) for m in meta]
        for feature in ("header_count", "list_count", "bold_count"):
            out[f"{feature}_{side}"] = [
                int(sum((m.get(f"{feature}_{side}") or {}).values()))
                if isinstance(m.get(f"{feature}_{side}"), dict)
                else int(m.get(f"{feature}_{side}") or 0)
                for m in meta
            ]
    return out


def load_judge_verdicts_db(url: str, judge: str, *, template_version: str | None = None) -> pd.DataFrame:
    """A judge's stored per-order verdicts (``storage.judging.verdict_records``) as a frame.

    Columns: battle_id, model_a, model_b, template_version, answer_order ("ab"/"ba"), verdict ("A",
    "B", "tie" in the order shown, or None), error, tstamp, human_winner (None without a vote).
    """
    from sqlalchemy.orm import Session

    from storage.db import make_engine
    from storage.judging import verdict_records

    engine = make_engine(url)
    try:
        with Session(engine) as session:
            records = verdict_records(session, judge_model=judge, template_version=template_version)
    finally:
        engine.dispose()
    columns = [
        "battle_id",
        "model_a",
        "model_b",
        "template_version",
        "answer_order",
        "verdict",
        "error",
        "tstamp",
        "human_winner",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


__all__ = [
    "BATTLE_COLUMNS",
    "PROJECTABLE_FIELDS",
    "battles_frame",
    "load_battles_db",
    "load_battles_file",
    "load_pair_counts_db",
    "load_judge_verdicts_db",
    "with_style_columns",
]
