"""Import orchestration: a battle file into the database in one transaction, batch by batch, with
validation of the next batch overlapping the writing of the one before (see the package docstring)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from storage.schema import Battle, Image, Response, Turn, TurnImage, Vote
from storage.transfer.bulk_sql import (
    allocate_turn_ids,
    defer_indexes,
    ensure_models,
    existing_ids,
    lock_images,
    missing_images,
    skip_fk_triggers,
)
from storage.transfer.export import require_schema
from storage.transfer.formats import DEFAULT_BATCH_SIZE, Key, Source, TransferError, read_records
from storage.transfer.loaders import Loader, bulk_session, driver_connection, turn_rows
from storage.transfer.records import BattleRecord
from storage.transfer.validation import Checker, Plan, validate, where


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
        source = read_records(path)
        records = list(source.records)
        job = _scan(path, source, records, now, batch_size)
        written = None
        if job is not None:
            with engine.connect() as conn:
                require_schema(conn)
                with tqdm(total=len(records), desc="import", unit="battle", disable=not progress) as bar:
                    try:
                        written = _write(conn, job, path, now, bar.update)
                    except _Rescan:
                        written = None  # rolled back; the plain way below names the problem
        if job is None or written is None:  # validate everything in file order first, then write
            with tqdm(
                total=source.size or None,
                desc="validate",
                unit=source.word,
                disable=not progress,
                leave=False,
            ) as bar:
                plan = validate(path, source, records, now, bar)
            job = _planned_job(plan, batch_size)
            with engine.connect() as conn:
                require_schema(conn)
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
    batches: Iterator[list[BattleRecord]]


def _planned_job(plan: Plan, batch_size: int) -> _Job:
    """A job over battles validated beforehand."""
    # Inserting in key order keeps every index append-only (ids in files are often random hex).
    battles = sorted(plan.battles, key=attrgetter("question_id"))
    return _Job(
        plan.word,
        [battle.question_id for battle in battles],
        lambda: plan.positions,
        plan.model_names(),
        (battles[start : start + batch_size] for start in range(0, len(battles), batch_size)),
    )


def _scan(
    path: Path, source: Source, records: list[tuple[int, Any]], now: datetime, batch_size: int
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
            qid, model_a, model_b = item.get("question_id"), item.get("model_a"), item.get("model_b")
            if not (type(qid) is str and type(model_a) is str and type(model_b) is str):
                return None
            keys.append(Key(qid, model_a, model_b))
    qids = [key.question_id for key in keys]
    models = {key.model_a for key in keys}
    models.update(key.model_b for key in keys)
    if len(set(qids)) != len(qids):
        return None
    order = sorted(range(len(qids)), key=qids.__getitem__)

    def batches() -> Iterator[list[BattleRecord]]:
        check = Checker(path, source, now).battle
        for start in range(0, len(order), batch_size):
            batch = []
            for i in order[start : start + batch_size]:
                position, item = records[i]
                try:
                    battle = check(position, item)
                except TransferError:
                    raise _Rescan from None
                if (
                    battle.question_id != qids[i]
                    or battle.model_a not in models
                    or battle.model_b not in models
                ):
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
    conn: Connection, job: _Job, path: Path, now: datetime, advance: Callable[[int], object]
) -> _Written:
    """Insert the job's battles in one transaction (rolled back on any error)."""
    try:
        with bulk_session(conn) as loader:
            model_ids, created = ensure_models(conn, job.models, now)
            _refuse_existing(conn, job, path)
            lock_images = conn.dialect.name == "postgresql" and bool(
                skip_fk_triggers(conn, model_ids.values())
            )
            written = _Written(created)
            images = _ImagePlaceholders(conn, now, lock_images)
            rebuild = defer_indexes(conn, len(job.qids))
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
        clash = existing_ids(conn, job.qids)
        conn.rollback()
        if clash:
            raise _existing_error(job, path, clash) from None
        raise TransferError(f"{path}: the database refused the import: {_first_line(exc)}") from None
    except (DataError, conn.dialect.loaded_dbapi.DataError) as exc:
        raise TransferError(f"{path}: the database refused a value: {_first_line(exc)}") from None
    return written


def _load(
    conn: Connection,
    loader: Loader,
    batch: list[BattleRecord],
    model_ids: dict[str, int],
    images: _ImagePlaceholders,
    written: _Written,
) -> Callable[[], None] | None:
    """Write one batch of validated battles; return what is left to run (see ``Loader.load``)."""
    turns = sum(len(battle.turns) for battle in batch)
    turn_ids = allocate_turn_ids(conn, turns)
    rows, image_rows, answers = turn_rows(batch, model_ids, turn_ids, loader.time)
    if image_rows:
        images.ensure({sha for _turn_id, _position, sha in image_rows})
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
            raw = driver_connection(conn)
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
        missing = missing_images(self.conn, new)
        if self.lock:
            lock_images(self.conn, new.difference(missing))
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


def _refuse_existing(conn: Connection, job: _Job, path: Path) -> None:
    clash = existing_ids(conn, job.qids)
    if clash:
        raise _existing_error(job, path, clash)


def _existing_error(job: _Job, path: Path, clash: list[str]) -> TransferError:
    positions = job.positions()
    first = min(clash, key=positions.__getitem__)
    more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
    return TransferError(
        f"{path}: {where(job.word, positions[first], first)}: already a battle in the database"
        f"{more}; nothing was imported"
    )
