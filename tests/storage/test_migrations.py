"""The schema is built by the Alembic migrations, and they match the typed models."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from storage.db import MIGRATIONS_DIR, _alembic_config, current_revision, downgrade, make_engine, upgrade
from storage.schema import Base

TABLES = {"models", "voter_sessions", "battles", "turns", "images", "turn_images", "responses", "votes"}


def test_upgrade_creates_every_table_at_head(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    head = ScriptDirectory.from_config(_alembic_config(empty_db_url)).get_current_head()
    assert current_revision(engine) == head
    assert set(sa.inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_migrations_match_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent_and_downgrade_removes_everything(db_url: str) -> None:
    upgrade(db_url)  # a second upgrade is a no-op
    downgrade(db_url, "base")
    engine = make_engine(db_url)
    assert not TABLES & set(sa.inspect(engine).get_table_names())
    assert current_revision(engine) is None
    engine.dispose()
    upgrade(db_url)


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(str(tmp_path / "sub" / "a.db"))  # a bare path means an SQLite file
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
    assert MIGRATIONS_DIR.is_dir()
