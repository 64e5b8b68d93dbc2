"""Alembic environment: runs the project's migrations against the URL set by storage.db.upgrade.

``storage.db.upgrade`` passes the connection that holds the migration lock (PostgreSQL) in
``config.attributes["connection"]``; the migrations run on it. Otherwise (SQLite, whose lock is a file
lock) they open their own connection from ``sqlalchemy.url``.
"""

from alembic import context
from sqlalchemy import Connection

from storage.db import make_engine
from storage.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    """Run the pending migrations on ``connection`` in one transaction (with transactional DDL)."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations rebuild tables (copy, drop, rename); with foreign keys enforced the
        # drop of a referenced table fails. Switch enforcement off for the migration and check
        # every reference afterwards instead.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()  # end SQLAlchemy's autobegun transaction so Alembic owns the next
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")


def run_migrations_online() -> None:
    locked = config.attributes.get("connection")
    if locked is not None:
        run_migrations(locked)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no sqlalchemy.url: run the migrations through storage.db.upgrade")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; pass a database URL")
run_migrations_online()
