"""The queries a bulk import runs besides loading rows: models to match or create, image and battle
lookups, locks and PostgreSQL trigger skipping, turn id allocation, and index deferral."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError

from storage.schema import IMPORTED_BACKEND, Battle, Image, ModelRow, Response, Turn, TurnImage, Vote
from storage.sql import chunked, dialect_insert
from storage.transfer.export import member_of

#: How long a PostgreSQL import waits for the locks that dropping indexes takes before it imports
#: with the indexes in place instead.
_DEFER_LOCK_TIMEOUT_MS = 1000


def defer_indexes(conn: Connection, battles: int) -> list[str]:
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
    present = conn.scalar(select(func.count()).select_from(select(Battle.id).limit(battles).subquery())) or 0
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


def ensure_models(conn: Connection, names: set[str], now: datetime) -> tuple[dict[str, int], list[str]]:
    """Ids of the file's models by name, creating missing ones disabled with backend 'imported'."""
    existing = {name: id_ for name, id_ in conn.execute(select(ModelRow.name, ModelRow.id))}
    missing = sorted(names - existing.keys())
    if missing:
        stmt = dialect_insert(conn, ModelRow.__table__).on_conflict_do_nothing(index_elements=["name"])
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


def missing_images(conn: Connection, hashes: set[str]) -> list[str]:
    """The hashes not in ``images`` yet, sorted."""
    if not hashes:
        return []
    known: set[str] = set()
    for chunk in chunked(sorted(hashes), conn):
        known.update(
            conn.scalars(select(Image.sha256).where(member_of(Image.sha256, chunk, conn.dialect.name)))
        )
    return sorted(hashes - known)


def existing_ids(conn: Connection, ids: Sequence[str]) -> list[str]:
    """The question_ids that are battles in the database already (none when there are no battles)."""
    if not ids or conn.scalar(select(Battle.id).limit(1)) is None:
        return []
    found: list[str] = []
    for chunk in chunked(ids, conn):
        found.extend(conn.scalars(select(Battle.id).where(member_of(Battle.id, chunk, conn.dialect.name))))
    return found


def skip_fk_triggers(conn: Connection, model_ids: Iterable[int]) -> bool:
    """Skip PostgreSQL's per-row foreign-key triggers for this transaction, when the role may.

    Every reference the import writes is to a row it has just written or to a pre-existing model
    or image; the models are locked FOR KEY SHARE here, as the triggers would, so they cannot
    vanish (images as each batch first names them, see ``lock_images``). True when skipped.
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


def lock_images(conn: Connection, images: set[str]) -> None:
    for chunk in chunked(sorted(images), conn):
        conn.execute(
            select(Image.sha256)
            .where(member_of(Image.sha256, chunk, "postgresql"))
            .with_for_update(key_share=True)
        ).all()


def allocate_turn_ids(conn: Connection, count: int) -> Iterator[int]:
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
