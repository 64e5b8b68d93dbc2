"""``python -m arena admin`` run as a subprocess against SQLite and PostgreSQL, as operators script it."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from arena.cli import build_parser
from storage import repo
from storage.schema import AuditEntry, Battle, ModelRow, VoterSession
from tests.e2e.harness import ROOT

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def arena_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arena", "admin", *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def arena_db(db_url, sessions) -> str:
    """A database with three models and one voted battle between alpha and bravo."""
    seeds = [
        repo.ModelSeed(name=m, display_name=m.title(), organization="", backend="scripted")
        for m in ("alpha", "bravo", "charlie")
    ]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, NOW)
        repo.ensure_voter_session(db, "voter-1", "pytest", NOW)
        repo.create_battle(
            db,
            battle_id="battle-1",
            model_a_id=ids["alpha"],
            model_b_id=ids["bravo"],
            session_id="voter-1",
            now=NOW,
        )
        repo.set_battle_state(db, "battle-1", "ready", NOW)
        repo.record_vote(db, battle_id="battle-1", winner="model_a", session_id="voter-1", now=NOW)
    return db_url


def settings(sessions) -> dict[str, tuple[bool, float, bool]]:
    with sessions() as db:
        rows = db.execute(
            sa.select(ModelRow.name, ModelRow.enabled, ModelRow.sampling_weight, ModelRow.deprecated)
        )
        return {name: (bool(e), float(w), bool(d)) for name, e, w, d in rows}


def audit(sessions) -> list[tuple[str, str, str, dict, dict]]:
    with sessions() as db:
        entries = db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))
        return [(e.actor, e.action, e.target, e.old, e.new) for e in entries]


def test_models_lists_every_model_as_a_table_or_json(arena_db) -> None:
    table = arena_cli("models", "--db", arena_db)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:6] == ["model", "enabled", "weight", "deprecated", "votes", "votes_24h"]
    assert [line.split()[0] for line in lines[2:]] == ["alpha", "bravo", "charlie"]
    assert lines[2].split()[1:5] == ["yes", "1", "no", "1"]

    listed = json.loads(arena_cli("models", "--db", arena_db, "--format", "json").stdout)
    assert [(m["name"], m["votes_total"], m["health"]) for m in listed] == [
        ("alpha", 1, "unknown"),
        ("bravo", 1, "unknown"),
        ("charlie", 0, "unknown"),
    ]
    assert listed[0]["display_name"] == "Alpha" and listed[0]["ttft_median_s"] is None


def test_set_model_changes_the_database_and_audits_who(arena_db, sessions) -> None:
    done = arena_cli("set-model", "bravo", "--enabled", "false", "--weight", "2.5", "--db", arena_db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("model bravo: enabled=false, weight=2.5, deprecated=false (not drawn")
    assert settings(sessions)["bravo"] == (False, 2.5, False)
    again = arena_cli("set-model", "charlie", "--deprecated", "TRUE", "--db", arena_db, "--actor", "ops-bot")
    assert again.returncode == 0, again.stderr
    assert audit(sessions) == [
        (
            f"cli:{getpass.getuser()}",
            "set-model",
            "bravo",
            {"enabled": True, "sampling_weight": 1.0, "deprecated": False},
            {"enabled": False, "sampling_weight": 2.5, "deprecated": False},
        ),
        (
            "ops-bot",
            "set-model",
            "charlie",
            {"enabled": True, "sampling_weight": 1.0, "deprecated": False},
            {"enabled": True, "sampling_weight": 1.0, "deprecated": True},
        ),
    ]
    shown = json.loads(arena_cli("audit", "--db", arena_db, "--format", "json").stdout)
    assert [(e["actor"], e["target"]) for e in shown] == [
        ("ops-bot", "charlie"),
        (f"cli:{getpass.getuser()}", "bravo"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set-model", "delta", "--enabled", "false"], "error: unknown model 'delta'"),
        (["set-model", "alpha", "--weight", "-1"], "error: the sampling weight must be 0 or more, not -1"),
        (["set-model", "alpha", "--weight=-0.5"], "error: the sampling weight must be 0 or more, not -0.5"),
        (["set-model", "alpha", "--weight", "nan"], "error: the sampling weight must be a finite number"),
        (["set-model", "alpha", "--weight", "inf"], "error: the sampling weight must be a finite number"),
        (
            ["set-model", "alpha", "--weight", "lots"],
            "error: the sampling weight must be a number, not 'lots'",
        ),
        (["set-model", "alpha"], "error: no change requested"),
        (["set-model", "alpha", "--enabled", "maybe"], "expected true or false, got 'maybe'"),
        (["exclude-battle", "no-such-battle"], "error: unknown battle 'no-such-battle'"),
        (["ban-voter", "ghost"], "error: unknown voter session 'ghost'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(arena_db, sessions, args, message) -> None:
    before = settings(sessions)
    done = arena_cli(*args, "--db", arena_db)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    if message.startswith("error:"):  # refused by the service (argparse adds its usage line)
        assert done.stderr.strip() == done.stderr.strip().splitlines()[0]
    assert done.stdout == ""
    assert settings(sessions) == before and audit(sessions) == []


def test_battle_exclusion_and_voter_bans(arena_db, sessions) -> None:
    assert (
        arena_cli("exclude-battle", "battle-1", "--db", arena_db).stdout.strip()
        == "battle battle-1: excluded from ratings"
    )
    assert arena_cli("ban-voter", "voter-1", "--db", arena_db, "--actor", "mod").returncode == 0
    with sessions() as db:
        assert db.get(Battle, "battle-1").excluded and db.get(VoterSession, "voter-1").banned
    assert arena_cli("include-battle", "battle-1", "--db", arena_db).returncode == 0
    assert arena_cli("unban-voter", "voter-1", "--db", arena_db).returncode == 0
    with sessions() as db:
        assert not db.get(Battle, "battle-1").excluded and not db.get(VoterSession, "voter-1").banned
    assert [(a, t) for _, a, t, _, _ in audit(sessions)] == [
        ("exclude-battle", "battle-1"),
        ("ban-voter", "voter-1"),
        ("include-battle", "battle-1"),
        ("unban-voter", "voter-1"),
    ]


def test_the_database_can_come_from_arena_db(arena_db) -> None:
    done = arena_cli("models", "--format", "json", env={"ARENA_DB": arena_db})
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3


def test_a_missing_sqlite_file_is_not_created(tmp_path) -> None:
    path = tmp_path / "missing" / "arena.db"
    done = arena_cli("models", "--db", f"sqlite:///{path}")
    assert done.returncode == 1 and f"no database file at {path}" in done.stderr
    assert not path.exists() and not path.parent.exists()


def test_every_option_has_help_text() -> None:
    parser = build_parser()
    pending = [parser]
    seen = 0
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif not isinstance(action, argparse._HelpAction):
                assert action.help, f"{current.prog}: {action.dest} has no help text"
                seen += 1
    assert seen >= 20
    help_text = arena_cli("set-model", "--help").stdout
    assert "--weight W" in help_text and "finite number >= 0" in help_text
