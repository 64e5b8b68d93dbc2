"""Battle export (storage.transfer): FastChat records out, the same records back in, and the
``python -m storage`` CLI.

Every database test runs on SQLite and PostgreSQL (the ``db_url`` fixtures).
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage.db import session_factory
from storage.transfer.export import export_battles
from storage.transfer.formats import TransferError
from storage.transfer.importer import import_battles
from tests.storage.transfer_cases import (
    FASTCHAT,
    FORMATS,
    NOW,
    SHA,
    export_to,
    populate,
    read_jsonl,
    run_cli,
    write_jsonl,
)

# --------------------------------------------------------------------------------------------- export


def test_export_has_one_record_per_voted_battle_in_vote_order(engine: sa.Engine, tmp_path: Path) -> None:
    populate(engine)
    records = read_jsonl(export_to(engine, tmp_path / "out.jsonl", "jsonl"))
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

    populate(engine)
    first = export_to(engine, tmp_path / f"a.{fmt}", fmt)
    second = export_to(engine, tmp_path / f"b.{fmt}", fmt)
    assert first.read_bytes() == second.read_bytes()
    expected = read_jsonl(export_to(engine, tmp_path / "ref.jsonl", "jsonl"))
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
    populate(engine)
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

    populate(engine)
    original = export_to(engine, tmp_path / f"original.{fmt}", fmt)
    report = import_battles(second_engine, original, progress=False)
    assert (report.battles, report.turns, report.responses) == (4, 5, 10)
    assert sorted(report.models_created) == ["m1", "m2", "m3"]
    again = export_to(second_engine, tmp_path / f"again.{fmt}", fmt)
    assert again.read_bytes() == original.read_bytes()
    if fmt == "parquet":
        assert pq.read_table(again).equals(pq.read_table(original))
    # Whatever the format, the imported database holds the same battles.
    assert export_to(second_engine, tmp_path / "a.jsonl", "jsonl").read_bytes() == (
        export_to(engine, tmp_path / "o.jsonl", "jsonl").read_bytes()
    )


def test_round_trip_without_conversations(
    engine: sa.Engine, second_engine: sa.Engine, tmp_path: Path
) -> None:
    """A record without conversations keeps its turn count and exports again without them."""
    src = write_jsonl(
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
    first = read_jsonl(export_to(engine, tmp_path / "1.jsonl", "jsonl"))
    assert [(r["turn"], r["images"]) for r in first] == [(3, [[], [], []]), (1, [[]])]
    assert all("conversation_a" not in r and "conversation_b" not in r for r in first)
    assert first[0]["judge"] == "arena_user" and first[0]["anony"] is True
    import_battles(second_engine, tmp_path / "1.jsonl", progress=False)
    assert (tmp_path / "1.jsonl").read_bytes() == export_to(
        second_engine, tmp_path / "2.jsonl", "jsonl"
    ).read_bytes()


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_export_import_and_errors(
    engine: sa.Engine, db_url: str, second_db_url: str, tmp_path: Path
) -> None:
    populate(engine)
    out = tmp_path / "battles.json"
    done = run_cli("storage", "export", "--db", db_url, "--format", "fastchat", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"exported 4 battles to {out} (fastchat)"
    assert out.read_bytes() == export_to(engine, tmp_path / "api.json", "fastchat").read_bytes()

    done = run_cli("storage", "import", "--db", second_db_url, str(out), "--no-progress")
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
        done = run_cli("storage", *args)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
        assert "Traceback" not in done.stderr


def test_cli_help_texts() -> None:
    for command, words in [
        ("export", ["fastchat", "parquet", "--out"]),
        ("import", ["JSONL", "Parquet", "--no-progress"]),
    ]:
        done = run_cli("storage", command, "--help")
        assert done.returncode == 0
        assert all(word in done.stdout for word in words)


def test_cli_reports_a_database_without_schema(empty_db_url: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "b.jsonl", FASTCHAT)
    done = run_cli("storage", "import", "--db", empty_db_url, str(path))
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
    import_battles(engine, write_jsonl(tmp_path / "b.jsonl", records), progress=False)
    done = run_cli("analysis", "ratings", "--db", db_url, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert sorted(row["model"] for row in json.loads(done.stdout)) == sorted(models)
