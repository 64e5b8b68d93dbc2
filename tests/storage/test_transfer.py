"""Battle export and import (storage.transfer): FastChat records out, the same records back in.

Every database test runs on SQLite and PostgreSQL (the ``db_url`` fixtures).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from storage import import_queries, repo, transfer, validation
from storage.db import make_engine, scratch_postgres_database, session_factory, upgrade
from storage.images import StoredImage
from storage.schema import Base, Battle, Image, ModelRow, Turn, Vote
from storage.transfer import TransferError, export_battles, import_battles

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("ARENA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SHA = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
FORMATS = ["fastchat", "jsonl", "parquet"]


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def second_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """One more fresh, migrated database of the same kind as ``db_url``."""
    if sa.engine.make_url(db_url).get_backend_name() == "sqlite":
        url = f"sqlite:///{tmp_path / 'second.db'}"
        upgrade(url)
        yield url
        return
    with scratch_postgres_database(PG_ADMIN_URL, "arena_test") as url:
        upgrade(url)
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def second_engine(second_db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(second_db_url)
    yield eng
    eng.dispose()


def _populate(eng: sa.Engine) -> None:
    """Battles of every kind through the repository: only the four voted anony/named ones export.

    multi: two turns with images, a reason; tie and tie-2: voted at the same moment; named: a judge
    label; direct: a direct chat; invalid and unvoted: never voted.
    """
    factory = session_factory(eng)
    seeds = [repo.ModelSeed(n, n.upper(), "org", "scripted") for n in ("m1", "m2", "m3")]
    with factory.begin() as db:
        ids = repo.sync_models(db, seeds, NOW)
        repo.ensure_voter_session(db, "s1", "pytest", NOW)
        repo.add_images(db, [StoredImage(sha, "image/png", 4, 4, 64, Path("unused")) for sha in SHA], NOW)

        def battle(bid: str, a: str, b: str | None, turns: list[Any], mode: str = "anony") -> None:
            repo.create_battle(
                db,
                battle_id=bid,
                model_a_id=ids[a],
                model_b_id=ids[b] if b else None,
                session_id="s1",
                now=NOW,
                mode=mode,
            )
            for index, (prompt, images, answers) in enumerate(turns):
                turn = repo.add_turn(
                    db, battle_id=bid, index=index, prompt=prompt, image_hashes=images, now=NOW
                )
                for side, text in answers.items():
                    repo.save_response(
                        db,
                        turn_id=turn.id,
                        side=side,
                        model_id=ids[a if side == "a" else b],  # type: ignore[index]
                        text=text,
                        started_at=NOW,
                        first_token_at=NOW,
                        finished_at=NOW,
                        output_chunks=3,
                        finish_reason="stop",
                    )
            repo.set_battle_state(db, bid, "ready", NOW)

        battle(
            "multi",
            "m1",
            "m2",
            [
                ("What is in this chart?", SHA[:2], {"a": "Sales by month.", "b": "A bar chart."}),
                ("And the trend?", SHA[2:], {"a": "Up.", "b": "Flat, then up — ünïcödé ✓\nsecond line"}),
            ],
        )
        battle("tie", "m2", "m3", [("Describe it.", [], {"a": "A cat.", "b": "A dog."})])
        battle("tie-2", "m1", "m3", [("Count the apples.", [], {"a": "3", "b": "4"})])
        battle("named", "m3", "m1", [("Read the sign.", [], {"a": "STOP", "b": "Stop"})], mode="named")
        battle("direct", "m1", None, [("Hello", [], {"a": "Hi!"})], mode="direct")
        battle("invalid", "m1", "m2", [("Why?", [], {"a": "Because.", "b": "error"})])
        battle("unvoted", "m2", "m1", [("Who?", [], {"a": "Me.", "b": "You."})])
        repo.set_battle_state(db, "invalid", "invalid", NOW, reason="backend error")
        db.execute(sa.update(Battle).where(Battle.id == "multi").values(language="English"))
        repo.record_vote(
            db,
            battle_id="multi",
            winner="model_a",
            session_id="s1",
            now=NOW + timedelta(seconds=30),
            reason="reads the chart",
        )
        repo.record_vote(
            db, battle_id="tie", winner="tie (bothbad)", session_id=None, now=NOW + timedelta(seconds=10)
        )
        repo.record_vote(
            db, battle_id="tie-2", winner="tie", session_id="s1", now=NOW + timedelta(seconds=10)
        )
        repo.record_vote(
            db, battle_id="named", winner="model_b", session_id="s1", now=NOW + timedelta(seconds=20)
        )
        db.execute(sa.update(Vote).where(Vote.battle_id == "named").values(judge="expert-7"))


def _counts(eng: sa.Engine) -> dict[str, int]:
    with eng.connect() as conn:
        return {
            t.name: conn.scalar(sa.select(sa.func.count()).select_from(t))
            for t in Base.metadata.sorted_tables
        }


def _export(eng: sa.Engine, path: Path, fmt: str) -> Path:
    export_battles(eng, path, fmt)
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- export


def test_export_has_one_record_per_voted_battle_in_vote_order(engine: sa.Engine, tmp_path: Path) -> None:
    _populate(engine)
    records = _read_jsonl(_export(engine, tmp_path / "out.jsonl", "jsonl"))
    # tie and tie-2 were voted at the same moment: the battle id breaks the tie.
    assert [r["question_id"] for r in records] == ["tie", "tie-2", "named", "multi"]
    by_id = {r["question_id"]: r for r in records}
    assert by_id["multi"] == {
        "question_id": "multi",
        "model_a": "m1",
        "model_b": "m2",
        "winner": "model_a",
        "judge": "s1",
        "turn": 2,
        "anony": True,
        "language": "English",
        "tstamp": (NOW + timedelta(seconds=30)).timestamp(),
        "conversation_a": [
            {"role": "user", "content": "What is in this chart?"},
            {"role": "assistant", "content": "Sales by month."},
            {"role": "user", "content": "And the trend?"},
            {"role": "assistant", "content": "Up."},
        ],
        "conversation_b": [
            {"role": "user", "content": "What is in this chart?"},
            {"role": "assistant", "content": "A bar chart."},
            {"role": "user", "content": "And the trend?"},
            {"role": "assistant", "content": "Flat, then up — ünïcödé ✓\nsecond line"},
        ],
        "images": [SHA[:2], SHA[2:]],
        "reason": "reads the chart",
    }
    assert by_id["tie"]["judge"] == "arena_user"  # no judge label, no voter session
    assert by_id["tie"]["language"] is None and "reason" not in by_id["tie"]
    assert by_id["named"]["judge"] == "expert-7" and by_id["named"]["anony"] is False
    assert list(by_id["tie"]) == [
        "question_id",
        "model_a",
        "model_b",
        "winner",
        "judge",
        "turn",
        "anony",
        "language",
        "tstamp",
        "conversation_a",
        "conversation_b",
        "images",
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_is_deterministic_and_all_formats_agree(engine: sa.Engine, tmp_path: Path, fmt: str) -> None:
    import pyarrow.parquet as pq

    _populate(engine)
    first = _export(engine, tmp_path / f"a.{fmt}", fmt)
    second = _export(engine, tmp_path / f"b.{fmt}", fmt)
    assert first.read_bytes() == second.read_bytes()
    expected = _read_jsonl(_export(engine, tmp_path / "ref.jsonl", "jsonl"))
    if fmt == "fastchat":
        assert json.loads(first.read_text(encoding="utf-8")) == expected
    elif fmt == "parquet":
        rows = pq.read_table(first).to_pylist()
        assert [
            {k: v for k, v in row.items() if v is not None or k == "language"} for row in rows
        ] == expected


def test_export_of_an_empty_database(engine: sa.Engine, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    assert export_battles(engine, tmp_path / "e.json", "fastchat") == 0
    assert json.loads((tmp_path / "e.json").read_text()) == []
    assert export_battles(engine, tmp_path / "e.jsonl", "jsonl") == 0
    assert (tmp_path / "e.jsonl").read_text() == ""
    assert export_battles(engine, tmp_path / "e.parquet", "parquet") == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


def test_export_takes_a_session(engine: sa.Engine, tmp_path: Path) -> None:
    _populate(engine)
    with session_factory(engine)() as db:
        assert export_battles(db, tmp_path / "s.jsonl", "jsonl") == 4
    with pytest.raises(TransferError, match="unknown export format"):
        export_battles(engine, tmp_path / "x", "csv")


# ----------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_byte_identical(
    engine: sa.Engine, second_engine: sa.Engine, tmp_path: Path, fmt: str
) -> None:
    """export -> import into an empty database -> export gives the same file, in every format."""
    import pyarrow.parquet as pq

    _populate(engine)
    original = _export(engine, tmp_path / f"original.{fmt}", fmt)
    report = import_battles(second_engine, original, progress=False)
    assert (report.battles, report.turns, report.responses) == (4, 5, 10)
    assert sorted(report.models_created) == ["m1", "m2", "m3"]
    again = _export(second_engine, tmp_path / f"again.{fmt}", fmt)
    assert again.read_bytes() == original.read_bytes()
    if fmt == "parquet":
        assert pq.read_table(again).equals(pq.read_table(original))
    # Whatever the format, the imported database holds the same battles.
    assert _export(second_engine, tmp_path / "a.jsonl", "jsonl").read_bytes() == (
        _export(engine, tmp_path / "o.jsonl", "jsonl").read_bytes()
    )


def test_round_trip_without_conversations(
    engine: sa.Engine, second_engine: sa.Engine, tmp_path: Path
) -> None:
    """A record without conversations keeps its turn count and exports again without them."""
    src = _write_jsonl(
        tmp_path / "bare.jsonl",
        [
            {
                "question_id": "q1",
                "model_a": "x",
                "model_b": "y",
                "winner": "model_b",
                "turn": 3,
                "tstamp": 1.5e9,
            },
            {"question_id": "q2", "model_a": "y", "model_b": "x", "winner": "tie", "tstamp": 1.5e9 + 1},
        ],
    )
    import_battles(engine, src, progress=False)
    first = _read_jsonl(_export(engine, tmp_path / "1.jsonl", "jsonl"))
    assert [(r["turn"], r["images"]) for r in first] == [(3, [[], [], []]), (1, [[]])]
    assert all("conversation_a" not in r and "conversation_b" not in r for r in first)
    assert first[0]["judge"] == "arena_user" and first[0]["anony"] is True
    import_battles(second_engine, tmp_path / "1.jsonl", progress=False)
    assert (tmp_path / "1.jsonl").read_bytes() == _export(
        second_engine, tmp_path / "2.jsonl", "jsonl"
    ).read_bytes()


# --------------------------------------------------------------------------------------------- import

FASTCHAT = [
    {
        "model_a": "gpt-4",
        "model_b": "claude-1",
        "winner": "model_a",
        "judge": "arena_user_x",
        "turn": 1,
        "anony": True,
        "language": "English",
        "tstamp": 1682345678.123,
        "question_id": "abc123",
        "conversation_a": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        "conversation_b": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "Four."},
        ],
    },
    {
        "model_a": "claude-1",
        "model_b": "vicuna-13b",
        "winner": "tie (bothbad)",
        "judge": "arena_user_y",
        "turn": 2,
        "anony": False,
        "language": "German",
        "tstamp": 1682345700.5,
        "question_id": "def456",
        "conversation_a": [
            {"role": "user", "content": "Hallo"},
            {"role": "assistant", "content": "Hallo!"},
            {"role": "user", "content": "Wie geht's?"},
            {"role": "assistant", "content": "Gut."},
        ],
        "conversation_b": [
            {"role": "user", "content": "Hallo"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Wie geht's?"},
        ],
        "images": [[SHA[0]], []],
        "reason": "both wrong",
    },
    {"model_a": "vicuna-13b", "model_b": "gpt-4", "winner": "model_b", "question_id": "ghi789"},
]


def test_import_of_a_fastchat_jsonl_file(engine: sa.Engine, tmp_path: Path) -> None:
    factory = session_factory(engine)
    with factory.begin() as db:  # a roster model the file also names: reused, left as it is
        repo.sync_models(db, [repo.ModelSeed("gpt-4", "GPT-4", "OpenAI", "openai")], NOW)
    later = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    report = import_battles(
        engine, _write_jsonl(tmp_path / "clean.jsonl", FASTCHAT), progress=False, now=later
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
        assert repo.as_utc(votes["abc123"].created_at).timestamp() == 1682345678.123
        assert (votes["def456"].winner, votes["def456"].reason) == ("tie (bothbad)", "both wrong")
        assert votes["ghi789"].judge is None and repo.as_utc(votes["ghi789"].created_at) == later

    records = {r["question_id"]: r for r in _read_jsonl(_export(engine, tmp_path / "o.jsonl", "jsonl"))}
    assert records["abc123"] == {**FASTCHAT[0], "images": [[]]}
    assert records["def456"] == {**FASTCHAT[1]}
    assert records["ghi789"]["judge"] == "arena_user" and records["ghi789"]["tstamp"] == later.timestamp()


def test_import_tells_json_list_from_jsonl_by_content(engine: sa.Engine, tmp_path: Path) -> None:
    listed = tmp_path / "battles.jsonl"  # a JSON list, whatever the name says
    listed.write_text("\ufeff" + json.dumps(FASTCHAT[:2], indent=2), encoding="utf-8")
    lines = _write_jsonl(tmp_path / "battles.json", FASTCHAT[2:])
    assert import_battles(engine, listed, progress=False).battles == 2
    assert import_battles(engine, lines, progress=False).battles == 1
    assert _counts(engine)["battles"] == 3


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


def test_import_shows_progress_on_stderr(engine: sa.Engine, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import_battles(engine, _write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "import" in err and "battle" in err


def test_sqlite_connection_settings_are_restored(engine: sa.Engine, tmp_path: Path) -> None:
    """The import turns SQLite's foreign-key checks off for itself only: the pool gets them back."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite connection settings")

    names = ("foreign_keys", "ignore_check_constraints", "cache_size", "temp_store")

    def settings() -> tuple[int, ...]:
        with engine.connect() as conn:
            return tuple(conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names)

    before = settings()
    assert before[:2] == (1, 0)
    import_battles(engine, _write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False)
    assert settings() == before
    with pytest.raises(TransferError):  # and after a refused import
        import_battles(engine, _write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False)
    assert settings() == before


def test_import_without_skipping_postgres_triggers(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role that may not set session_replication_role still imports (the triggers then check)."""
    monkeypatch.setattr(transfer, "skip_fk_triggers", lambda *args: None)
    assert import_battles(engine, _write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False).battles == 3


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
    real = transfer.defer_indexes

    def spy(conn: sa.Connection, battles: int) -> list[str]:
        statements = real(conn, battles)
        dropped.append(len(statements))
        return statements

    monkeypatch.setattr(transfer, "defer_indexes", spy)
    return dropped


def test_large_imports_rebuild_the_indexes_they_drop(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import bigger than the database drops indexes and builds them again; a smaller one keeps
    them. Either way the schema is the same afterwards, and the rebuilt constraints hold."""
    dropped = _count_dropped_indexes(monkeypatch)
    schema = _schema(engine)
    _populate(engine)  # 7 battles
    many = [{**FASTCHAT[0], "question_id": f"big-{i:03d}"} for i in range(20)]
    import_battles(engine, _write_jsonl(tmp_path / "many.jsonl", many), progress=False, batch_size=6)
    import_battles(engine, _write_jsonl(tmp_path / "few.jsonl", FASTCHAT), progress=False)
    assert dropped[0] >= 6 and dropped[1] == 0  # at least the six non-unique indexes
    assert _schema(engine) == schema
    assert _counts(engine)["battles"] == 7 + 20 + 3
    with engine.connect() as conn:  # the rebuilt unique constraints hold
        vote = conn.execute(sa.select(Vote.id).where(Vote.battle_id == "big-007")).scalar_one()
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(
                sa.insert(Vote).values(id=vote + 1000, battle_id="big-007", winner="tie", created_at=NOW)
            )


def test_a_busy_postgres_keeps_its_indexes(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another session holds on to a table, the import does not queue everyone behind a lock
    for dropping indexes: after a short wait it imports with the indexes in place."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL table locks")
    monkeypatch.setattr(import_queries, "_DEFER_LOCK_TIMEOUT_MS", 100)
    dropped = _count_dropped_indexes(monkeypatch)
    schema = _schema(engine)
    with engine.connect() as reader:
        reader.execute(sa.select(Vote.id).limit(1)).all()  # a transaction that read votes, still open
        report = import_battles(engine, _write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False)
        reader.rollback()
    assert report.battles == 3 and dropped == [0]
    assert _schema(engine) == schema


def test_a_bad_record_found_while_writing_rolls_back_and_names_the_first_problem(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """Batches are validated in question_id order while earlier ones are written: a bad record makes
    the import roll back what it wrote, and the error names the file's first problem in file order."""
    _populate(engine)
    before = _counts(engine)
    good = [{**FASTCHAT[0], "question_id": f"q{i:02d}"} for i in range(10)]
    records = [
        *good[:3],
        {**FASTCHAT[0], "question_id": "z-late", "winner": "model_c"},  # line 4, written last
        *good[3:],
        {**FASTCHAT[0], "question_id": "a-early", "turn": 7},  # line 12, validated first
    ]
    with pytest.raises(TransferError, match=r"line 4 \(question_id 'z-late'\): unknown winner 'model_c'"):
        import_battles(engine, _write_jsonl(tmp_path / "bad.jsonl", records), progress=False, batch_size=2)
    assert _counts(engine) == before
    # Only the record written last is bad: the batches before it were in the database already.
    records = [*good, {**FASTCHAT[0], "question_id": "z-late", "turn": 7}]
    with pytest.raises(TransferError, match=r"line 11 \(question_id 'z-late'\): turn is 7"):
        import_battles(engine, _write_jsonl(tmp_path / "bad.jsonl", records), progress=False, batch_size=2)
    assert _counts(engine) == before


def test_a_clash_found_while_writing_is_reported(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A battle that appears between the up-front check and the write (another writer) still ends
    in the same error, the database's own, and a rollback."""
    _populate(engine)
    before = _counts(engine)
    monkeypatch.setattr(transfer, "_refuse_existing", lambda *args: None)
    clash = [{**FASTCHAT[0], "question_id": f"new-{i}"} for i in range(3)] + [
        {**FASTCHAT[2], "question_id": "tie"}
    ]
    with pytest.raises(
        TransferError, match=r"line 4 \(question_id 'tie'\): already a battle in the database"
    ):
        import_battles(engine, _write_jsonl(tmp_path / "clash.jsonl", clash), progress=False, batch_size=2)
    assert _counts(engine) == before


def test_import_in_small_batches_matches_one_batch(
    engine: sa.Engine, second_engine: sa.Engine, tmp_path: Path
) -> None:
    _populate(engine)
    original = _export(engine, tmp_path / "o.jsonl", "jsonl")
    import_battles(second_engine, original, progress=False, batch_size=1)
    assert _export(second_engine, tmp_path / "a.jsonl", "jsonl").read_bytes() == original.read_bytes()


def _conversation_pair(*turns: tuple[str, str | None, str | None]) -> dict[str, Any]:
    side_a: list[dict[str, str]] = []
    side_b: list[dict[str, str]] = []
    for prompt, answer_a, answer_b in turns:
        for side, answer in ((side_a, answer_a), (side_b, answer_b)):
            side.append({"role": "user", "content": prompt})
            if answer is not None:
                side.append({"role": "assistant", "content": answer})
    return {"conversation_a": side_a, "conversation_b": side_b}


#: Records in shapes that files hold all the time: the fast path takes every one of them.
COMMON_SHAPES = [
    FASTCHAT[0],
    FASTCHAT[1],
    FASTCHAT[2],
    {**FASTCHAT[0], "tstamp": 1682345678, "anony": False, "language": None, "judge": None},
    {**FASTCHAT[0], "tstamp": None, "reason": "ünïcödé ✓", "images": [[SHA[0], SHA[1]]]},
    {**FASTCHAT[0], "images": [[]]},
    {
        **FASTCHAT[0],
        "turn": None,
        **_conversation_pair(("p1", "a1", None), ("p2", None, "b2"), ("p3", "a3", "b3")),
    },
    {**FASTCHAT[0], "turn": 2, **_conversation_pair(("p1", "a1", "b1"), ("p2", "a2", "b2"))},
    {**FASTCHAT[2], "turn": 3},
    {**FASTCHAT[2], "conversation_a": [], "conversation_b": None},
    {**FASTCHAT[2], "conversation_a": [], "conversation_b": []},
    {**FASTCHAT[0], "extra": {"ignored": [1, 2]}},
]
#: Unusual records, valid or not: the fast path may leave them to the general checks.
ODD_SHAPES = [
    {**FASTCHAT[0], "turn": 1.0},
    {**FASTCHAT[0], "turn": True},
    {**FASTCHAT[0], "anony": None},
    {**FASTCHAT[0], "tstamp": True},
    {**FASTCHAT[0], "tstamp": 1e20},
    {**FASTCHAT[0], "language": "x" * 33},
    {**FASTCHAT[0], "question_id": ""},
    {**FASTCHAT[0], "question_id": "q" * 64, "model_a": "m" * 200},
    {**FASTCHAT[0], "model_b": "gpt-4"},
    {**FASTCHAT[2], "turn": 1001},
    {**FASTCHAT[2], "conversation_a": [], "conversation_b": [{"role": "user", "content": "x"}]},
    {**FASTCHAT[0], "conversation_b": [{"role": "user", "content": "What is 2+2?"}]},
    {**FASTCHAT[0], **_conversation_pair(("p1", "a1", "b1"), ("p2", "a2", "b2"))},
    {**FASTCHAT[0], "turn": None, "conversation_a": [{"role": "user", "content": "x"}] * 2},
    {
        **FASTCHAT[0],
        "conversation_a": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}],
    },
    {
        **FASTCHAT[0],
        "conversation_a": [
            {"role": "user", "content": "What is 2+2?", "name": "x"},
            {"role": "assistant", "content": "4"},
        ],
    },
    {**FASTCHAT[0], "images": [["A" * 64]]},
    {**FASTCHAT[0], "images": [[SHA[0]], []]},
    {**FASTCHAT[0], "images": [[1]]},
]


@pytest.mark.parametrize(
    ("record", "common"),
    [(r, True) for r in COMMON_SHAPES] + [(r, False) for r in ODD_SHAPES],
    ids=[f"common-{i}" for i in range(len(COMMON_SHAPES))] + [f"odd-{i}" for i in range(len(ODD_SHAPES))],
)
def test_the_fast_path_agrees_with_the_general_checks(record: dict[str, Any], common: bool) -> None:
    """Whatever the msgspec path makes of a record is what the general checks make of it; what they
    refuse, it refuses too (and leaves to them, which say why)."""
    now_ts = NOW.timestamp()
    try:
        expected: Any = validation.check_record(record, now_ts)
    except validation.Problem:
        expected = None
    try:
        fast = validation.fast_battle(validation.FAST_DECODER.decode(json.dumps(record).encode()), now_ts)
    except (ValueError, OverflowError, OSError):  # msgspec's errors are ValueErrors
        fast = None
    if common:
        assert expected is not None and fast == expected
    elif fast is not None:
        assert fast == expected


# ------------------------------------------------------------------------------------ refused imports


def _record(**changes: Any) -> dict[str, Any]:
    """FASTCHAT[0] as question_id 'bad' with some fields changed (``...`` removes one)."""
    record = {**FASTCHAT[0], "question_id": "bad", **changes}
    return {k: v for k, v in record.items() if v is not ...}


BAD_RECORDS = [
    ("missing", _record(winner=...), r"line 2 \(question_id 'bad'\): missing required field\(s\): winner"),
    ("no-id", _record(question_id=...), r"line 2: missing required field\(s\): question_id"),
    ("winner", _record(winner="model_c"), r"line 2 \(question_id 'bad'\): unknown winner 'model_c'"),
    ("same-model", _record(model_b="gpt-4"), r"same model \('gpt-4'\)"),
    ("model-type", _record(model_a=7), r"model_a must be a string, got int"),
    ("id-length", _record(question_id="x" * 65), r"question_id is 65 characters long; at most 64"),
    ("turn-type", _record(turn="1"), r"turn must be a whole number >= 1, got '1'"),
    ("turn-count", _record(turn=2), r"turn is 2 but the conversations have 1 user turn"),
    ("anony", _record(anony="yes"), r"anony must be true or false, got 'yes'"),
    ("tstamp", _record(tstamp="2023-04-24"), r"tstamp must be a number"),
    ("tstamp-range", _record(tstamp=1e20), r"tstamp 1e\+20 is not a usable time"),
    ("judge", _record(judge=["x"]), r"judge must be a string, got list"),
    ("one-side", _record(conversation_b=...), r"only conversation_a is given"),
    (
        "prompts",
        _record(conversation_b=[{"role": "user", "content": "other"}, {"role": "assistant", "content": "x"}]),
        r"user turn 1 differs between conversation_a and conversation_b",
    ),
    (
        "role",
        _record(conversation_a=[{"role": "system", "content": "x"}]),
        r"conversation_a message 1: role must be 'user' or 'assistant', got 'system'",
    ),
    (
        "order",
        _record(conversation_a=[{"role": "assistant", "content": "x"}]),
        r"conversation_a message 1: an assistant message must follow a user message",
    ),
    (
        "content",
        _record(conversation_b=[{"role": "user", "content": None}]),
        r"conversation_b message 1: content must be a string, got NoneType",
    ),
    ("images-shape", _record(images=[[SHA[0]], []]), r"images must be a list with one list of sha256 hashes"),
    ("images-hash", _record(images=[["not-a-hash"]]), r"'not-a-hash' is not a lowercase hex sha256"),
    ("reason", _record(reason="x" * 2001), r"reason is 2001 characters long; at most 2000"),
    (
        "nul",
        _record(
            conversation_a=[
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4\x00"},
            ]
        ),
        r"text holds a NUL character",
    ),
    ("not-object", [1, 2], r"line 2: expected a JSON object, got list"),
]


@pytest.mark.parametrize(("record", "message"), [b[1:] for b in BAD_RECORDS], ids=[b[0] for b in BAD_RECORDS])
def test_bad_records_are_refused_and_nothing_is_written(
    engine: sa.Engine, tmp_path: Path, record: Any, message: str
) -> None:
    _populate(engine)
    before = _counts(engine)
    path = _write_jsonl(tmp_path / "bad.jsonl", [{**FASTCHAT[2], "question_id": "good"}, record, FASTCHAT[1]])
    with pytest.raises(TransferError, match=message):
        import_battles(engine, path, progress=False)
    assert _counts(engine) == before


BAD_FILES = [
    (
        "truncated-jsonl",
        "\n".join([json.dumps(FASTCHAT[0]), json.dumps(FASTCHAT[1]), json.dumps(FASTCHAT[2])[:40]]),
        r"line 3: malformed or truncated JSON record",
    ),
    ("truncated-list", '[{"question_id": "x",', r"malformed or truncated JSON"),
    ("not-a-list", '"battles"', r"not a FastChat battle file"),
    ("object-not-list", "[1]", r"record 1: expected a JSON object, got int"),
    ("text", "hello world\n", r"not a FastChat battle file"),
    ("bad-parquet", "PAR1 but not really", r"not a readable Parquet file"),
]


@pytest.mark.parametrize(("content", "message"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused(engine: sa.Engine, tmp_path: Path, content: str, message: str) -> None:
    before = _counts(engine)
    path = tmp_path / "battles.data"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TransferError, match=message):
        import_battles(engine, path, progress=False)
    assert _counts(engine) == before


def test_missing_file_and_empty_file(engine: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="no such file"):
        import_battles(engine, tmp_path / "nope.jsonl", progress=False)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert import_battles(engine, tmp_path / "empty.jsonl", progress=False).battles == 0


def test_duplicate_question_id_in_the_file_is_refused(engine: sa.Engine, tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "dup.jsonl", [FASTCHAT[0], FASTCHAT[2], {**FASTCHAT[1], "question_id": "abc123"}]
    )
    with pytest.raises(
        TransferError, match=r"line 3 \(question_id 'abc123'\): duplicate question_id \(already at line 1\)"
    ):
        import_battles(engine, path, progress=False)
    assert _counts(engine)["battles"] == 0


def test_question_id_already_in_the_database_refuses_the_whole_import(
    engine: sa.Engine, tmp_path: Path
) -> None:
    _populate(engine)
    before = _counts(engine)
    path = _write_jsonl(
        tmp_path / "clash.jsonl",
        [FASTCHAT[0], {**FASTCHAT[2], "question_id": "tie-2"}, {**FASTCHAT[1], "question_id": "multi"}],
    )
    with pytest.raises(
        TransferError,
        match=r"line 2 \(question_id 'tie-2'\): already a battle in the database \(and 1 more\)",
    ):
        import_battles(engine, path, progress=False)
    assert _counts(engine) == before  # not even the new models


def test_a_failure_while_writing_rolls_everything_back(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Battles of earlier batches are already inserted when a later batch fails: one transaction."""
    _populate(engine)
    before = _counts(engine)
    real = transfer.turn_rows
    calls = []

    def failing(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args)

    monkeypatch.setattr(transfer, "turn_rows", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        import_battles(engine, _write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False, batch_size=1)
    assert _counts(engine) == before


# ------------------------------------------------------------------------------------------------ CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_export_import_and_errors(
    engine: sa.Engine, db_url: str, second_db_url: str, tmp_path: Path
) -> None:
    _populate(engine)
    out = tmp_path / "battles.json"
    done = _cli("storage", "export", "--db", db_url, "--format", "fastchat", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"exported 4 battles to {out} (fastchat)"
    assert out.read_bytes() == _export(engine, tmp_path / "api.json", "fastchat").read_bytes()

    done = _cli("storage", "import", "--db", second_db_url, str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    [line] = done.stdout.splitlines()
    assert line.startswith("imported 4 battles") and "3 models created" in line and "battles/s" in line

    for args, message in [
        (("import", "--db", second_db_url, str(out)), "already a battle in the database"),
        (("import", "--db", second_db_url, str(tmp_path / "missing.jsonl")), "no such file"),
        (
            ("export", "--db", second_db_url, "--format", "jsonl", "--out", str(tmp_path / "no" / "x")),
            "No such file",
        ),
    ]:
        done = _cli("storage", *args)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
        assert "Traceback" not in done.stderr


def test_cli_help_texts() -> None:
    for command, words in [
        ("export", ["fastchat", "parquet", "--out"]),
        ("import", ["JSONL", "Parquet", "--no-progress"]),
    ]:
        done = _cli("storage", command, "--help")
        assert done.returncode == 0
        assert all(word in done.stdout for word in words)


def test_cli_reports_a_database_without_schema(empty_db_url: str, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "b.jsonl", FASTCHAT)
    done = _cli("storage", "import", "--db", empty_db_url, str(path))
    assert done.returncode == 2 and "python -m storage upgrade" in done.stderr


def test_ratings_cli_reads_an_imported_database(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    models = ["alpha", "beta", "gamma", "delta"]
    pairs = list(itertools.combinations(models, 2))
    winners = ["model_a", "model_b", "tie", "model_a", "tie (bothbad)"]
    records = [
        {
            "question_id": f"q{i}",
            "model_a": pairs[i % len(pairs)][0],
            "model_b": pairs[i % len(pairs)][1],
            "winner": winners[i % len(winners)],
            "tstamp": 1.7e9 + i,
        }
        for i in range(60)
    ]
    import_battles(engine, _write_jsonl(tmp_path / "b.jsonl", records), progress=False)
    done = _cli("analysis", "ratings", "--db", db_url, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert sorted(row["model"] for row in json.loads(done.stdout)) == sorted(models)
