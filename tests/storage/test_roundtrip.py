"""What ``storage export`` writes, ``analysis ratings --battles`` reads: every export format gives the
leaderboard the database gives, and a UTF-8 byte-order mark changes nothing for import or analysis.

Every database test runs on SQLite and PostgreSQL (the ``db_url`` fixtures).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from analysis.cli import main as analysis_main
from analysis.io import load_battles_file
from storage.transfer.export import export_battles
from storage.transfer.formats import UTF8_BOM, detect_format, iter_records
from storage.transfer.importer import import_battles

FORMATS = {"fastchat": "json", "jsonl": "jsonl", "parquet": "parquet"}
MODELS = ["llava-1.5", "idefics3", "paligemma", "gemma-3", "blip-2"]
SHA = [hashlib.sha256(bytes([i])).hexdigest() for i in range(4)]
PROMPTS = ["What is in this picture?", "Wie viele Äpfel sind das?", "这是什么？", "Read the sign ✓"]


def _conversations(i: int, turns: int) -> dict[str, Any]:
    side_a: list[dict[str, str]] = []
    side_b: list[dict[str, str]] = []
    for t in range(turns):
        prompt = PROMPTS[(i + t) % len(PROMPTS)]
        side_a += [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"A{i}.{t} — ünï"}]
        side_b += [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"B{i}.{t}\nzwei"}]
    return {"conversation_a": side_a, "conversation_b": side_b}


def mixed_battles(count: int = 120) -> list[dict[str, Any]]:
    """Battles of every kind: anonymous and named, all four outcomes, one to three turns, images on
    some turns, non-ASCII text, records with and without conversations, judges and reasons."""
    winners = ["model_a", "model_b", "tie", "model_a", "tie (bothbad)", "model_b", "model_a"]
    records = []
    for i in range(count):
        a = MODELS[i % len(MODELS)]
        b = MODELS[(i * 3 + 1 + i // len(MODELS)) % len(MODELS)]
        if a == b:
            b = MODELS[(MODELS.index(a) + 1) % len(MODELS)]
        turns = 1 + i % 3
        record: dict[str, Any] = {
            "question_id": f"q{i:04d}-{hashlib.sha1(str(i).encode()).hexdigest()[:8]}",
            "model_a": a,
            "model_b": b,
            "winner": winners[i % len(winners)],
            "judge": f"voter-{i % 9}",
            "anony": i % 5 != 0,
            "language": ["English", "German", "Chinese", None][i % 4],
            "tstamp": 1.7e9 + 37 * i,
        }
        if i % 6 != 5:
            record.update(_conversations(i, turns))
            record["turn"] = turns
            record["images"] = [[SHA[(i + t) % 4]] if (i + t) % 2 else [] for t in range(turns)]
        if i % 7 == 0:
            record["reason"] = "a répondu juste"
        records.append(record)
    return records


def _write_jsonl(path: Path, records: list[dict[str, Any]], prefix: bytes = b"") -> Path:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path.write_bytes(prefix + lines.encode("utf-8"))
    return path


def _ratings(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    status = analysis_main(["ratings", *args, "--format", "json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    return json.loads(out.out)


@pytest.mark.parametrize(
    "options",
    [
        ("--bootstrap", "20", "--seed", "7"),
        ("--method", "elo", "--seed", "7"),
        ("--include-named", "--bootstrap", "10", "--seed", "3"),
    ],
    ids=["bt", "elo", "named"],
)
def test_every_export_format_gives_the_ratings_of_the_database(
    engine: sa.Engine,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: tuple[str, ...],
) -> None:
    import_battles(engine, _write_jsonl(tmp_path / "mixed.jsonl", mixed_battles()), progress=False)
    from_db = _ratings(capsys, "--db", db_url, *options)
    assert sorted(row["model"] for row in from_db) == sorted(MODELS)
    for fmt, detected in FORMATS.items():
        path = tmp_path / f"export.{fmt}"
        assert export_battles(engine, path, fmt) == 120
        assert detect_format(path) == detected
        assert _ratings(capsys, "--battles", str(path), *options) == from_db, fmt


def test_every_export_format_reads_back_as_the_same_frame(engine: sa.Engine, tmp_path: Path) -> None:
    import_battles(engine, _write_jsonl(tmp_path / "mixed.jsonl", mixed_battles()), progress=False)
    frames = {}
    for fmt in FORMATS:
        path = tmp_path / f"export.{fmt}"
        export_battles(engine, path, fmt)
        frames[fmt] = load_battles_file(path)
        projected = load_battles_file(path, fields=["anony", "tstamp"])
        assert projected["winner"].tolist() == frames[fmt]["winner"].tolist()
    jsonl = frames["jsonl"]
    assert len(jsonl) == 120 and jsonl["anony"].sum() == 96
    for fmt in ("fastchat", "parquet"):
        for column in ("question_id", "model_a", "model_b", "winner", "judge", "turn", "anony", "tstamp"):
            assert frames[fmt][column].tolist() == jsonl[column].tolist(), (fmt, column)


@pytest.mark.parametrize("as_list", [True, False], ids=["json", "jsonl"])
def test_a_byte_order_mark_changes_nothing(
    engine: sa.Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str], as_list: bool
) -> None:
    records = mixed_battles(30)
    if as_list:
        text = json.dumps(records, ensure_ascii=False).encode("utf-8")
        plain, marked = tmp_path / "plain.json", tmp_path / "marked.json"
        plain.write_bytes(text)
        marked.write_bytes(UTF8_BOM + text)
    else:
        plain = _write_jsonl(tmp_path / "plain.jsonl", records)
        marked = _write_jsonl(tmp_path / "marked.jsonl", records, prefix=UTF8_BOM)
    assert [r for _, r in iter_records(marked)] == records
    assert load_battles_file(marked).equals(load_battles_file(plain))
    options = ("--bootstrap", "5", "--seed", "1")
    assert _ratings(capsys, "--battles", str(marked), *options) == _ratings(
        capsys, "--battles", str(plain), *options
    )
    report = import_battles(engine, marked, progress=False)
    assert report.battles == 30
    exported = export_battles(engine, tmp_path / "back.jsonl", "jsonl")
    assert exported == 30
    back = [json.loads(line) for line in (tmp_path / "back.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["question_id"] for r in back} == {r["question_id"] for r in records}
    assert {r["question_id"]: r["winner"] for r in back} == {r["question_id"]: r["winner"] for r in records}
