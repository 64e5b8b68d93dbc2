"""Shared data and helpers of the battle transfer tests (test_transfer_*.py): a database with battles
of every kind, FastChat records, file helpers and the CLI runner."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from storage import repo
from storage.db import session_factory
from storage.images import StoredImage
from storage.schema import Base, Battle, Vote
from storage.transfer.export import export_battles

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("ARENA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SHA = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
FORMATS = ["fastchat", "jsonl", "parquet"]


def populate(eng: sa.Engine) -> None:
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


def table_counts(eng: sa.Engine) -> dict[str, int]:
    with eng.connect() as conn:
        return {
            t.name: conn.scalar(sa.select(sa.func.count()).select_from(t))
            for t in Base.metadata.sorted_tables
        }


def export_to(eng: sa.Engine, path: Path, fmt: str) -> Path:
    export_battles(eng, path, fmt)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


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


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
