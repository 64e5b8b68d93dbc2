"""Small SQL helpers every storage module shares: the dialect of a handle, an upsert-capable INSERT,
UTC timestamps read back from SQLite, chunked ``IN (...)`` lists, and the row count of a write.

They are defined once here; other modules import them instead of writing their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast, overload

from sqlalchemy import Connection, CursorResult, Engine, Result
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

T = TypeVar("T")

# Old SQLite builds allow 999 bound parameters in one statement; PostgreSQL allows 65,535.
SQLITE_IN_CHUNK = 900
POSTGRES_IN_CHUNK = 10_000


def dialect_name(db: Session | Connection | Engine) -> str:
    """``"sqlite"`` or ``"postgresql"``: the dialect behind a session, connection or engine."""
    if isinstance(db, Session):
        return db.get_bind().dialect.name
    return db.dialect.name


def dialect_insert(db: Session | Connection | Engine, table: Any) -> Any:
    """An INSERT for ``table`` that supports ``ON CONFLICT`` on SQLite and PostgreSQL alike."""
    module = postgresql if dialect_name(db) == "postgresql" else sqlite
    return module.insert(table)


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """``moment`` in UTC, as every timestamp is stored: a naive one (SQLite hands timestamps back naive)
    is taken to be UTC already, an aware one is converted."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc_now() -> datetime:
    """Now, in UTC: the default clock of the services that stamp rows."""
    return datetime.now(UTC)


def rowcount(result: Result[Any]) -> int:
    """How many rows an INSERT, UPDATE or DELETE matched (0 when the driver cannot tell).

    Such a statement always yields a CursorResult; ``Session.execute`` is only typed as a Result.
    """
    return int(cast(CursorResult[Any], result).rowcount or 0)


def in_chunk_size(db: Session | Connection | Engine) -> int:
    """How many values one ``IN (...)`` list may carry on this database."""
    return POSTGRES_IN_CHUNK if dialect_name(db) == "postgresql" else SQLITE_IN_CHUNK


def chunked(items: Sequence[T], db: Session | Connection | Engine | None = None) -> Iterator[list[T]]:
    """Slices of ``items`` small enough for one ``IN (...)`` list on ``db`` (SQLite's limit if None)."""
    size = SQLITE_IN_CHUNK if db is None else in_chunk_size(db)
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
