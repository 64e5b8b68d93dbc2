"""Ratings straight from the arena database (SQLite and PostgreSQL), through analysis.io and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analysis.io import load_battles_db
from storage import repo

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, tzinfo=UTC)

# (model_a, model_b, winner, mode): "strong" wins most of its battles.
BATTLES = [
    ("strong", "weak", "model_a", "anony"),
    ("weak", "strong", "model_b", "anony"),
    ("strong", "middle", "model_a", "anony"),
    ("middle", "weak", "model_a", "anony"),
    ("middle", "strong", "tie", "anony"),
    ("weak", "middle", "tie (bothbad)", "anony"),
    ("weak", "strong", "model_a", "anony"),
    ("weak", "strong", "model_a", "named"),  # named battles stay out of the leaderboard
]


def _fill(sessions) -> None:  # type: ignore[no-untyped-def]
    seeds = [repo.ModelSeed(n, n.title(), "", "scripted") for n in ("strong", "middle", "weak")]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, T0)
        for i, (a, b, winner, mode) in enumerate(BATTLES):
            now = T0 + timedelta(minutes=i)
            repo.create_battle(
                db,
                battle_id=f"b{i}",
                model_a_id=ids[a],
                model_b_id=ids[b],
                session_id=None,
                now=now,
                mode=mode,
            )
            repo.add_turn(db, battle_id=f"b{i}", index=0, prompt="?", image_hashes=[], now=now)
            repo.set_battle_state(db, f"b{i}", "ready", now)
            repo.record_vote(db, battle_id=f"b{i}", winner=winner, session_id=None, now=now)


def test_load_battles_db(db_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    _fill(sessions)
    df = load_battles_db(db_url)
    assert list(df["question_id"]) == [f"b{i}" for i in range(7)]  # time order, anonymous only
    assert list(df["winner"]) == [w for _, _, w, mode in BATTLES if mode == "anony"]
    assert df["tstamp"].is_monotonic_increasing and df["anony"].all()
    assert len(load_battles_db(db_url, anony_only=False)) == len(BATTLES)


def test_ratings_cli_reads_the_database(db_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    _fill(sessions)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis",
            "ratings",
            "--db",
            db_url,
            "--format",
            "json",
            "--bootstrap",
            "20",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    table = {row["model"]: row for row in json.loads(run.stdout)}
    assert set(table) == {"strong", "middle", "weak"}
    assert table["strong"]["rating"] > table["middle"]["rating"] > table["weak"]["rating"]
    assert sum(row["num_battles"] for row in table.values()) == 2 * 7
    assert abs(sum(row["rating"] for row in table.values()) / 3 - 1000) < 1e-6
