"""Battle export: every voted battle as a FastChat JSON list, JSON Lines or Parquet record, in vote
time order, and the JSON chunks the admin server streams."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, any_, bindparam, inspect, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from storage.schema import Battle, ModelRow, Response, Turn, TurnImage, Vote
from storage.sql import SQLITE_IN_CHUNK, as_utc, dialect_name
from storage.transfer.formats import DEFAULT_BATCH_SIZE, TransferError
from storage.vocabulary import ANONY, VOTED, VOTED_MODES

if TYPE_CHECKING:
    import pyarrow as pa

EXPORT_FORMATS = ("fastchat", "jsonl", "parquet")


def export_battles(source: Session | Engine | Connection, out_path: str | Path, fmt: str) -> int:
    """Write every voted battle to ``out_path`` in ``fmt`` (fastchat, jsonl or parquet); return the count.

    Records are ordered by vote time, then battle id (byte order), and always serialise the same
    way, so exporting the same database twice gives byte-identical files.
    """
    if fmt not in EXPORT_FORMATS:
        raise TransferError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out_path)
    with _reader(source) as conn:
        require_schema(conn)
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
    dialect = dialect_name(conn)
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
        .where(Battle.state == VOTED, Battle.mode.in_(VOTED_MODES))
        .order_by(Vote.created_at, battle_order)
    )
    # Streamed (a server-side cursor on PostgreSQL); each chunk's turns come in three more queries,
    # whose IN lists fit every database.
    result = conn.execute(stmt.execution_options(yield_per=SQLITE_IN_CHUNK))
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
                "anony": mode == ANONY,
                "language": language,
                "tstamp": as_utc(voted_at).timestamp(),
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
    dialect = dialect_name(conn)
    wanted = member_of(Turn.battle_id, battle_ids, dialect)
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
        .where(wanted, Response.superseded.is_(False))  # the answers the vote was on, not regenerated ones
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


def member_of(column: Any, values: list[str], dialect: str) -> Any:
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


def _parquet_schema() -> pa.Schema:
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


def require_schema(conn: Connection | Session) -> None:
    bind = conn.connection() if isinstance(conn, Session) else conn
    if not inspect(bind).has_table(Battle.__tablename__):
        raise TransferError(
            "the database has no arena schema; run `python -m storage upgrade --db URL` first"
        )
