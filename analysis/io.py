"""Loading battle records for analysis: FastChat-style JSON/JSONL files or the arena database.

This is the only module of ``analysis`` that opens the arena's database or image store (``storage``
imported lazily, inside the functions): the loaders, ``save_result`` for figures the admin page shows,
``db_sessions`` and ``image_loader`` for the judge runner (whose own queries are ``storage.judging``'s
named functions); elsewhere ``analysis`` imports only ``storage.vocabulary``. Both loaders return
one row per battle with at least the columns ``question_id, model_a, model_b, winner, judge, turn,
anony, tstamp``; extra fields are kept.

``model_a``/``model_b`` come back as categoricals sharing one sorted set of categories and ``winner``
as a categorical, so a million battles hold a hundred name strings, not two million, and the rating
code aggregates integer codes. Files are read by ``storage.transfer.formats``, the one reader of
battle files (JSON list, JSON Lines or Parquet, as ``storage export`` writes them), column-wise through
pyarrow; extra fields stay Arrow-backed (pandas ``str`` / ``ArrowDtype`` columns) instead of becoming
Python objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa
    from PIL.Image import Image as PILImage
    from sqlalchemy.orm import Session, sessionmaker

    from analysis.ratings import Aggregated
    from storage.counts import VoteFilter
    from storage.dedup import FirstTurn
    from storage.transfer.formats import BattleFile

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
    """Read battle records from a JSON list, JSON Lines or Parquet file (``storage export`` writes all
    three; the format is told by content, a UTF-8 byte-order mark is skipped).

    Raises ``ValueError`` for a malformed or truncated file (with the line number for JSONL),
    a record that is not an object, or a record missing ``model_a``/``model_b``/``winner``;
    ``FileNotFoundError``/``IsADirectoryError`` when there is no file at ``path``.
    Missing optional columns are filled (see ``battles_frame``). An empty file gives an empty frame.

    Well-formed files are read column-wise (``storage.transfer.formats.read_arrow_table``: pyarrow's
    JSON reader for JSONL, orjson for a JSON list, pyarrow.parquet), then converted column by column;
    anything unusual (an error to report, values of mixed types in one field) is read again record by
    record (``iter_records``), which gives the exact messages above.

    ``fields`` (a subset of ``PROJECTABLE_FIELDS``) asks for only those record fields besides
    ``model_a``/``model_b``/``winner``, for callers that need no more (a Bradley–Terry fit): the
    reader then skips the rest of each record, which halves the time on big files. The other
    ``BATTLE_COLUMNS`` get their defaults; a file whose values do not fit the expected types is read
    in full instead.
    """
    from storage.transfer.formats import open_battle_file, read_arrow_table

    p = Path(path)
    p.stat()  # FileNotFoundError, as from any file reader
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a directory")
    wanted = None if fields is None else frozenset(fields) | frozenset(REQUIRED_FIELDS)
    if wanted is not None and not wanted <= PROJECTABLE_FIELDS.keys():
        raise ValueError(f"cannot read only {sorted(wanted - PROJECTABLE_FIELDS.keys())}: not projectable")
    file = open_battle_file(p)
    if file.format == "empty":
        return battles_frame([])
    frame = None
    if wanted is not None:
        types = {name: PROJECTABLE_FIELDS[name] for name in wanted}
        table = read_arrow_table(file, types, REQUIRED_FIELDS)
        if table is not None:  # a projected field that no record has is absent, as without projection
            table = table.drop_columns(
                [
                    n
                    for n in table.column_names
                    if n not in BATTLE_COLUMNS and table[n].null_count == table.num_rows
                ]
            )
            frame = _frame_from_arrow(table)
    if frame is None:
        table = read_arrow_table(file, None, REQUIRED_FIELDS)
        frame = None if table is None else _frame_from_arrow(table)
    if frame is None:
        frame = _load_plain(file)
    return frame


def _load_plain(file: BattleFile) -> pd.DataFrame:
    """The reference reader: records one by one (``iter_records``), checked, then ``battles_frame``."""
    from storage.transfer.formats import iter_records

    records: list[Mapping[str, Any]] = []
    for pos, item in iter_records(file):
        if not isinstance(item, dict):
            raise ValueError(
                f"{file.path}: {file.word} {pos}: expected a JSON object, got {type(item).__name__}"
            )
        missing = [f for f in REQUIRED_FIELDS if item.get(f) is None]
        if missing:
            raise ValueError(
                f"{file.path}: {file.word} {pos}: missing required field(s): {', '.join(missing)}"
            )
        records.append(item)
    return battles_frame(records)


def _frame_from_arrow(table: pa.Table) -> pd.DataFrame | None:
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


@contextmanager
def db_sessions(url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the arena database at ``url`` (``storage.db``'s engine and session factory) for the
    length of the block; the engine is disposed at the end. The judge runner opens its sessions here."""
    from storage.db import make_engine, session_factory

    engine = make_engine(url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


class VoteFilterKeywords(TypedDict, total=False):
    """The loaders' filter keywords (see ``load_battles_db``)."""

    anony_only: bool
    since: datetime | str | None
    until: datetime | str | None
    category: str | None
    exclude_category: str | None
    include_flagged: bool
    exclude_battles: frozenset[str]


def _vote_filter(
    anony_only: bool = True,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    category: str | None = None,
    include_flagged: bool = False,
    exclude_category: str | None = None,
    exclude_battles: frozenset[str] = frozenset(),
) -> VoteFilter:
    """The ``storage.counts.VoteFilter`` of the loaders' keyword arguments (ISO strings accepted)."""
    from storage.counts import VoteFilter

    return VoteFilter(
        anony_only=anony_only,
        include_flagged=include_flagged,
        since=_as_datetime(since, "since"),
        until=_as_datetime(until, "until"),
        category=category,
        exclude_category=exclude_category,
        exclude_battles=frozenset(exclude_battles),
    )


def load_first_turns_db(
    url: str, *, images: str | Path | None = None, **filters: Unpack[VoteFilterKeywords]
) -> list[FirstTurn]:
    """The first turn of every battle the filters count, in vote order (``storage.dedup.first_turns``),
    for ``analysis.dedup``. With ``images`` (the arena's image store) the images whose pHash is not
    stored yet are hashed from it first, once (``storage.dedup.backfill_phashes``)."""
    from storage.dedup import backfill_phashes, first_turns

    flt = _vote_filter(**filters)
    with db_sessions(url) as sessions:
        if images is not None:
            from storage.images import ImageStore

            backfill_phashes(sessions, ImageStore(images))
        with sessions() as session:
            return first_turns(session, flt)


def load_pair_counts_db(url: str, **filters: Unpack[VoteFilterKeywords]) -> Aggregated:
    """Counted votes of the arena database at ``url`` per model pair and outcome, for the BT-family fits.

    One aggregate query (``storage.counts.pair_outcome_counts``): the database groups the votes, so
    a million votes cost a few thousand rows here. The filters are those of ``load_battles_db``.
    """
    from analysis.pairs import aggregated_from_counts
    from storage.counts import pair_outcome_counts

    flt = _vote_filter(**filters)
    with db_sessions(url) as sessions, sessions() as session:
        rows = pair_outcome_counts(session, flt)
    return aggregated_from_counts(rows)


def load_battles_db(
    url: str, *, answers: bool = False, categories: bool = False, **filters: Unpack[VoteFilterKeywords]
) -> pd.DataFrame:
    """Read voted battles from the arena database at ``url`` (SQLAlchemy URL), one row per vote.

    For what needs each vote (online Elo, style control, reports); Bradley–Terry-family leaderboards
    need only ``load_pair_counts_db``. The filters run in SQL (``storage.counts.vote_conditions``):
    with ``anony_only`` only anonymous battles are kept (the leaderboard convention: named battles can
    bias votes); ``since``/``until`` keep votes cast at or after / before those moments (a datetime
    or an ISO 8601 string; without a zone, UTC); ``category`` keeps battles tagged with it and
    ``exclude_category`` leaves out those tagged with it; ``include_flagged`` also counts votes from voter sessions flagged as banned or anomalous.
    Battles marked invalid, whose answers leaked a model's identity, or excluded by an operator are
    never counted. ``answers`` adds each side's whole answer text as ``answer_a``/``answer_b`` (for
    style control); ``categories`` adds ``category``: the battle's tags joined with '+', or "untagged".

    The frame is built column by column: the driver's rows are fetched in chunks
    (``storage.counts.vote_columns``) and each chunk becomes arrays at once, so no dict or record
    object is made per vote; model names and winners arrive as categoricals, as from a file.
    """
    from analysis.vote_frame import column_arrays, frame_from_columns
    from storage.counts import model_names, vote_columns
    from storage.repo import answer_texts, battle_categories

    flt = _vote_filter(**filters)
    chunks: list[tuple[Any, ...]] = []
    with db_sessions(url) as sessions, sessions() as session:
        names = model_names(session)
        for chunk in vote_columns(session, flt):
            chunks.append(column_arrays(chunk))
        frame = frame_from_columns(chunks, names)
        del chunks
        ids = frame["question_id"].tolist() if answers or categories else []
        texts = answer_texts(session, ids) if answers else {}
        tags = battle_categories(session, ids) if categories else {}
    if answers:
        pairs = [texts.get(str(i), ("", "")) for i in ids]
        frame["answer_a"] = pd.Series([a for a, _ in pairs], index=frame.index, dtype=object)
        frame["answer_b"] = pd.Series([b for _, b in pairs], index=frame.index, dtype=object)
    if categories:
        frame["category"] = pd.Series(
            [tags.get(str(i), "untagged") for i in ids], index=frame.index, dtype=object
        )
    return frame


def load_voter_votes_db(url: str, **filters: Unpack[VoteFilterKeywords]) -> pd.DataFrame:
    """Counted votes of the arena database with their voter, for ``analysis.voters``: one row per vote
    with ``voter`` (the imported judge label, else the voter session id; None when neither),
    ``model_a, model_b, winner, tstamp`` and ``decision_s`` (seconds from both answers complete to
    the vote; NaN when unknown), in vote order. The filters are those of ``load_battles_db``."""
    from sqlalchemy import and_, select

    from storage.counts import model_names, vote_columns, vote_conditions
    from storage.schema import Battle, Vote

    flt = _vote_filter(**filters)
    parts: list[tuple[np.ndarray, ...]] = []
    with db_sessions(url) as sessions, sessions() as session:
        names = model_names(session)
        for chunk in vote_columns(session, flt):
            parts.append(
                (
                    np.array(chunk[0], dtype=np.int64),
                    np.array(chunk[2], dtype=np.int64),
                    np.array(chunk[3], dtype=np.int64),
                    np.array(chunk[4], dtype=object),
                    np.array(chunk[5], dtype=object),
                    np.array(chunk[7], dtype=np.float64),
                )
            )
        timed = select(Vote.id, Vote.decision_s).join(Battle, Battle.id == Vote.battle_id)
        timed = timed.where(and_(*vote_conditions(flt)), Vote.decision_s.is_not(None))
        decisions = {int(i): float(d) for i, d in session.execute(timed) if d is not None}
    if not parts:
        parts.append((np.zeros(0, np.int64),) * 3 + (np.zeros(0, object),) * 2 + (np.zeros(0),))
    vote_id, a, b, winner, voter, tstamp = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.lexsort((vote_id, tstamp))
    name_of = np.empty(max(names, default=0) + 1, dtype=object)
    name_of[list(names)] = list(names.values())
    timing = pd.Series(decisions, dtype=np.float64)
    return pd.DataFrame(
        {
            "voter": voter[order],
            "model_a": name_of[a[order]],
            "model_b": name_of[b[order]],
            "winner": winner[order],
            "tstamp": tstamp[order],
            "decision_s": timing.reindex(vote_id[order]).to_numpy(dtype=np.float64),
        }
    )


def flag_anomalous_voters(url: str, voters: Iterable[str], *, actor: str, now: datetime) -> list[str]:
    """Set ``voter_sessions.anomalous`` for those of ``voters`` that are voter sessions not yet flagged,
    with one ``audit_log`` row each (action "flag-anomalous"); return the ids changed, sorted.
    Never clears a flag; names that are no voter session (imported judge labels) are skipped."""
    from sqlalchemy import select, update

    from storage.schema import AuditEntry, VoterSession

    wanted = sorted({str(v) for v in voters})
    changed: list[str] = []
    with db_sessions(url) as sessions, sessions.begin() as db:
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            found = db.scalars(
                select(VoterSession.id).where(VoterSession.id.in_(batch), VoterSession.anomalous.is_(False))
            ).all()
            changed.extend(found)
        for start in range(0, len(changed), 500):
            db.execute(
                update(VoterSession)
                .where(VoterSession.id.in_(changed[start : start + 500]))
                .values(anomalous=True)
            )
        db.add_all(
            AuditEntry(
                actor=actor,
                action="flag-anomalous",
                target=voter,
                old={"anomalous": False},
                new={"anomalous": True},
                created_at=now,
            )
            for voter in changed
        )
    return sorted(changed)


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


def load_judge_verdicts_db(url: str, judge: str, *, template_version: str | None = None) -> pd.DataFrame:
    """A judge's stored per-order verdicts (``storage.judging.verdict_records``) as a frame.

    Columns: battle_id, model_a, model_b, template_version, answer_order ("ab"/"ba"), verdict ("A",
    "B", "tie" in the order shown, or None), error, tstamp, human_winner (None without a vote).
    """
    from storage.judging import verdict_records

    with db_sessions(url) as sessions, sessions() as session:
        records = verdict_records(session, judge_model=judge, template_version=template_version)
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


def save_result(url: str, kind: str, subject: str, params: dict[str, Any], result: dict[str, Any]) -> None:
    """Keep figures computed from the arena database in it (``storage.judging.save_analysis_result``),
    stamped now, for the admin page."""
    from storage.judging import save_analysis_result

    with db_sessions(url) as sessions, sessions.begin() as db:
        save_analysis_result(
            db, kind=kind, subject=subject, params=params, result=result, now=datetime.now(UTC)
        )


def latest_result(url: str, kind: str) -> dict[str, Any] | None:
    """The newest figures of this kind kept by ``save_result`` (``storage.judging.latest_analysis_result``)."""
    from storage.judging import latest_analysis_result

    with db_sessions(url) as sessions, sessions() as db:
        return latest_analysis_result(db, kind)


def image_loader(store: str | Path) -> Callable[[str], PILImage | None]:
    """Open images of the arena's image store (``storage.images.ImageStore``: a directory or an fsspec
    URL such as ``s3://bucket/images``) by sha256 hash: a PIL image, or None when the store lacks it."""
    from storage.images import ImageStore

    return ImageStore(store).open


__all__ = [
    "BATTLE_COLUMNS",
    "PROJECTABLE_FIELDS",
    "battles_frame",
    "db_sessions",
    "flag_anomalous_voters",
    "image_loader",
    "load_battles_db",
    "load_battles_file",
    "load_first_turns_db",
    "load_pair_counts_db",
    "load_judge_verdicts_db",
    "load_voter_votes_db",
    "latest_result",
    "save_result",
]
