"""The schema is built by the Alembic migrations, and they match the typed models."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from storage.db import MIGRATIONS_DIR, _alembic_config, current_revision, downgrade, make_engine, upgrade
from storage.schema import Base

TABLES = {
    "models",
    "voter_sessions",
    "battles",
    "turns",
    "images",
    "turn_images",
    "responses",
    "votes",
    "judge_verdicts",
    "analysis_results",
    "audit_log",
    "leaderboard_snapshots",
    "leases",
}


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


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path) -> None:
    engine = make_engine(str(tmp_path / "sub" / "a.db"))  # a bare path means an SQLite file
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
    assert MIGRATIONS_DIR.is_dir()


REVISION_0001_ROWS = [
    "INSERT INTO models (id, name, display_name, organization, backend, enabled, sampling_weight, created_at) "
    "VALUES (1, 'm1', 'M1', 'o', 'hf', TRUE, 1.0, '2026-01-01 00:00:00'), "
    "(2, 'm2', 'M2', 'o', 'hf', TRUE, 2.0, '2026-01-01 00:00:00')",
    "INSERT INTO voter_sessions (id, user_agent, created_at) VALUES ('s1', 'ua', '2026-01-01 00:00:00')",
    "INSERT INTO battles (id, mode, model_a_id, model_b_id, session_id, state, invalid_reason, created_at, updated_at) "
    "VALUES ('b1', 'anony', 1, 2, 's1', 'voted', NULL, '2026-01-01 00:00:00', '2026-01-01 00:01:00'), "
    "('b2', 'named', 2, 1, 's1', 'invalid', 'model failure', '2026-01-01 00:00:00', '2026-01-01 00:01:00')",
    "INSERT INTO turns (id, battle_id, \"index\", prompt, created_at) VALUES (1, 'b1', 0, 'what?', '2026-01-01 00:00:00')",
    "INSERT INTO images (sha256, mime, width, height, size_bytes, created_at) "
    "VALUES ('" + "a" * 64 + "', 'image/png', 4, 3, 99, '2026-01-01 00:00:00')",
    "INSERT INTO turn_images (turn_id, position, image_sha256) VALUES (1, 0, '" + "a" * 64 + "')",
    "INSERT INTO responses (id, turn_id, side, model_id, text, started_at, first_token_at, finished_at, "
    "output_chunks, finish_reason, error) VALUES "
    "(1, 1, 'a', 1, 'answer a', '2026-01-01 00:00:00', NULL, '2026-01-01 00:00:05', 3, 'stop', NULL), "
    "(2, 1, 'b', 2, 'answer b', '2026-01-01 00:00:00', NULL, '2026-01-01 00:00:06', 4, 'stop', NULL)",
    "INSERT INTO votes (id, battle_id, winner, session_id, created_at) "
    "VALUES (1, 'b1', 'tie (bothbad)', 's1', '2026-01-01 00:02:00')",
]


def test_upgrade_from_the_first_revision_keeps_every_row(empty_db_url: str) -> None:
    from sqlalchemy.orm import Session

    from storage.schema import Battle, ModelRow, Vote, VoterSession
    from tests.helpers import vote_records

    upgrade(empty_db_url, "0001")
    engine = make_engine(empty_db_url)
    with engine.begin() as conn:
        for statement in REVISION_0001_ROWS:
            conn.exec_driver_sql(statement)
    before = _table_counts(engine)
    engine.dispose()

    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    assert {t: n for t, n in _table_counts(engine).items() if t in before} == before
    with Session(engine) as db:
        [record] = vote_records(db)
        assert (record["question_id"], record["winner"], record["judge"]) == ("b1", "tie (bothbad)", "s1")
        battle = db.get(Battle, "b2")
        assert (battle.state, battle.invalid_reason, battle.identity_leak, battle.source) == (
            "invalid",
            "model failure",
            False,
            "arena",
        )
        m2 = db.scalars(sa.select(ModelRow).where(ModelRow.name == "m2")).one()
        assert (m2.sampling_weight, m2.deprecated, m2.license, m2.link) == (2.0, False, "", "")
        session = db.get(VoterSession, "s1")
        assert (session.user_agent, session.ip_hash, session.banned) == ("ua", None, False)
        assert db.get(Vote, 1).client_token is None
    engine.dispose()


def _table_counts(engine: sa.Engine) -> dict[str, int]:
    names = sorted(set(sa.inspect(engine).get_table_names()) - {"alembic_version"})
    with engine.connect() as conn:
        return {n: conn.exec_driver_sql(f'SELECT count(*) FROM "{n}"').scalar() for n in names}
