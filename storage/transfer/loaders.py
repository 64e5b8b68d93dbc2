"""Bulk writing of validated battles, per dialect: the staged rows a batch becomes, the TEMPORARY
staging tables and INSERT ... SELECT moves (SQLite and others), binary COPY (PostgreSQL), and the
connection setup for a bulk import."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from itertools import chain
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    literal,
    select,
    union_all,
)

from storage.schema import Battle, ModelRow, Response, Turn, TurnImage, Vote
from storage.transfer.records import BattleRecord
from storage.vocabulary import VOTED


def driver_connection(conn: Connection) -> Any:
    """The DBAPI connection (sqlite3 or psycopg) under a SQLAlchemy connection."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the connection is closed")
    return raw


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

#: Staged rows (see ``turn_rows``) have these columns, in this order.
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


def turn_rows(
    batch: list[BattleRecord],
    model_ids: dict[str, int],
    turn_ids: Iterator[int],
    time: Callable[[datetime], Any],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """The staged rows of a batch of battles (one per turn, columns as ``_STAGE_TURNS``; only a
    battle's first turn carries mode, language, winner, judge and reason), its turn image rows
    (turn_id, position, sha256) and its number of answers."""
    rows: list[tuple[Any, ...]] = []
    image_rows: list[tuple[Any, ...]] = []
    answers = 0
    append = rows.append
    no_vote: tuple[Any, ...] = (None, None, None, None, None)
    for qid, mode, a, b, language, moment, winner, judge, reason, turns in batch:
        a_id = model_ids[a]
        b_id = model_ids[b]
        at = time(moment)
        vote: tuple[Any, ...] = (mode, language, winner, judge, reason)
        for index, (prompt, answer_a, answer_b, hashes) in enumerate(turns):
            turn_id = next(turn_ids)
            append((turn_id, qid, index, prompt, a_id, answer_a, b_id, answer_b, at) + vote)
            vote = no_vote
            answers += (answer_a is not None) + (answer_b is not None)
            if hashes:
                image_rows.extend((turn_id, position, sha) for position, sha in enumerate(hashes))
    return rows, image_rows, answers


@contextmanager
def bulk_session(conn: Connection) -> Iterator[Loader]:
    """The fastest loader for this dialect, with the connection set up for bulk writes.

    Rolls back whatever is still open on the way out (the caller commits on success).
    """
    dialect = conn.dialect.name
    raw = driver_connection(conn)
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


class Loader:
    """Writes batches of staged rows (as built by ``turn_rows``) into the real tables."""

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


class _StagedLoader(Loader):
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
                    literal(VOTED),
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
        cursor = driver_connection(conn).cursor()
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


class _CopyLoader(Loader):
    """PostgreSQL: binary COPY straight into the real tables, so psycopg encodes rows while the
    server inserts them."""

    def __init__(self, conn: Connection) -> None:
        self.cursor = driver_connection(conn).cursor()
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
        self._copy(Battle.__table__, _BATTLE_COLUMNS, _battle_rows(rows))
        self._copy(Vote.__table__, _VOTE_COLUMNS, _vote_rows(rows))
        self._copy(Turn.__table__, _TURN_COLUMNS, _turn_table_rows(rows))
        if answers:
            self._copy(Response.__table__, _RESPONSE_COLUMNS, _answer_rows(rows))
        if image_rows:
            self._copy(TurnImage.__table__, ("turn_id", "position", "image_sha256"), image_rows)
        return None


# The rows of each real table, from staged rows (columns as ``_STAGE_TURNS``; a battle's first turn,
# index 0, also carries the battle and its vote).
def _battle_rows(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    for _id, qid, index, _prompt, a_id, _answer_a, b_id, _answer_b, at, mode, language, *_ in rows:
        if index == 0:
            yield (qid, mode, a_id, b_id, VOTED, language, "import", at, at)


def _vote_rows(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    for _id, qid, index, *_, at, _mode, _language, winner, judge, reason in rows:
        if index == 0:
            yield (qid, winner, judge, reason, at)


def _turn_table_rows(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    for turn_id, qid, index, prompt, _a_id, _answer_a, _b_id, _answer_b, at, *_ in rows:
        yield (turn_id, qid, index, prompt, at)


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
