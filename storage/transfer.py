"""Bulk import and export of voted battles in the FastChat / Chatbot Arena "clean battle" format.

Export writes one record per voted battle (anonymous or named; direct chats are not battles), in vote
time order, as a FastChat JSON list (``fastchat``), JSON Lines (``jsonl``) or Parquet (``parquet``).
The same database always gives the same bytes.

Import reads a FastChat JSON list or JSONL file (told apart by content) or a Parquet file (by its
``PAR1`` magic or ``.parquet`` extension) and writes it in one transaction, in batches, in question_id
order (so key indexes grow at their end). No ORM objects are made. A first pass reads only each
record's question_id and models (msgspec, about a microsecond a record); then each batch is validated
while a helper thread writes the batch before it, so the database works while Python validates. A
record the fast, msgspec-typed path does not take goes through the general checks, which decide and
say what is wrong. An invalid file raises :class:`TransferError` naming its first problem in file
order and leaves the database as it was (what was written is rolled back); so does a file the first
pass cannot read, which is then validated whole before anything is written. On SQLite each batch is
staged with ``executemany`` into a TEMPORARY table without constraints (one row per turn, the first
also carrying the battle and its vote), then moved with one ``INSERT ... SELECT`` per table on the
helper thread (sqlite3 releases the GIL while a statement runs); on PostgreSQL the helper sends rows
straight into the tables with binary ``COPY``. What import does with the data:

* models missing from the database are created (name = display name, backend ``"imported"``,
  disabled so the arena never samples them for live battles); existing models are matched by name;
* a record whose ``question_id`` is already a battle in the database refuses the whole import (the
  file is not merged into or over existing battles); so does a ``question_id`` repeated in the file;
* battles get state ``"voted"``, source ``"import"``; turns and both sides' answers are rebuilt from
  ``conversation_a``/``conversation_b``. A record without conversations gets ``turn`` (default 1)
  turns with empty prompts and no answers, and exports again without conversation keys;
* ``images`` (a list of image sha256 per turn) become turn images; a hash not yet in ``images`` gets
  a placeholder row (``application/octet-stream``, size 0), since the file does not carry the bytes;
* text holding a NUL character is refused (PostgreSQL cannot store it), on every database alike.

Speed notes: on SQLite the import turns foreign-key enforcement and CHECK constraints off for its own
connection while it runs (it builds every value and reference itself, from validated records, under
SQLite's single write lock). On PostgreSQL, when the role may set ``session_replication_role``, the
transaction sets it to ``replica`` so the per-row foreign-key triggers are skipped, after locking the
referenced pre-existing rows ``FOR KEY SHARE`` just as those triggers would; otherwise the triggers
run and the import is slower. An import that brings more battles than the database holds drops the
indexes it would otherwise grow row by row and builds them again before committing (see
``_defer_indexes``); on PostgreSQL, other sessions then wait until the commit to read or write
battles, votes, turns and responses.
"""

from __future__ import annotations

import gc
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    any_,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from storage.schema import (
    IMPORTED_BACKEND,
    MAX_REASON_CHARS,
    WINNERS,
    Battle,
    Image,
    ModelRow,
    Response,
    Turn,
    TurnImage,
    Vote,
)

try:  # orjson comes with gradio; it parses JSON Lines about three times faster than json
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - exercised only without orjson
    _loads = json.loads

EXPORT_FORMATS = ("fastchat", "jsonl", "parquet")
DEFAULT_BATCH_SIZE = 50_000
#: Without conversations, ``turn`` empty turns are created; this caps what one record can ask for.
MAX_TURNS_WITHOUT_CONVERSATION = 1000
PARQUET_MAGIC = b"PAR1"

_WINNERS = frozenset(WINNERS)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_ID = Battle.__table__.c.id.type.length  # 64
_MAX_MODEL = ModelRow.__table__.c.name.type.length  # 200
_MAX_JUDGE = Vote.__table__.c.judge.type.length  # 128
_MAX_LANGUAGE = Battle.__table__.c.language.type.length  # 32
_EXPORT_CHUNK = 900  # battles a query asks about (old SQLite builds allow 999 parameters)


class TransferError(ValueError):
    """A battle file that cannot be imported (or a database that cannot be exported), said in one line."""


@dataclass(frozen=True)
class ImportReport:
    """What one import wrote, and how fast."""

    path: str
    battles: int
    models_created: tuple[str, ...]
    turns: int
    responses: int
    images_created: int
    seconds: float

    @property
    def battles_per_second(self) -> float:
        return self.battles / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """The one line the CLI prints."""
        return (
            f"imported {self.battles} battles ({self.turns} turns, {self.responses} responses), "
            f"{len(self.models_created)} models created, {self.images_created} image placeholders, "
            f"in {self.seconds:.2f} s ({self.battles_per_second:,.0f} battles/s)"
        )


# --------------------------------------------------------------------------------------------- export


def export_battles(source: Session | Engine | Connection, out_path: str | Path, fmt: str) -> int:
    """Write every voted battle to ``out_path`` in ``fmt`` (fastchat, jsonl or parquet); return the count.

    Records are ordered by vote time, then battle id (byte order), and always serialise the same
    way, so exporting the same database twice gives byte-identical files.
    """
    if fmt not in EXPORT_FORMATS:
        raise TransferError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out_path)
    with _reader(source) as conn:
        _require_schema(conn)
        records = iter_export_records(conn)
        if fmt == "parquet":
            return _write_parquet(records, out)
        return _write_json(records, out, as_list=fmt == "fastchat")


def iter_export_records(conn: Connection | Session) -> Iterator[dict[str, Any]]:
    """Yield the export record of every voted anony/named battle, in export order.

    Keys, in order: question_id, model_a, model_b, winner, judge, turn, anony, language, tstamp,
    conversation_a and conversation_b (left out when the battle has no answers and only empty
    prompts, as after importing a record without conversations), images, and reason when there is one.
    """
    ma = ModelRow.__table__.alias("ma")
    mb = ModelRow.__table__.alias("mb")
    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    battle_order = Battle.id.collate("C") if dialect == "postgresql" else Battle.id
    stmt = (
        select(
            Battle.id,
            ma.c.name,
            mb.c.name,
            Vote.winner,
            Vote.judge,
            Vote.session_id,
            Battle.mode,
            Battle.language,
            Vote.created_at,
            Vote.reason,
        )
        .join(Vote, Vote.battle_id == Battle.id)
        .join(ma, ma.c.id == Battle.model_a_id)
        .join(mb, mb.c.id == Battle.model_b_id)
        .where(Battle.state == "voted", Battle.mode.in_(("anony", "named")))
        .order_by(Vote.created_at, battle_order)
    )
    # Streamed (a server-side cursor on PostgreSQL); each chunk's turns come in three more queries.
    result = conn.execute(stmt.execution_options(yield_per=_EXPORT_CHUNK))
    for chunk in result.partitions():
        turns = _turns_of(conn, [row[0] for row in chunk])
        for battle_id, model_a, model_b, winner, judge, voter, mode, language, voted_at, reason in chunk:
            battle_turns = turns.get(battle_id, [])
            record: dict[str, Any] = {
                "question_id": battle_id,
                "model_a": model_a,
                "model_b": model_b,
                "winner": winner,
                "judge": judge or voter or "arena_user",
                "turn": len(battle_turns),
                "anony": mode == "anony",
                "language": language,
                "tstamp": _as_utc(voted_at).timestamp(),
            }
            if any(t.prompt or t.answers for t in battle_turns):
                record["conversation_a"] = _conversation(battle_turns, "a")
                record["conversation_b"] = _conversation(battle_turns, "b")
            record["images"] = [t.images for t in battle_turns]
            if reason is not None:
                record["reason"] = reason
            yield record


@dataclass
class _ExportTurn:
    prompt: str
    answers: dict[str, str] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)


def _turns_of(conn: Connection | Session, battle_ids: list[str]) -> dict[str, list[_ExportTurn]]:
    """The turns (prompt, answers by side, image hashes) of some battles, in turn order."""
    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    wanted = _member_of(Turn.battle_id, battle_ids, dialect)
    by_id: dict[int, _ExportTurn] = {}
    by_battle: dict[str, list[_ExportTurn]] = {}
    turn_rows = conn.execute(
        select(Turn.id, Turn.battle_id, Turn.prompt).where(wanted).order_by(Turn.battle_id, Turn.index)
    )
    for turn_id, battle_id, prompt in turn_rows:
        turn = by_id[turn_id] = _ExportTurn(prompt)
        by_battle.setdefault(battle_id, []).append(turn)
    responses = conn.execute(
        select(Response.turn_id, Response.side, Response.text)
        .join(Turn, Turn.id == Response.turn_id)
        .where(wanted)
    )
    for turn_id, side, answer in responses:
        by_id[turn_id].answers[side] = answer
    images = conn.execute(
        select(TurnImage.turn_id, TurnImage.image_sha256)
        .join(Turn, Turn.id == TurnImage.turn_id)
        .where(wanted)
        .order_by(TurnImage.turn_id, TurnImage.position)
    )
    for turn_id, sha in images:
        by_id[turn_id].images.append(sha)
    return by_battle


def _member_of(column: Any, values: list[str], dialect: str) -> Any:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``, one parameter instead of thousands."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


def _conversation(turns: list[_ExportTurn], side: str) -> list[dict[str, str]]:
    """One side's conversation in the OpenAI chat shape: each prompt, then that side's answer."""
    messages = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.prompt})
        answer = turn.answers.get(side)
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


def json_export_chunks(
    records: Iterable[dict[str, Any]], *, as_list: bool, records_per_chunk: int = 500
) -> Iterator[str]:
    """The text of a JSON export, a few hundred records at a time (for streaming it without a file).

    JSONL (``as_list=False``): one record a line. FastChat: a JSON list, one record a line inside the
    brackets. Joined, the chunks are exactly what :func:`export_battles` writes.
    """
    count = 0
    parts: list[str] = ["["] if as_list else []
    for record in records:
        line = json.dumps(record, ensure_ascii=False)
        parts.append((("\n" if count == 0 else ",\n") + line) if as_list else line + "\n")
        count += 1
        if len(parts) >= records_per_chunk:
            yield "".join(parts)
            parts = []
    if as_list:
        parts.append("\n]\n" if count else "]\n")
    if parts:
        yield "".join(parts)


def _write_json(records: Iterable[dict[str, Any]], out: Path, *, as_list: bool) -> int:
    """Write a JSONL or FastChat JSON-list export (see :func:`json_export_chunks`); return the count."""
    count = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal count
        for record in records:
            count += 1
            yield record

    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for chunk in json_export_chunks(counted(), as_list=as_list):
            fh.write(chunk)
    return count


def _parquet_schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("question_id", pa.string()),
            ("model_a", pa.string()),
            ("model_b", pa.string()),
            ("winner", pa.string()),
            ("judge", pa.string()),
            ("turn", pa.int64()),
            ("anony", pa.bool_()),
            ("language", pa.string()),
            ("tstamp", pa.float64()),
            ("conversation_a", pa.list_(message)),
            ("conversation_b", pa.list_(message)),
            ("images", pa.list_(pa.list_(pa.string()))),
            ("reason", pa.string()),
        ]
    )


def _write_parquet(records: Iterable[dict[str, Any]], out: Path) -> int:
    """One Parquet file with a fixed schema; absent conversations and reasons are nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(record)
            if len(batch) == DEFAULT_BATCH_SIZE:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count


@contextmanager
def _reader(source: Session | Engine | Connection) -> Iterator[Connection | Session]:
    """Something to run selects on, from whatever the caller holds."""
    if isinstance(source, Engine):
        with source.connect() as conn:
            yield conn
    else:
        yield source


def _require_schema(conn: Connection | Session) -> None:
    bind = conn.connection() if isinstance(conn, Session) else conn
    if not inspect(bind).has_table(Battle.__tablename__):
        raise TransferError(
            "the database has no arena schema; run `python -m storage upgrade --db URL` first"
        )


def _as_utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back naive; they were written as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------- reading


@dataclass
class _Source:
    """An opened battle file: its records as (position, record), and what a position counts.

    Positions are 1-based: line numbers for JSONL, list indices for a JSON list, rows for Parquet.
    A record is its raw JSON text (``bytes`` or ``msgspec.Raw``, decoded while it is validated) or,
    from Parquet, a dict.
    """

    word: str
    records: Iterator[tuple[int, Any]]
    size: int = 0  # positions expected, for the progress bar (0: unknown)
    may_hold_nul: bool = True  # False when the file cannot contain a NUL character in a string
    #: Every record's question_id and models in one call, for JSON (see ``_scan``).
    keys: Callable[[], list[_Key]] | None = None


def _read_records(path: Path) -> _Source:
    """Open a battle file, telling JSON list, JSONL and Parquet apart."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise TransferError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TransferError(f"{path}: is a directory") from None
    if head == PARQUET_MAGIC or path.suffix.lower() == ".parquet":
        return _read_parquet(path)
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    # JSON can only spell NUL as an escape; without one, no string needs the per-string check.
    may_hold_nul = b"\\u0000" in data
    stripped = data.lstrip()
    if not stripped:
        return _Source("record", iter(()))
    if stripped[:1] == b"[":
        keys = partial(msgspec.json.decode, data, type=list[_Key])
        return _Source("record", _read_json_list(data, path), 0, may_hold_nul, keys)
    if stripped[:1] == b"{":
        keys = partial(_KEY_DECODER.decode_lines, data)
        lines = data.split(b"\n")
        return _Source("line", _read_jsonl(lines), len(lines), may_hold_nul, keys)
    raise TransferError(f"{path}: not a FastChat battle file (expected a JSON list, JSON Lines or Parquet)")


def _read_json_list(data: bytes, path: Path) -> Iterator[tuple[int, Any]]:
    """The list's items as raw JSON (split by msgspec without decoding them), else decoded by the
    general decoder, which also says what is wrong with a malformed file."""
    try:
        return enumerate(msgspec.json.decode(data, type=list[msgspec.Raw]), start=1)
    except msgspec.MsgspecError:
        pass
    try:
        items = _loads(data)
    except ValueError as exc:
        raise TransferError(f"{path}: malformed or truncated JSON: {_json_problem(exc, True)}") from None
    if not isinstance(items, list):
        raise TransferError(f"{path}: expected a JSON list of battle records")
    return enumerate(items, start=1)


def _read_jsonl(lines: list[bytes]) -> Iterator[tuple[int, bytes]]:
    return iter([(lineno, line) for lineno, line in enumerate(lines, start=1) if line and not line.isspace()])


def _json_problem(exc: ValueError, with_line: bool) -> str:
    if isinstance(exc, json.JSONDecodeError):
        where = f"line {exc.lineno}, column {exc.colno}" if with_line else f"column {exc.colno}"
        return f"{exc.msg} ({where})"
    return str(exc)


def _read_parquet(path: Path) -> _Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise TransferError(f"{path}: not a readable Parquet file: {exc}") from None

    def rows() -> Iterator[tuple[int, Any]]:
        position = 0
        for batch in parquet.iter_batches(batch_size=DEFAULT_BATCH_SIZE):
            for record in batch.to_pylist():
                position += 1
                # Parquet has no absent keys: a null optional column means "not given".
                yield position, {k: v for k, v in record.items() if v is not None}

    return _Source("row", rows(), parquet.metadata.num_rows)


# ------------------------------------------------------------------------------------------ validation

#: A validated turn: the prompt, side a's and side b's answer (None: no answer), image hashes in order.
_Turn = tuple[str, "str | None", "str | None", tuple[str, ...]]
_NO_IMAGES: tuple[str, ...] = ()


@dataclass
class _Plan:
    """Validated battles, one tuple each, ready to be written.

    A battle is (question_id, mode, model_a, model_b, language, time, winner, judge, reason, turns).
    """

    battles: list[tuple[Any, ...]] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)  # question_id -> position in the file
    word: str = "record"  # what a position counts: line, record or row

    def model_names(self) -> set[str]:
        return {b[2] for b in self.battles} | {b[3] for b in self.battles}


class _Problem(Exception):
    """A record-level validation problem; the caller adds where it is."""


def _validate(
    path: Path, source: _Source, records: Iterable[tuple[int, Any]], now: datetime, progress: Any
) -> _Plan:
    """Check every record, in file order, and keep what to write; the first problem raises
    TransferError."""
    word = source.word
    plan = _Plan(word=word)
    positions = plan.positions
    battles = plan.battles
    check = _Checker(path, source, now).battle
    tick = 0
    for position, item in records:
        battle = check(position, item)
        qid = battle[0]
        if qid in positions:
            raise TransferError(
                f"{path}: {_where(word, position, qid)}: duplicate question_id "
                f"(already at {word} {positions[qid]})"
            )
        positions[qid] = position
        battles.append(battle)
        tick += 1
        if tick == 10_000:
            progress.update(tick)
            tick = 0
    progress.update(tick)
    return plan


class _Checker:
    """Validates single records of one file into battle tuples (see ``_Plan``).

    Raw JSON records first go through ``_fast_battle`` (decoded and type-checked by msgspec in C);
    whatever it does not take, invalid or just unusual, is decoded again and checked by
    ``_check_record``, which decides and says what is wrong.
    """

    def __init__(self, path: Path, source: _Source, now: datetime) -> None:
        self.path = path
        self.word = source.word
        self.may_hold_nul = source.may_hold_nul
        self.now_ts = now.timestamp()
        self.fast_decode = _FAST_DECODER.decode

    def battle(self, position: int, item: Any) -> tuple[Any, ...]:
        """The battle tuple of the record at ``position``; TransferError if it is not valid."""
        battle = None
        raw = type(item) is bytes or type(item) is msgspec.Raw
        if raw:
            try:
                battle = _fast_battle(self.fast_decode(item), self.now_ts)
            except (msgspec.MsgspecError, OverflowError, OSError, ValueError):
                battle = None
        if battle is None:
            record = _decode(self.path, self.word, position, item) if raw else item
            qid = record.get("question_id") if type(record) is dict else None
            try:
                if type(record) is not dict:
                    raise _Problem(f"expected a JSON object, got {type(record).__name__}")
                battle = _check_record(record, self.now_ts)
            except _Problem as problem:
                raise TransferError(f"{self.path}: {_where(self.word, position, qid)}: {problem}") from None
        if self.may_hold_nul:
            try:
                _refuse_nul(battle)
            except _Problem as problem:
                raise TransferError(
                    f"{self.path}: {_where(self.word, position, battle[0])}: {problem}"
                ) from None
        return battle


def _decode(path: Path, word: str, position: int, raw: Any) -> Any:
    """One raw JSON record, decoded by the general decoder (which explains malformed JSON)."""
    try:
        return _loads(bytes(raw))
    except ValueError as exc:
        raise TransferError(
            f"{path}: {word} {position}: malformed or truncated JSON record: {_json_problem(exc, False)}"
        ) from None


# The common shape of a record, which msgspec decodes and type-checks in C. Field by field it accepts
# a subset of what ``_check_record`` accepts and yields the same values; ``_fast_battle`` checks the
# rest, and anything either refuses goes to ``_check_record``.
class _FastMessage(msgspec.Struct, gc=False):
    role: str
    content: str


class _FastRecord(msgspec.Struct, gc=False):
    question_id: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_ID)]
    model_a: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_MODEL)]
    model_b: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_MODEL)]
    winner: Literal["model_a", "model_b", "tie", "tie (bothbad)"]
    judge: Annotated[str, msgspec.Meta(max_length=_MAX_JUDGE)] | None = None
    turn: Annotated[int, msgspec.Meta(ge=1, le=MAX_TURNS_WITHOUT_CONVERSATION)] | None = None
    anony: bool = True
    language: Annotated[str, msgspec.Meta(max_length=_MAX_LANGUAGE)] | None = None
    tstamp: float | None = None
    conversation_a: list[_FastMessage] | None = None
    conversation_b: list[_FastMessage] | None = None
    images: list[list[str]] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)] | None = None


_FAST_DECODER = msgspec.json.Decoder(_FastRecord)


def _fast_battle(record: _FastRecord, now_ts: float) -> tuple[Any, ...] | None:
    """The battle tuple of a record in the common shape, as ``_check_record`` makes it; None when
    the record needs the general checks (it may still be valid)."""
    model_a = record.model_a
    model_b = record.model_b
    if model_a == model_b:
        return None
    tstamp = record.tstamp
    moment = datetime.fromtimestamp(now_ts if tstamp is None else tstamp, UTC)
    conversation_a = record.conversation_a
    conversation_b = record.conversation_b
    turn = record.turn
    if conversation_a and conversation_b:
        if len(conversation_a) == 2 and len(conversation_b) == 2:
            user_a, reply_a = conversation_a
            user_b, reply_b = conversation_b
            prompt = user_a.content
            if not (
                user_a.role == "user"
                and user_b.role == "user"
                and reply_a.role == "assistant"
                and reply_b.role == "assistant"
                and prompt == user_b.content
            ):
                return None
            turns: list[_Turn] = [(prompt, reply_a.content, reply_b.content, _NO_IMAGES)]
        else:
            turns = _fast_turns(conversation_a, conversation_b)
            if turns is None:
                return None
        if turn is not None and turn != len(turns):
            return None
    elif conversation_a or conversation_b:  # one side only
        return None
    else:  # none (absent, null or empty on both sides)
        turns = [("", None, None, _NO_IMAGES)] * (1 if turn is None else turn)
    images = record.images
    if images is not None:
        if len(images) != len(turns):
            return None
        if any(images):
            fullmatch = _SHA256.fullmatch
            for hashes in images:
                for sha in hashes:
                    if not fullmatch(sha):
                        return None
            turns = [(p, a, b, tuple(hashes)) for (p, a, b, _), hashes in zip(turns, images, strict=True)]
    return (
        record.question_id,
        "anony" if record.anony else "named",
        model_a,
        model_b,
        record.language,
        moment,
        record.winner,
        record.judge,
        record.reason,
        turns,
    )


def _fast_turns(conversation_a: list[_FastMessage], conversation_b: list[_FastMessage]) -> list[_Turn] | None:
    """Turns of two well-formed multi-turn conversations with the same prompts; else None."""
    side_a = _fast_split(conversation_a)
    side_b = _fast_split(conversation_b)
    if side_a is None or side_b is None or len(side_a) != len(side_b):
        return None
    turns: list[_Turn] = []
    for (prompt, answer_a), (prompt_b, answer_b) in zip(side_a, side_b, strict=True):
        if prompt != prompt_b:
            return None
        turns.append((prompt, answer_a, answer_b, _NO_IMAGES))
    return turns


def _fast_split(messages: list[_FastMessage]) -> list[tuple[str, str | None]] | None:
    turns: list[tuple[str, str | None]] = []
    for message in messages:
        role = message.role
        if role == "user":
            turns.append((message.content, None))
        elif role == "assistant" and turns and turns[-1][1] is None:
            turns[-1] = (turns[-1][0], message.content)
        else:
            return None
    return turns


def _refuse_nul(battle: tuple[Any, ...]) -> None:
    """PostgreSQL text cannot hold NUL; refuse it everywhere so every database takes the same files."""
    texts = [battle[0], battle[2], battle[3], battle[4], battle[7], battle[8]]
    texts += [text for turn in battle[9] for text in turn[:3]]
    if any(text is not None and "\x00" in text for text in texts):
        raise _Problem("text holds a NUL character (\\u0000), which PostgreSQL cannot store")


def _where(word: str, position: int, qid: Any) -> str:
    if type(qid) is str:
        return f"{word} {position} (question_id {qid!r})"
    return f"{word} {position}"


def _check_record(record: dict[str, Any], now_ts: float) -> tuple[Any, ...]:
    """Validate one record; return its battle tuple (see ``_Plan``)."""
    get = record.get
    qid = get("question_id")
    model_a = get("model_a")
    model_b = get("model_b")
    winner = get("winner")
    if not (
        type(qid) is str
        and 0 < len(qid) <= _MAX_ID
        and type(model_a) is str
        and 0 < len(model_a) <= _MAX_MODEL
        and type(model_b) is str
        and 0 < len(model_b) <= _MAX_MODEL
        and model_a != model_b
        and winner in _WINNERS
    ):
        raise _Problem(_required_problem(record))

    judge = get("judge")
    turn = get("turn")
    anony = get("anony", True)
    language = get("language")
    tstamp = get("tstamp")
    reason = get("reason")
    if judge is not None and not (type(judge) is str and len(judge) <= _MAX_JUDGE):
        raise _Problem(_text_problem("judge", judge, _MAX_JUDGE))
    if turn is not None and not (type(turn) is int and turn >= 1):
        raise _Problem(f"turn must be a whole number >= 1, got {turn!r}")
    if type(anony) is not bool:
        raise _Problem(f"anony must be true or false, got {anony!r}")
    if language is not None and not (type(language) is str and len(language) <= _MAX_LANGUAGE):
        raise _Problem(_text_problem("language", language, _MAX_LANGUAGE))
    if reason is not None and not (type(reason) is str and len(reason) <= MAX_REASON_CHARS):
        raise _Problem(_text_problem("reason", reason, MAX_REASON_CHARS))
    if tstamp is None:
        tstamp = now_ts
    elif type(tstamp) is not float and type(tstamp) is not int:
        raise _Problem(f"tstamp must be a number of seconds since 1970, got {tstamp!r}")
    try:
        moment = datetime.fromtimestamp(tstamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise _Problem(f"tstamp {tstamp!r} is not a usable time") from None

    turns = _turns_from(get("conversation_a"), get("conversation_b"))
    if turns is None:
        count = 1 if turn is None else turn
        if count > MAX_TURNS_WITHOUT_CONVERSATION:
            raise _Problem(
                f"turn {count} without conversations; at most {MAX_TURNS_WITHOUT_CONVERSATION} allowed"
            )
        turns = [("", None, None, _NO_IMAGES)] * count
    elif turn is not None and turn != len(turns):
        raise _Problem(f"turn is {turn} but the conversations have {len(turns)} user turn(s)")
    images = get("images")
    if images is not None:
        _check_images(images, len(turns))
        if any(images):
            turns = [(p, a, b, tuple(hashes)) for (p, a, b, _), hashes in zip(turns, images, strict=True)]
    mode = "anony" if anony else "named"
    return (qid, mode, model_a, model_b, language, moment, winner, judge, reason, turns)


def _required_problem(record: dict[str, Any]) -> str:
    """Say exactly what is wrong with the required fields of a record that failed the fast check."""
    missing = [k for k in ("question_id", "model_a", "model_b", "winner") if record.get(k) is None]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    for key, limit in (("question_id", _MAX_ID), ("model_a", _MAX_MODEL), ("model_b", _MAX_MODEL)):
        value = record[key]
        if type(value) is not str or not value or len(value) > limit:
            return _text_problem(key, value, limit, empty_ok=False)
    winner = record["winner"]
    if winner not in _WINNERS:
        return f"unknown winner {winner!r}; expected one of {', '.join(WINNERS)}"
    return f"model_a and model_b are the same model ({record['model_a']!r})"


def _text_problem(key: str, value: Any, limit: int, *, empty_ok: bool = True) -> str:
    if type(value) is not str:
        return f"{key} must be a string, got {type(value).__name__} {value!r}"[:300]
    if not value and not empty_ok:
        return f"{key} must not be empty"
    return f"{key} is {len(value)} characters long; at most {limit} allowed"


def _turns_from(conversation_a: Any, conversation_b: Any) -> list[_Turn] | None:
    """Turns rebuilt from both conversations; None when the record has none."""
    if not conversation_a and not conversation_b:
        if conversation_a not in (None, []) or conversation_b not in (None, []):
            raise _Problem("conversation_a and conversation_b must be lists of messages")
        return None
    simple = _simple_turn(conversation_a, conversation_b)
    if simple is not None:
        return simple
    if conversation_a is None or conversation_b is None:
        given = "conversation_a" if conversation_b is None else "conversation_b"
        raise _Problem(f"only {given} is given; a battle needs both conversations")
    side_a = _split_conversation(conversation_a, "conversation_a")
    side_b = _split_conversation(conversation_b, "conversation_b")
    if len(side_a) != len(side_b):
        raise _Problem(f"conversation_a has {len(side_a)} user turn(s) but conversation_b has {len(side_b)}")
    turns: list[_Turn] = []
    for number, ((prompt_a, answer_a), (prompt_b, answer_b)) in enumerate(
        zip(side_a, side_b, strict=True), start=1
    ):
        if prompt_a != prompt_b:
            raise _Problem(f"user turn {number} differs between conversation_a and conversation_b")
        turns.append((prompt_a, answer_a, answer_b, _NO_IMAGES))
    return turns


def _simple_turn(conversation_a: Any, conversation_b: Any) -> list[_Turn] | None:
    """The common shape, one [user, assistant] exchange on each side with the same prompt, checked
    cheaply; None for anything else (which the general path then checks or explains)."""
    if not (
        type(conversation_a) is list
        and type(conversation_b) is list
        and len(conversation_a) == 2
        and len(conversation_b) == 2
    ):
        return None
    user_a, reply_a = conversation_a
    user_b, reply_b = conversation_b
    if not (
        type(user_a) is dict
        and type(reply_a) is dict
        and type(user_b) is dict
        and type(reply_b) is dict
        and user_a.get("role") == "user"
        and user_b.get("role") == "user"
        and reply_a.get("role") == "assistant"
        and reply_b.get("role") == "assistant"
    ):
        return None
    prompt = user_a.get("content")
    answer_a = reply_a.get("content")
    answer_b = reply_b.get("content")
    if (
        type(prompt) is str
        and type(answer_a) is str
        and type(answer_b) is str
        and prompt == user_b.get("content")
    ):
        return [(prompt, answer_a, answer_b, _NO_IMAGES)]
    return None


def _split_conversation(messages: Any, key: str) -> list[tuple[str, str | None]]:
    """[(prompt, answer or None)] from an OpenAI-style list of user and assistant messages."""
    if type(messages) is not list:
        raise _Problem(f"{key} must be a list of messages, got {type(messages).__name__}")
    turns: list[tuple[str, str | None]] = []
    for number, message in enumerate(messages, start=1):
        if type(message) is not dict:
            raise _Problem(f"{key} message {number} must be an object, got {type(message).__name__}")
        role = message.get("role")
        content = message.get("content")
        if type(content) is not str:
            raise _Problem(f"{key} message {number}: content must be a string, got {type(content).__name__}")
        if role == "user":
            turns.append((content, None))
        elif role == "assistant":
            if not turns or turns[-1][1] is not None:
                raise _Problem(f"{key} message {number}: an assistant message must follow a user message")
            turns[-1] = (turns[-1][0], content)
        else:
            raise _Problem(f"{key} message {number}: role must be 'user' or 'assistant', got {role!r}")
    return turns


def _check_images(images: Any, turns: int) -> None:
    if type(images) is not list or len(images) != turns:
        raise _Problem(f"images must be a list with one list of sha256 hashes per turn ({turns})")
    for number, hashes in enumerate(images, start=1):
        if type(hashes) is not list:
            raise _Problem(f"images for turn {number} must be a list of sha256 hashes")
        for sha in hashes:
            if type(sha) is not str or not _SHA256.fullmatch(sha):
                raise _Problem(f"images for turn {number}: {sha!r} is not a lowercase hex sha256")


# ---------------------------------------------------------------------------------------------- import

# The per-batch staging table, private to the import's connection (no constraints, no indexes): one
# row per turn, the first turn of each battle also carrying the battle's and its vote's columns. Rows
# are bulk-loaded here, then moved into the real tables with one INSERT ... SELECT each.
_STAGING = MetaData()
#: The columns both writers fill for an imported battle and its vote.
_BATTLE_COLUMNS = (
    "id",
    "mode",
    "model_a_id",
    "model_b_id",
    "state",
    "language",
    "source",
    "created_at",
    "updated_at",
)
_VOTE_COLUMNS = ("battle_id", "winner", "judge", "reason", "created_at")
_TURN_COLUMNS = ("id", "battle_id", "index", "prompt", "created_at")
_RESPONSE_COLUMNS = ("turn_id", "side", "model_id", "text", "started_at", "output_chunks")

#: Staged rows (see ``_turn_rows``) have these columns, in this order.
_STAGE_TURNS = Table(
    "arena_import_turns",
    _STAGING,
    Column("id", Integer),
    Column("battle_id", String(64)),
    Column("idx", Integer),
    Column("prompt", Text),
    Column("model_a_id", Integer),
    Column("answer_a", Text),
    Column("model_b_id", Integer),
    Column("answer_b", Text),
    Column("at", DateTime(timezone=True)),
    Column("mode", String(16)),
    Column("language", String(32)),
    Column("winner", String(16)),
    Column("judge", String(128)),
    Column("reason", Text),
    prefixes=["TEMPORARY"],
)
_STAGE_IMAGES = Table(
    "arena_import_turn_images",
    _STAGING,
    Column("turn_id", Integer),
    Column("position", Integer),
    Column("image_sha256", String(64)),
    prefixes=["TEMPORARY"],
)


def import_battles(
    engine: Engine,
    path: str | Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    now: datetime | None = None,
) -> ImportReport:
    """Import a FastChat battle file (JSON list, JSONL or Parquet) into the database, all or nothing.

    The inserts run in one transaction, ``batch_size`` battles at a time, in question_id order.
    A quick first pass reads every record's question_id and models; then each batch is validated
    while a helper thread writes the one before (the database works meanwhile), so an invalid record
    rolls back what was written. ``now`` stands in for records without ``tstamp`` (default: the
    current time). Raises :class:`TransferError` for an invalid file (naming its first problem in
    file order) or a question_id the database already holds; the database is then unchanged.
    ``progress`` draws tqdm bars on stderr. The cyclic garbage collector is paused while the import
    runs.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    path = Path(path)
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    # Hundreds of thousands of small containers: the cyclic GC would rescan them all, many times.
    gc.disable()
    try:
        source = _read_records(path)
        records = list(source.records)
        job = _scan(path, source, records, now, batch_size)
        written = None
        if job is not None:
            with engine.connect() as conn:
                _require_schema(conn)
                with tqdm(total=len(records), desc="import", unit="battle", disable=not progress) as bar:
                    try:
                        written = _write(conn, job, path, now, bar.update)
                    except _Rescan:
                        written = None  # rolled back; the plain way below names the problem
        if written is None:  # validate everything in file order first, then write
            with tqdm(
                total=source.size or None,
                desc="validate",
                unit=source.word,
                disable=not progress,
                leave=False,
            ) as bar:
                plan = _validate(path, source, records, now, bar)
            job = _planned_job(plan, batch_size)
            with engine.connect() as conn:
                _require_schema(conn)
                with tqdm(total=len(job.qids), desc="import", unit="battle", disable=not progress) as bar:
                    written = _write(conn, job, path, now, bar.update)
    finally:
        if gc_was_enabled:
            gc.enable()
    return ImportReport(
        path=str(path),
        battles=len(job.qids),
        models_created=tuple(written.models_created),
        turns=written.turns,
        responses=written.responses,
        images_created=written.images_created,
        seconds=time.perf_counter() - started,
    )


class _Rescan(Exception):
    """A batch validated during the import holds a problem, or differs from what the first pass read
    of it: the import is rolled back and the file validated from its start, in file order."""


@dataclass
class _Job:
    """What to write: validated battles in batches, in question_id order, and what is known of them
    before the first batch (every question_id, where it is in the file, every model name)."""

    word: str
    qids: list[str]  # in any order
    positions: Callable[[], dict[str, int]]  # question_id -> position (asked for only on errors)
    models: set[str]
    batches: Iterator[list[tuple[Any, ...]]]


def _planned_job(plan: _Plan, batch_size: int) -> _Job:
    """A job over battles validated beforehand."""
    # Inserting in key order keeps every index append-only (ids in files are often random hex).
    battles = sorted(plan.battles, key=itemgetter(0))
    return _Job(
        plan.word,
        [battle[0] for battle in battles],
        lambda: plan.positions,
        plan.model_names(),
        (battles[start : start + batch_size] for start in range(0, len(battles), batch_size)),
    )


class _Key(msgspec.Struct, gc=False):
    question_id: str
    model_a: str
    model_b: str


_KEY_DECODER = msgspec.json.Decoder(_Key)


def _scan(
    path: Path, source: _Source, records: list[tuple[int, Any]], now: datetime, batch_size: int
) -> _Job | None:
    """A job that validates each batch just before it is written, after a first pass that reads
    only every record's question_id and models (about a microsecond a record); None when that pass
    finds anything odd (a malformed or invalid record, a repeated question_id), for the caller to
    validate everything first and report it."""
    if source.keys is not None:  # JSON: one call (a key that does not line up fails validation)
        try:
            keys = source.keys()
        except msgspec.MsgspecError:
            return None
        if len(keys) != len(records):
            return None
    else:
        keys = []
        for _, item in records:
            if type(item) is not dict:
                return None
            key = _Key(item.get("question_id"), item.get("model_a"), item.get("model_b"))  # type: ignore[arg-type]
            if not (type(key.question_id) is str and type(key.model_a) is str and type(key.model_b) is str):
                return None
            keys.append(key)
    qids = [key.question_id for key in keys]
    models = {key.model_a for key in keys}
    models.update(key.model_b for key in keys)
    if len(set(qids)) != len(qids):
        return None
    order = sorted(range(len(qids)), key=qids.__getitem__)

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        check = _Checker(path, source, now).battle
        for start in range(0, len(order), batch_size):
            batch = []
            for i in order[start : start + batch_size]:
                position, item = records[i]
                try:
                    battle = check(position, item)
                except TransferError:
                    raise _Rescan from None
                if battle[0] != qids[i] or battle[2] not in models or battle[3] not in models:
                    raise _Rescan
                batch.append(battle)
            yield batch

    return _Job(
        source.word,
        qids,
        lambda: {qid: position for qid, (position, _) in zip(qids, records, strict=True)},
        models,
        batches(),
    )


@dataclass
class _Written:
    models_created: list[str]
    images_created: int = 0
    turns: int = 0
    responses: int = 0


def _write(
    conn: Connection, job: _Job, path: Path, now: datetime, advance: Callable[[int], None]
) -> _Written:
    """Insert the job's battles in one transaction (rolled back on any error)."""
    try:
        with _bulk_session(conn) as loader:
            model_ids, created = _ensure_models(conn, job.models, now)
            _refuse_existing(conn, job, path)
            lock_images = conn.dialect.name == "postgresql" and bool(
                _skip_fk_triggers(conn, model_ids.values())
            )
            written = _Written(created)
            images = _ImagePlaceholders(conn, now, lock_images)
            rebuild = _defer_indexes(conn, len(job.qids))
            with _Pipeline(conn) as pipeline:
                for batch in job.batches:  # validated here while the helper writes the batch before
                    step = partial(_load, conn, loader, batch, model_ids, images, written)
                    if loader.stages_in_caller:
                        pipeline.wait()
                        pipeline.run(step())
                    else:
                        pipeline.run(step)
                    advance(len(batch))
            written.images_created = images.created
            loader.finish()
            for statement in rebuild:
                conn.exec_driver_sql(statement)
            if conn.dialect.name == "postgresql":
                # Fresh statistics, as after any bulk load: without them the planner takes the new
                # rows for a handful and picks sequential scans for later lookups.
                tables = (Battle, Vote, Turn, Response, TurnImage)
                conn.exec_driver_sql("ANALYZE " + ", ".join(t.__tablename__ for t in tables))
            conn.commit()
    except (IntegrityError, conn.dialect.loaded_dbapi.IntegrityError) as exc:
        # (The loaders write through the driver: its own errors come unwrapped.)
        conn.rollback()
        clash = _existing_ids(conn, job.qids)
        conn.rollback()
        if clash:
            raise _existing_error(job, path, clash) from None
        raise TransferError(f"{path}: the database refused the import: {_first_line(exc)}") from None
    except (DataError, conn.dialect.loaded_dbapi.DataError) as exc:
        raise TransferError(f"{path}: the database refused a value: {_first_line(exc)}") from None
    return written


def _load(
    conn: Connection,
    loader: _Loader,
    batch: list[tuple[Any, ...]],
    model_ids: dict[str, int],
    images: _ImagePlaceholders,
    written: _Written,
) -> Callable[[], None] | None:
    """Write one batch of validated battles; return what is left to run (see ``_Loader.load``)."""
    turns = sum(len(battle[9]) for battle in batch)
    turn_ids = _allocate_turn_ids(conn, turns)
    rows, image_rows, answers = _turn_rows(batch, model_ids, turn_ids, loader.time)
    if image_rows:
        images.ensure({row[2] for row in image_rows})
    written.turns += turns
    written.responses += answers
    return loader.load(rows, image_rows, answers)


class _Pipeline:
    """Runs one step at a time on a helper thread, so that the caller can validate the next batch
    meanwhile: on PostgreSQL the helper mostly waits for the server, on SQLite it runs statements
    during which sqlite3 releases the GIL. Steps run inline where the connection cannot be used
    from another thread."""

    def __init__(self, conn: Connection) -> None:
        self.executor: ThreadPoolExecutor | None = None
        self.pending: Future[None] | None = None
        if conn.dialect.name in ("sqlite", "postgresql"):
            self.executor = ThreadPoolExecutor(1, thread_name_prefix="arena-import")
            raw = conn.connection.driver_connection
            try:  # an sqlite3 connection may be bound to the thread that opened it
                self.executor.submit(raw.cursor).result()
            except Exception:
                self.executor.shutdown()
                self.executor = None

    def run(self, step: Callable[[], Any] | None) -> None:
        """Start ``step`` once the previous one is done."""
        self.wait()
        if step is None:
            return
        if self.executor is None:
            step()
        else:
            self.pending = self.executor.submit(step)

    def wait(self) -> None:
        """Wait for the running step (raising what it raised)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self.pending is not None:  # let it finish before the rollback; the first error wins
                futures_wait([self.pending])
        finally:
            if self.executor is not None:
                self.executor.shutdown()


class _ImagePlaceholders:
    """Creates a placeholder row for each image hash the import needs and ``images`` lacks (and, when
    PostgreSQL's foreign-key triggers are skipped, locks the existing ones as the triggers would)."""

    def __init__(self, conn: Connection, now: datetime, lock: bool) -> None:
        self.conn = conn
        self.now = now
        self.lock = lock
        self.seen: set[str] = set()
        self.created = 0

    def ensure(self, hashes: set[str]) -> None:
        new = hashes - self.seen
        if not new:
            return
        self.seen |= new
        missing = _missing_images(self.conn, new)
        if self.lock:
            _lock_images(self.conn, new.difference(missing))
        if missing:
            self.conn.execute(
                insert(Image.__table__),
                [
                    {
                        "sha256": sha,
                        "mime": "application/octet-stream",
                        "width": 0,
                        "height": 0,
                        "size_bytes": 0,
                        "created_at": self.now,
                    }
                    for sha in missing
                ],
            )
            self.created += len(missing)


def _first_line(exc: Exception) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _turn_rows(
    batch: list[tuple[Any, ...]],
    model_ids: dict[str, int],
    turn_ids: Iterator[int],
    time: Callable[[datetime], Any],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """The staged rows of a batch of battles (one per turn, columns as ``_STAGE_TURNS``; only a
    battle's first turn carries mode, language, winner, judge and reason), its turn image rows
    (turn_id, position, sha256) and its number of answers."""
    rows = []
    image_rows = []
    answers = 0
    append = rows.append
    for qid, mode, a, b, language, moment, winner, judge, reason, turns in batch:
        a_id = model_ids[a]
        b_id = model_ids[b]
        at = time(moment)
        prompt, answer_a, answer_b, hashes = turns[0]
        turn_id = next(turn_ids)
        append(
            (
                turn_id,
                qid,
                0,
                prompt,
                a_id,
                answer_a,
                b_id,
                answer_b,
                at,
                mode,
                language,
                winner,
                judge,
                reason,
            )
        )
        answers += (answer_a is not None) + (answer_b is not None)
        if hashes:
            image_rows.extend((turn_id, position, sha) for position, sha in enumerate(hashes))
        for index in range(1, len(turns)):
            prompt, answer_a, answer_b, hashes = turns[index]
            turn_id = next(turn_ids)
            append(
                (
                    turn_id,
                    qid,
                    index,
                    prompt,
                    a_id,
                    answer_a,
                    b_id,
                    answer_b,
                    at,
                    None,
                    None,
                    None,
                    None,
                    None,
                )
            )
            answers += (answer_a is not None) + (answer_b is not None)
            if hashes:
                image_rows.extend((turn_id, position, sha) for position, sha in enumerate(hashes))
    return rows, image_rows, answers


@contextmanager
def _bulk_session(conn: Connection) -> Iterator[_Loader]:
    """The fastest loader for this dialect, with the connection set up for bulk writes.

    Rolls back whatever is still open on the way out (the caller commits on success).
    """
    dialect = conn.dialect.name
    raw = conn.connection.driver_connection
    saved: dict[str, Any] = {}
    if dialect == "sqlite":
        saved = {name: raw.execute(f"PRAGMA {name}").fetchone()[0] for name in _SQLITE_IMPORT_PRAGMAS}
        # Before the transaction begins (a PRAGMA foreign_keys inside one is ignored).
        for name, value in _SQLITE_IMPORT_PRAGMAS.items():
            raw.execute(f"PRAGMA {name}={value}")
    try:
        # Lock the models' rows against deletion as foreign keys would; on SQLite this first
        # statement takes the write lock, so nothing changes under the import's feet.
        conn.execute(select(ModelRow.id).with_for_update(key_share=True)).all()
        if dialect == "sqlite":
            yield _SqliteLoader(conn)
        elif dialect == "postgresql":
            yield _CopyLoader(conn)
        else:
            yield _StagedLoader(conn, _core_stager(conn))
    finally:
        if conn.in_transaction():
            conn.rollback()
        if saved:
            for name, value in saved.items():
                raw.execute(f"PRAGMA {name}={int(value)}")
            if any(raw.execute(f"PRAGMA {name}").fetchone()[0] != value for name, value in saved.items()):
                conn.invalidate()  # never hand a connection with the wrong pragmas back to the pool


#: How the import sets up its SQLite connection (each restored afterwards). It builds every value and
#: every reference itself from validated records, under SQLite's single write lock, so it turns off
#: the per-row foreign-key and CHECK constraint checks (SQLite re-evaluates each ``IN (...)`` check
#: list per row, which cost more than a third of the write time). Temporary storage stays where the
#: connection keeps it (a file): with ``temp_store=MEMORY`` the sorter behind each rebuilt index ran
#: 0.8-1.1 s slower for 500,000 battles, which outweighed staging in memory. A larger page cache than
#: 64 MiB did not help (the import's pages spill into the WAL while the helper thread writes).
_SQLITE_IMPORT_PRAGMAS = {
    "foreign_keys": "OFF",
    "ignore_check_constraints": "ON",
    "cache_size": "-65536",  # 64 MiB of page cache while the import runs
}


#: How long a PostgreSQL import waits for the locks that dropping indexes takes before it imports
#: with the indexes in place instead.
_DEFER_LOCK_TIMEOUT_MS = 1000


def _defer_indexes(conn: Connection, battles: int) -> list[str]:
    """Drop the indexes an import would otherwise grow row by row, when it brings more battles than
    the database holds; return the statements that build them again (before the commit).

    Building an index once over the finished table costs much less than inserting into it row by
    row (a third of the time here, and the rows then go in three times faster). Dropped are the
    non-unique indexes of the tables an import fills and, on PostgreSQL, their primary key and
    unique constraints that no foreign key refers to (SQLite cannot drop those): the rows an import
    writes are unique by construction, and a rebuild that found otherwise would fail the import like
    an insert. The drop and the rebuild are part of the import's transaction. On PostgreSQL the drop
    locks battles, votes, turns, responses and turn_images against reads as well as writes until the
    commit (when other sessions keep those tables busy for more than a second, the import leaves the
    indexes alone instead); SQLite readers keep reading their snapshot (writers wait for the import
    anyway).
    """
    if not battles or conn.dialect.name not in ("postgresql", "sqlite"):
        return []
    present = conn.scalar(select(func.count()).select_from(select(Battle.id).limit(battles).subquery()))
    if present >= battles:
        return []
    tables = [t.__tablename__ for t in (Battle, Vote, Turn, Response, TurnImage)]
    if conn.dialect.name == "sqlite":
        found = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                " AND tbl_name IN :tables AND upper(substr(ltrim(sql), 1, 13)) = 'CREATE INDEX '"
                " ORDER BY name"
            ).bindparams(bindparam("tables", expanding=True)),
            {"tables": tables},
        ).all()
        for name, _ in found:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        return [sql for _, sql in found]
    try:  # wait briefly for sessions using the tables; if they hold on, import with the indexes
        with conn.begin_nested():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_DEFER_LOCK_TIMEOUT_MS}ms'")
            conn.exec_driver_sql(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            conn.exec_driver_sql("SET LOCAL lock_timeout = DEFAULT")
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        return []
    # Indexes first, then constraints (ALTER TABLE ... ADD) that no foreign key depends on.
    found = conn.execute(
        text(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_indexdef(i.indexrelid),"
            " NULL, NULL"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE i.indrelid = ANY(CAST(:tables AS regclass[])) AND NOT i.indisunique"
            " AND NOT i.indisprimary AND NOT i.indisexclusion"
            " UNION ALL"
            " SELECT quote_ident(k.conname), pg_get_constraintdef(k.oid),"
            " CAST(k.conrelid AS regclass)::text, k.contype"
            " FROM pg_constraint k"
            " WHERE k.conrelid = ANY(CAST(:tables AS regclass[])) AND k.contype IN ('p', 'u')"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = k.conindid)"
            " ORDER BY 3 NULLS FIRST, 1"
        ),
        {"tables": tables},
    ).all()
    rebuild = []
    for name, definition, table, _ in found:
        if table is None:
            conn.exec_driver_sql(f"DROP INDEX {name}")
            rebuild.append(definition)
        else:
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            rebuild.append(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    return rebuild


def _aware_time(moment: datetime) -> Any:
    return moment


def _sqlite_time(moment: datetime) -> Any:
    """SQLAlchemy's SQLite storage format for DateTime ("YYYY-MM-DD HH:MM:SS.ffffff", UTC)."""
    # What isoformat(" ", "microseconds")[:26] gives, in two thirds of the time.
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 - faster than format or an f-string
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


class _Loader:
    """Writes batches of staged rows (as built by ``_turn_rows``) into the real tables."""

    #: How this loader wants timestamps.
    time: Callable[[datetime], Any] = staticmethod(_aware_time)
    #: Whether ``load`` must run in the caller's thread (it then hands back the rest).
    stages_in_caller = False

    def load(
        self, rows: list[tuple[Any, ...]], image_rows: list[tuple[Any, ...]], answers: int
    ) -> Callable[[], None] | None:
        """Battles, votes, turns, (when ``answers``) responses and turn images of a batch, as staged
        rows and (turn_id, position, image_sha256) rows. May leave the last part to the returned
        step, which must run before anything else uses the connection."""
        raise NotImplementedError

    def finish(self) -> None:
        """Clean up before the commit."""


class _StagedLoader(_Loader):
    """Rows go into TEMPORARY staging tables (no constraints, no indexes), then into the real tables
    with one INSERT ... SELECT each, so the database runs each table's row loop itself instead of
    re-running one statement (and re-opening every index) per row, and a battle, its vote, its first
    turn and that turn's two answers travel as one staged row."""

    def __init__(self, conn: Connection, stage: Callable[[Table, list[tuple[Any, ...]]], None]) -> None:
        self.conn = conn
        self.stage = stage
        _STAGING.drop_all(conn)
        _STAGING.create_all(conn)
        s = _STAGE_TURNS.c
        first = s.idx == 0
        sides = [("a", s.model_a_id, s.answer_a), ("b", s.model_b_id, s.answer_b)]
        i = _STAGE_IMAGES.c
        #: INSERT ... SELECT for battles, votes, turns, responses and turn images.
        self.moves: list[Any] = [
            insert(Battle.__table__).from_select(
                list(_BATTLE_COLUMNS),
                select(
                    s.battle_id,
                    s.mode,
                    s.model_a_id,
                    s.model_b_id,
                    literal("voted"),
                    s.language,
                    literal("import"),
                    s.at,
                    s.at,
                ).where(first),
                include_defaults=False,  # identity_leak: the server default (false)
            ),
            insert(Vote.__table__).from_select(
                list(_VOTE_COLUMNS),
                select(s.battle_id, s.winner, s.judge, s.reason, s.at).where(first),
                include_defaults=False,
            ),
            insert(Turn.__table__).from_select(
                list(_TURN_COLUMNS),
                select(s.id, s.battle_id, s.idx, s.prompt, s.at),
                include_defaults=False,
            ),
            insert(Response.__table__).from_select(
                list(_RESPONSE_COLUMNS),
                union_all(
                    *(
                        select(s.id, literal(side), model, answer, s.at, literal(0)).where(
                            answer.is_not(None)
                        )
                        for side, model, answer in sides
                    )
                ),
                include_defaults=False,
            ),
            insert(TurnImage.__table__).from_select(
                ["turn_id", "position", "image_sha256"],
                select(i.turn_id, i.position, i.image_sha256),
                include_defaults=False,
            ),
        ]

    def load(
        self, rows: list[tuple[Any, ...]], image_rows: list[tuple[Any, ...]], answers: int
    ) -> Callable[[], None] | None:
        moves = self._stage(rows, image_rows, answers)
        for statement in moves:
            self.conn.execute(statement)
        return None

    def _stage(
        self, rows: list[tuple[Any, ...]], image_rows: list[tuple[Any, ...]], answers: int
    ) -> list[Any]:
        """Stage a batch; return the moves it needs."""
        self.stage(_STAGE_TURNS, rows)
        moves = self.moves[:3]
        if answers:
            moves.append(self.moves[3])
        if image_rows:
            self.stage(_STAGE_IMAGES, image_rows)
            moves.append(self.moves[4])
        return moves

    def finish(self) -> None:
        _STAGING.drop_all(self.conn)


class _SqliteLoader(_StagedLoader):
    """Staging through the raw sqlite3 connection (same transaction), in the caller's thread; the
    moves run as one step the helper thread can take (sqlite3 releases the GIL while a statement
    runs, and each move is one long statement)."""

    time = staticmethod(_sqlite_time)
    stages_in_caller = True

    def __init__(self, conn: Connection) -> None:
        cursor = conn.connection.driver_connection.cursor()
        self.cursor = cursor
        super().__init__(conn, partial(_sqlite_stage, cursor))
        dialect = conn.dialect
        self.moves = [
            str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            for statement in self.moves
        ]

    def load(
        self, rows: list[tuple[Any, ...]], image_rows: list[tuple[Any, ...]], answers: int
    ) -> Callable[[], None] | None:
        moves = self._stage(rows, image_rows, answers)
        execute = self.cursor.execute

        def move() -> None:
            for statement in moves:
                execute(statement)

        return move


def _sqlite_stage(cursor: Any, table: Table, rows: list[tuple[Any, ...]]) -> None:
    """Replace a staging table's rows, many rows to an INSERT (a third less time than one a row);
    at most 999 parameters a statement, as old SQLite builds allow."""
    cursor.execute(f"DELETE FROM {table.name}")
    width = len(table.c)
    values = "(" + ", ".join("?" for _ in range(width)) + ")"
    per_insert = min(64, 999 // width)
    whole = len(rows) - len(rows) % per_insert
    if whole:
        flat = list(chain.from_iterable(rows[:whole]))
        step = per_insert * width
        cursor.executemany(
            f"INSERT INTO {table.name} VALUES " + ", ".join([values] * per_insert),
            [flat[start : start + step] for start in range(0, len(flat), step)],
        )
    if whole < len(rows):
        cursor.executemany(f"INSERT INTO {table.name} VALUES {values}", rows[whole:])


def _core_stager(conn: Connection) -> Callable[[Table, list[tuple[Any, ...]]], None]:
    """Staging through SQLAlchemy Core executemany, for any other database."""

    def stage(table: Table, rows: list[tuple[Any, ...]]) -> None:
        conn.execute(delete(table))
        if rows:
            keys = table.c.keys()
            conn.execute(insert(table), [dict(zip(keys, row, strict=True)) for row in rows])

    return stage


class _CopyLoader(_Loader):
    """PostgreSQL: binary COPY straight into the real tables, so psycopg encodes rows while the
    server inserts them."""

    def __init__(self, conn: Connection) -> None:
        self.cursor = conn.connection.driver_connection.cursor()
        self.quote = conn.dialect.identifier_preparer.quote

    def _copy(self, table: Table, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        names = ", ".join(self.quote(c) for c in columns)
        with self.cursor.copy(f"COPY {self.quote(table.name)} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([_pg_type(table.c[c].type) for c in columns])
            write = copy.write_row
            for row in rows:
                write(row)

    def load(
        self, rows: list[tuple[Any, ...]], image_rows: list[tuple[Any, ...]], answers: int
    ) -> Callable[[], None] | None:
        self._copy(
            Battle.__table__,
            _BATTLE_COLUMNS,
            ((r[1], r[9], r[4], r[6], "voted", r[10], "import", r[8], r[8]) for r in rows if r[2] == 0),
        )
        self._copy(
            Vote.__table__, _VOTE_COLUMNS, ((r[1], r[11], r[12], r[13], r[8]) for r in rows if r[2] == 0)
        )
        self._copy(Turn.__table__, _TURN_COLUMNS, ((r[0], r[1], r[2], r[3], r[8]) for r in rows))
        if answers:
            self._copy(Response.__table__, _RESPONSE_COLUMNS, _answer_rows(rows))
        if image_rows:
            self._copy(TurnImage.__table__, ("turn_id", "position", "image_sha256"), image_rows)
        return None


def _answer_rows(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    for turn_id, _qid, _index, _prompt, a_id, answer_a, b_id, answer_b, at, *_ in rows:
        if answer_a is not None:
            yield (turn_id, "a", a_id, answer_a, at, 0)
        if answer_b is not None:
            yield (turn_id, "b", b_id, answer_b, at, 0)


def _pg_type(kind: Any) -> str:
    """The PostgreSQL type name binary COPY needs for a column type."""
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, DateTime):
        return "timestamptz"
    return "text"


def _dialect_insert(conn: Connection, table: Table):  # type: ignore[no-untyped-def]
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def _ensure_models(conn: Connection, names: set[str], now: datetime) -> tuple[dict[str, int], list[str]]:
    """Ids of the file's models by name, creating missing ones disabled with backend 'imported'."""
    existing = {name: id_ for name, id_ in conn.execute(select(ModelRow.name, ModelRow.id))}
    missing = sorted(names - existing.keys())
    if missing:
        stmt = _dialect_insert(conn, ModelRow.__table__).on_conflict_do_nothing(index_elements=["name"])
        conn.execute(
            stmt,
            [
                {
                    "name": name,
                    "display_name": name,
                    "organization": "",
                    "backend": IMPORTED_BACKEND,
                    "enabled": False,
                    "sampling_weight": 1.0,
                    "created_at": now,
                }
                for name in missing
            ],
        )
        existing = {name: id_ for name, id_ in conn.execute(select(ModelRow.name, ModelRow.id))}
    return {name: existing[name] for name in names}, missing


def _chunks(conn: Connection, items: Sequence[str]) -> Iterator[list[str]]:
    """Slices small enough for one lookup query (old SQLite builds allow 999 parameters)."""
    size = 10_000 if conn.dialect.name == "postgresql" else 900
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _missing_images(conn: Connection, hashes: set[str]) -> list[str]:
    """The hashes not in ``images`` yet, sorted."""
    if not hashes:
        return []
    known: set[str] = set()
    for chunk in _chunks(conn, sorted(hashes)):
        known.update(
            conn.scalars(select(Image.sha256).where(_member_of(Image.sha256, chunk, conn.dialect.name)))
        )
    return sorted(hashes - known)


def _existing_ids(conn: Connection, ids: Sequence[str]) -> list[str]:
    """The question_ids that are battles in the database already (none when there are no battles)."""
    if not ids or conn.scalar(select(Battle.id).limit(1)) is None:
        return []
    found: list[str] = []
    for chunk in _chunks(conn, ids):
        found.extend(conn.scalars(select(Battle.id).where(_member_of(Battle.id, chunk, conn.dialect.name))))
    return found


def _refuse_existing(conn: Connection, job: _Job, path: Path) -> None:
    clash = _existing_ids(conn, job.qids)
    if clash:
        raise _existing_error(job, path, clash)


def _existing_error(job: _Job, path: Path, clash: list[str]) -> TransferError:
    positions = job.positions()
    first = min(clash, key=positions.__getitem__)
    more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
    return TransferError(
        f"{path}: {_where(job.word, positions[first], first)}: already a battle in the database"
        f"{more}; nothing was imported"
    )


def _skip_fk_triggers(conn: Connection, model_ids: Iterable[int]) -> bool:
    """Skip PostgreSQL's per-row foreign-key triggers for this transaction, when the role may.

    Every reference the import writes is to a row it has just written or to a pre-existing model
    or image; the models are locked FOR KEY SHARE here, as the triggers would, so they cannot
    vanish (images as each batch first names them, see ``_lock_images``). True when skipped.
    """
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    except DBAPIError:  # not allowed for this role: keep the triggers (slower, same result)
        return False
    ids = sorted(model_ids)
    if ids:
        conn.execute(select(ModelRow.id).where(ModelRow.id.in_(ids)).with_for_update(key_share=True)).all()
    return True


def _lock_images(conn: Connection, images: set[str]) -> None:
    for chunk in _chunks(conn, sorted(images)):
        conn.execute(
            select(Image.sha256)
            .where(_member_of(Image.sha256, chunk, "postgresql"))
            .with_for_update(key_share=True)
        ).all()


def _allocate_turn_ids(conn: Connection, count: int) -> Iterator[int]:
    """Primary keys for the new turns (answers and turn images need them before the turns exist)."""
    if count == 0:
        return iter(())
    if conn.dialect.name == "postgresql":
        # Drawn from the sequence, so concurrent writers never collide with them; usually one run.
        sequence = conn.scalar(select(func.pg_get_serial_sequence(Turn.__tablename__, "id")))
        low, high, scattered = conn.execute(
            text(
                "SELECT min(v), max(v), CASE WHEN max(v) - min(v) + 1 = count(*) THEN NULL"
                " ELSE array_agg(v) END"
                " FROM (SELECT nextval(CAST(:sequence AS regclass)) AS v FROM generate_series(1, :n)) AS drawn"
            ),
            {"sequence": sequence, "n": count},
        ).one()
        return iter(sorted(scattered)) if scattered is not None else iter(range(low, high + 1))
    # SQLite: this transaction holds the only write lock, so the ids after the largest are free.
    first = (conn.scalar(select(func.max(Turn.id))) or 0) + 1
    return iter(range(first, first + count))


__all__ = [
    "EXPORT_FORMATS",
    "ImportReport",
    "TransferError",
    "export_battles",
    "import_battles",
    "iter_export_records",
    "json_export_chunks",
]
