"""Engines, sessions and schema upgrades for SQLite (embedded default) and PostgreSQL, by URL.

Durability of an acknowledged write (``factory.begin()`` returned without an exception):

- PostgreSQL: the server's own guarantee (``synchronous_commit=on``, the default: the commit record is
  flushed to its WAL before the client is told).
- SQLite: WAL journal with ``synchronous=NORMAL``. A committed transaction is in the WAL file before
  ``COMMIT`` returns, so it survives the writing process being killed at any moment (the next opener
  replays the WAL); the WAL is only fsync'ed at checkpoints, so an OS crash or power loss may lose the
  last transactions (never corrupting the file). ``synchronous=FULL`` would close that window at the
  price of an fsync per commit. ``tests/storage/test_durability.py`` kills writers to check this.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import ExecutionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from storage.sql import dialect_name

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept a full SQLAlchemy URL, or a bare file path meaning an SQLite file.

    ``postgresql://`` is mapped to the psycopg 3 driver, the one the project installs.
    """
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; a committed transaction survives a killed process.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin_for_savepoints_and_locks(
    _conn: Connection,
    cursor: sqlite3.Cursor,
    statement: str,
    _parameters: object,
    context: ExecutionContext | None,
    _many: bool,
) -> None:
    """Open the transaction (``BEGIN IMMEDIATE``) before a SAVEPOINT or ``SELECT ... FOR UPDATE``.

    The sqlite3 driver's legacy transaction control, kept because code writes through the raw
    driver connection and relies on it, sends BEGIN only before INSERT/UPDATE/DELETE. A SAVEPOINT
    sent first then opens a transaction of its own, and its RELEASE commits: ``begin_nested()`` at
    the start of a transaction (as in ``repo.record_vote``) committed early, ahead of the rest, and
    a later failure could not roll it back. SQLite also ignores FOR UPDATE, so a locking read ran
    outside any transaction. Taking the write lock here (waiting up to ``busy_timeout``) puts the
    savepoint inside the caller's transaction and makes "read, check, write" one decision, as row
    locks do on PostgreSQL. Other SELECTs still run outside the transaction until its first write.
    """
    dbapi_connection = cursor.connection
    if dbapi_connection.in_transaction or dbapi_connection.isolation_level is None:  # or autocommit
        return
    locks = statement.lstrip()[:9].upper() == "SAVEPOINT"
    if not locks and context is not None and context.compiled is not None:
        locks = getattr(context.compiled.statement, "_for_update_arg", None) is not None
    if locks:
        dbapi_connection.execute("BEGIN IMMEDIATE")


def make_engine(url: str, *, connect_wait_s: float = 0.0, **kwargs: object) -> Engine:
    """An engine for ``url`` with the settings the arena relies on (pragmas, pre-ping).

    ``connect_wait_s`` (PostgreSQL): how long a new connection waits for a server that refuses it,
    e.g. while it restarts (the web app waits; command-line tools fail at once on a wrong URL).

    Engines are safe to share between threads: file SQLite gets SQLAlchemy's QueuePool with
    ``check_same_thread=False`` (one sqlite3 connection per thread at a time), PostgreSQL the usual
    QueuePool. A process must build its own engine (never inherit one across fork/spawn).
    """
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "before_cursor_execute", _sqlite_begin_for_savepoints_and_locks)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if connect_wait_s > 0:
        _wait_for_server(engine, connect_wait_s)
    return engine


def _wait_for_server(engine: Engine, wait_s: float) -> None:
    """Make new connections wait up to ``wait_s`` for a server that refuses them (a restart) instead
    of failing at once. With pre-ping, a pooled connection the restart killed is replaced by such a
    new one, so a request arriving during a short restart waits for it rather than failing."""

    @event.listens_for(engine, "do_connect")
    def connect_patiently(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return dialect.loaded_dbapi.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.25)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (the service hands them to the UI)."""
    return sessionmaker(engine, expire_on_commit=False)


#: PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, the server shutting a session.
_PG_TRANSIENT_STATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})
#: SQLite primary result codes worth retrying: SQLITE_BUSY ("database is locked"), SQLITE_LOCKED.
_SQLITE_TRANSIENT_CODES = frozenset({5, 6})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` failed a transaction that may succeed if run again from the start.

    - any database: the connection was lost (SQLAlchemy invalidated it; the pool reconnects);
    - PostgreSQL: serialization failure (40001), deadlock (40P01), connection errors (class 08) and
      administrator/crash shutdown (57P01-57P03, e.g. ``pg_terminate_backend``);
    - SQLite: "database is locked" / "database table is locked" (SQLITE_BUSY, SQLITE_LOCKED): the
      write lock stayed taken past ``busy_timeout``, or a deferred transaction that read first found
      its snapshot stale when it came to write.

    A connection lost during COMMIT leaves the outcome unknown: the work may have been committed.
    """
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _SQLITE_TRANSIENT_CODES
        return "locked" in str(orig)
    state = getattr(orig, "sqlstate", None)
    return state is not None and (state in _PG_TRANSIENT_STATES or state.startswith("08"))


class _FairLock:
    """A mutex granted in arrival order. ``threading.Lock`` lets the releasing thread take it straight
    back while the others sleep, which starves some writers and sets the tail latency."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def __enter__(self) -> _FairLock:
        with self._mutex:
            if not self._held:
                self._held = True
                return self
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # released by the previous holder, which hands the mutex over directly
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


_SQLITE_WRITER_LOCKS: weakref.WeakKeyDictionary[Engine, _FairLock] = weakref.WeakKeyDictionary()


def _writer_lock(factory: sessionmaker[Session] | Engine) -> AbstractContextManager[object]:
    """The per-engine writer lock for SQLite; nothing to wait for on other databases."""
    engine = factory if isinstance(factory, Engine) else factory.kw.get("bind")
    if not isinstance(engine, Engine) or dialect_name(engine) != "sqlite":
        return nullcontext()
    return _SQLITE_WRITER_LOCKS.setdefault(engine, _FairLock())


def run_in_transaction(
    factory: sessionmaker[Session] | Engine,
    fn: Callable[[Any], T],
    *,
    retries: int = 8,
    backoff_s: float = 0.005,
    max_backoff_s: float = 0.5,
    on_retry: Callable[[BaseException, int], Any] | None = None,
) -> T:
    """Run ``fn(session)`` in a transaction and commit; rerun it on transient errors.

    ``factory`` is a sessionmaker (``fn`` gets a Session) or an Engine (``fn`` gets a Connection).

    Each attempt gets a fresh session and transaction; between attempts it sleeps an exponential,
    jittered backoff. Errors that are not transient (see ``is_transient``), and the last transient
    one after ``retries`` reruns, propagate. Because a connection lost during COMMIT may hide a
    commit that happened, ``fn`` must be safe to rerun: e.g. ``repo.record_vote`` with a
    ``client_token`` returns the stored vote instead of recording a second one.
    ``on_retry(exc, attempt)`` is called before each rerun (for counting or logging).

    On SQLite, where one writer holds the database at a time, the threads of this process take turns
    on a lock first: a thread that waits inside SQLite's busy handler sleeps in steps of up to
    100 ms, which is what made its tail latency; one waiting on the lock wakes as soon as it is free.
    """
    lock = _writer_lock(factory)
    attempt = 0
    while True:
        try:
            with lock, factory.begin() as session:
                return fn(session)
        except DBAPIError as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(exc, attempt)
            delay = min(max_backoff_s, backoff_s * 2 ** (attempt - 1))
            time.sleep(delay * random.uniform(0.5, 1.5))


def _alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


#: The PostgreSQL advisory-lock key that serialises schema changes across processes ("vlmarena").
MIGRATION_LOCK_KEY = int.from_bytes(b"vlmarena", "big")


@contextmanager
def migration_lock(url: str) -> Iterator[Connection | None]:
    """Hold the schema-change lock of the database at ``url``; yield the connection to migrate on.

    - PostgreSQL: a session-level ``pg_advisory_lock(MIGRATION_LOCK_KEY)`` on a dedicated connection
      (no pool: closing it ends the server session, so a crashed holder never keeps the lock). The
      migrations run on that same connection; other processes wait on the lock, then find the schema
      at its revision and do nothing.
    - SQLite file: an exclusive ``flock`` on ``<database>-migration-lock`` beside the file (named like
      SQLite's own ``-wal`` and ``-shm`` files). SQLite's own locks do not serialise Alembic: its DDL
      runs outside transactions under the sqlite3 driver, so two processes upgrading an empty file
      both try ``CREATE TABLE`` and one fails. Yields None (the migrations open their own
      connection). In-memory databases need no lock.
    """
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or database.startswith("file:"):
            yield None
            return
        with _file_lock(Path(database).expanduser().with_name(Path(database).name + "-migration-lock")):
            yield None
        return
    if parsed.get_backend_name() != "postgresql":
        yield None  # the project runs on SQLite and PostgreSQL; another database migrates unlocked
        return
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()  # a session-level lock outlives the transaction that took it
            try:
                yield connection
            finally:
                try:
                    connection.rollback()  # a failed migration may have left its transaction open
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    connection.commit()
                except DBAPIError:
                    pass  # the connection is gone, and with its server session the lock
    finally:
        engine.dispose()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if absent), released when the block ends."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def upgrade(url: str, revision: str = "head") -> None:
    """Create or migrate the schema at ``url`` to ``revision`` through the Alembic migrations.

    Safe to call from several processes at once: the first to take ``migration_lock`` migrates, the
    others wait for it and then find nothing left to do.
    """
    from alembic import command

    config = _alembic_config(url)
    with migration_lock(url) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the schema at ``url`` back to ``revision`` (``"base"``: drop everything), under the lock."""
    from alembic import command

    config = _alembic_config(url)
    with migration_lock(url) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
