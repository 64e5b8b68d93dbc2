"""Battle import (storage.transfer): FastChat, JSONL and Parquet files in, batches, index deferral
and rollback.

Every database test runs on SQLite and PostgreSQL (the ``db_url`` fixtures).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from storage import repo
from storage.db import session_factory
from storage.schema import Battle, Image, ModelRow, Turn, Vote
from storage.sql import as_utc
from storage.transfer import bulk_sql, importer
from storage.transfer.formats import TransferError
from storage.transfer.importer import import_battles
from tests.storage.transfer_cases import (
    FASTCHAT,
    NOW,
    SHA,
    export_to,
    populate,
    read_jsonl,
    table_counts,
    write_jsonl,
)

# --------------------------------------------------------------------------------------------- import


def test_import_of_a_fastchat_jsonl_file(engine: sa.Engine, tmp_path: Path) -> None:
    factory = session_factory(engine)
    with factory.begin() as db:  # a roster model the file also names: reused, left as it is
        repo.sync_models(db, [repo.ModelSeed("gpt-4", "GPT-4", "OpenAI", "openai")], NOW)
    later = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    report = import_battles(
        engine, write_jsonl(tmp_path / "clean.jsonl", FASTCHAT), progress=False, now=later
    )
    assert report.battles == 3 and report.turns == 4 and report.responses == 5
    assert sorted(report.models_created) == ["claude-1", "vicuna-13b"] and report.images_created == 1
    assert report.battles_per_second > 0 and "3 battles" in report.summary()

    with factory() as db:
        models = {m.name: m for m in db.scalars(sa.select(ModelRow))}
        assert (models["gpt-4"].backend, models["gpt-4"].enabled) == ("openai", True)
        for name in ("claude-1", "vicuna-13b"):
            assert (models[name].display_name, models[name].backend, models[name].enabled) == (
                name,
                "imported",
                False,
            )
        battles = {b.id: b for b in db.scalars(sa.select(Battle))}
        assert {b: (x.mode, x.state, x.source, x.language) for b, x in battles.items()} == {
            "abc123": ("anony", "voted", "import", "English"),
            "def456": ("named", "voted", "import", "German"),
            "ghi789": ("anony", "voted", "import", None),
        }
        assert battles["def456"].model_a_id == models["claude-1"].id
        assert battles["def456"].session_id is None
        turns = db.scalars(sa.select(Turn).where(Turn.battle_id == "def456").order_by(Turn.index)).all()
        assert [t.prompt for t in turns] == ["Hallo", "Wie geht's?"]
        assert [[(r.side, r.text) for r in t.responses] for t in turns] == [
            [("a", "Hallo!"), ("b", "Hi")],
            [("a", "Gut.")],  # side b never answered the second turn
        ]
        assert turns[0].responses[1].model_id == models["vicuna-13b"].id
        assert [(i.position, i.image_sha256) for i in turns[0].images] == [(0, SHA[0])]
        image = db.get(Image, SHA[0])
        assert (image.mime, image.width, image.height, image.size_bytes) == (
            "application/octet-stream",
            0,
            0,
            0,
        )
        bare = db.scalars(sa.select(Turn).where(Turn.battle_id == "ghi789")).all()
        assert [(t.prompt, t.responses) for t in bare] == [("", [])]
        votes = {v.battle_id: v for v in db.scalars(sa.select(Vote))}
        assert (votes["abc123"].winner, votes["abc123"].judge, votes["abc123"].reason) == (
            "model_a",
            "arena_user_x",
            None,
        )
        assert as_utc(votes["abc123"].created_at).timestamp() == 1682345678.123
        assert (votes["def456"].winner, votes["def456"].reason) == ("tie (bothbad)", "both wrong")
        assert votes["ghi789"].judge is None and as_utc(votes["ghi789"].created_at) == later

    records = {r["question_id"]: r for r in read_jsonl(export_to(engine, tmp_path / "o.jsonl", "jsonl"))}
    assert records["abc123"] == {**FASTCHAT[0], "images": [[]]}
    assert records["def456"] == {**FASTCHAT[1]}
    assert records["ghi789"]["judge"] == "arena_user" and records["ghi789"]["tstamp"] == later.timestamp()


def test_import_tells_json_list_from_jsonl_by_content(engine: sa.Engine, tmp_path: Path) -> None:
    listed = tmp_path / "battles.jsonl"  # a JSON list, whatever the name says
    listed.write_text("\ufeff" + json.dumps(FASTCHAT[:2], indent=2), encoding="utf-8")
    lines = write_jsonl(tmp_path / "battles.json", FASTCHAT[2:])
    assert import_battles(engine, listed, progress=False).battles == 2
    assert import_battles(engine, lines, progress=False).battles == 1
    assert table_counts(engine)["battles"] == 3


def test_import_of_a_foreign_parquet_file(engine: sa.Engine, tmp_path: Path) -> None:
    """A Parquet file with other columns and types (e.g. a Hugging Face battle dataset)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {**FASTCHAT[0], "openai_moderation": "{}", "toxic_chat_tag": None},
            {**FASTCHAT[2], "openai_moderation": "{}", "toxic_chat_tag": None, "tstamp": 1.7e9},
        ]
    )
    pq.write_table(table, tmp_path / "arena.bin")  # found by its magic bytes, not its name
    assert import_battles(engine, tmp_path / "arena.bin", progress=False).battles == 2


def test_import_shows_progress_on_stderr(engine: sa.Engine, tmp_path: Path, capsys) -> None:
    import_battles(engine, write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "import" in err and "battle" in err


def test_sqlite_connection_settings_are_restored(sqlite_engine: sa.Engine, tmp_path: Path) -> None:
    """The import turns SQLite's foreign-key checks off for itself only: the pool gets them back."""
    engine = sqlite_engine

    names = ("foreign_keys", "ignore_check_constraints", "cache_size", "temp_store")

    def settings() -> tuple[int, ...]:
        with engine.connect() as conn:
            return tuple(conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names)

    before = settings()
    assert before[:2] == (1, 0)
    import_battles(engine, write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False)
    assert settings() == before
    with pytest.raises(TransferError):  # and after a refused import
        import_battles(engine, write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False)
    assert settings() == before


def test_import_without_skipping_postgres_triggers(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role that may not set session_replication_role still imports (the triggers then check)."""
    monkeypatch.setattr(importer, "skip_fk_triggers", lambda *args: None)
    assert import_battles(engine, write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False).battles == 3


def _schema(eng: sa.Engine) -> list[Any]:
    """Every index and constraint of the tables an import fills, with its definition."""
    tables = ["battles", "votes", "turns", "responses", "turn_images"]
    with eng.connect() as conn:
        if eng.dialect.name == "sqlite":
            query = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
            return [tuple(row) for row in conn.exec_driver_sql(query)]
        indexes = conn.execute(
            sa.text(
                "SELECT tablename, indexname, indexdef FROM pg_indexes"
                " WHERE tablename = ANY(:tables) ORDER BY indexname"
            ),
            {"tables": tables},
        ).all()
        constraints = conn.execute(
            sa.text(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated"
                " FROM pg_constraint WHERE conrelid::regclass::text = ANY(:tables) ORDER BY conname"
            ),
            {"tables": tables},
        ).all()
        return [tuple(row) for row in indexes] + [tuple(row) for row in constraints]


def _count_dropped_indexes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets, for each import from now on, how many indexes it dropped to rebuild."""
    dropped: list[int] = []
    real = importer.defer_indexes

    def spy(conn: sa.Connection, battles: int) -> list[str]:
        statements = real(conn, battles)
        dropped.append(len(statements))
        return statements

    monkeypatch.setattr(importer, "defer_indexes", spy)
    return dropped


def test_large_imports_rebuild_the_indexes_they_drop(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import bigger than the database drops indexes and builds them again; a smaller one keeps
    them. Either way the schema is the same afterwards, and the rebuilt constraints hold."""
    dropped = _count_dropped_indexes(monkeypatch)
    schema = _schema(engine)
    populate(engine)  # 7 battles
    many = [{**FASTCHAT[0], "question_id": f"big-{i:03d}"} for i in range(20)]
    import_battles(engine, write_jsonl(tmp_path / "many.jsonl", many), progress=False, batch_size=6)
    import_battles(engine, write_jsonl(tmp_path / "few.jsonl", FASTCHAT), progress=False)
    assert dropped[0] >= 6 and dropped[1] == 0  # at least the six non-unique indexes
    assert _schema(engine) == schema
    assert table_counts(engine)["battles"] == 7 + 20 + 3
    with engine.connect() as conn:  # the rebuilt unique constraints hold
        vote = conn.execute(sa.select(Vote.id).where(Vote.battle_id == "big-007")).scalar_one()
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(
                sa.insert(Vote).values(id=vote + 1000, battle_id="big-007", winner="tie", created_at=NOW)
            )


def test_a_busy_postgres_keeps_its_indexes(
    postgres_engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another session holds on to a table, the import does not queue everyone behind a lock
    for dropping indexes: after a short wait it imports with the indexes in place."""
    engine = postgres_engine
    monkeypatch.setattr(bulk_sql, "_DEFER_LOCK_TIMEOUT_MS", 100)
    dropped = _count_dropped_indexes(monkeypatch)
    schema = _schema(engine)
    with engine.connect() as reader:
        reader.execute(sa.select(Vote.id).limit(1)).all()  # a transaction that read votes, still open
        report = import_battles(engine, write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False)
        reader.rollback()
    assert report.battles == 3 and dropped == [0]
    assert _schema(engine) == schema


def test_a_bad_record_found_while_writing_rolls_back_and_names_the_first_problem(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """Batches are validated in question_id order while earlier ones are written: a bad record makes
    the import roll back what it wrote, and the error names the file's first problem in file order."""
    populate(engine)
    before = table_counts(engine)
    good = [{**FASTCHAT[0], "question_id": f"q{i:02d}"} for i in range(10)]
    records = [
        *good[:3],
        {**FASTCHAT[0], "question_id": "z-late", "winner": "model_c"},  # line 4, written last
        *good[3:],
        {**FASTCHAT[0], "question_id": "a-early", "turn": 7},  # line 12, validated first
    ]
    with pytest.raises(TransferError, match=r"line 4 \(question_id 'z-late'\): unknown winner 'model_c'"):
        import_battles(engine, write_jsonl(tmp_path / "bad.jsonl", records), progress=False, batch_size=2)
    assert table_counts(engine) == before
    # Only the record written last is bad: the batches before it were in the database already.
    records = [*good, {**FASTCHAT[0], "question_id": "z-late", "turn": 7}]
    with pytest.raises(TransferError, match=r"line 11 \(question_id 'z-late'\): turn is 7"):
        import_battles(engine, write_jsonl(tmp_path / "bad.jsonl", records), progress=False, batch_size=2)
    assert table_counts(engine) == before


def test_a_clash_found_while_writing_is_reported(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A battle that appears between the up-front check and the write (another writer) still ends
    in the same error, the database's own, and a rollback."""
    populate(engine)
    before = table_counts(engine)
    monkeypatch.setattr(importer, "_refuse_existing", lambda *args: None)
    clash = [{**FASTCHAT[0], "question_id": f"new-{i}"} for i in range(3)] + [
        {**FASTCHAT[2], "question_id": "tie"}
    ]
    with pytest.raises(
        TransferError, match=r"line 4 \(question_id 'tie'\): already a battle in the database"
    ):
        import_battles(engine, write_jsonl(tmp_path / "clash.jsonl", clash), progress=False, batch_size=2)
    assert table_counts(engine) == before


def test_import_in_small_batches_matches_one_batch(
    engine: sa.Engine, second_engine: sa.Engine, tmp_path: Path
) -> None:
    populate(engine)
    original = export_to(engine, tmp_path / "o.jsonl", "jsonl")
    import_battles(second_engine, original, progress=False, batch_size=1)
    assert export_to(second_engine, tmp_path / "a.jsonl", "jsonl").read_bytes() == original.read_bytes()
