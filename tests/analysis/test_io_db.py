"""Ratings straight from the arena database (SQLite and PostgreSQL), through analysis.io and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from analysis.io import load_battles_db
from analysis.ratings import ratings_table
from storage import repo
from storage.schema import Battle, BattleTag, Vote, VoterSession
from tests.helpers import vote_records

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


def _fill(sessions) -> None:
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


def test_load_battles_db(db_url: str, sessions) -> None:
    _fill(sessions)
    df = load_battles_db(db_url)
    assert list(df["question_id"]) == [f"b{i}" for i in range(7)]  # time order, anonymous only
    assert list(df["winner"]) == [w for _, _, w, mode in BATTLES if mode == "anony"]
    assert df["tstamp"].is_monotonic_increasing and df["anony"].all()
    assert len(load_battles_db(db_url, anony_only=False)) == len(BATTLES)


def test_ratings_cli_reads_the_database(db_url: str, sessions) -> None:
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


# --------------------------------------------------------------------------------------------------
# Leaderboard filters: time window, category, flagged voters; leaks and invalid battles never count
# --------------------------------------------------------------------------------------------------


def _fill_for_filters(sessions) -> None:
    """b0..b7 of BATTLES (one a minute from T0) with voters, tags, a leak and an invalidated battle."""
    _fill(sessions)
    with sessions.begin() as db:
        repo.ensure_voter_session(db, "good", "browser", T0)
        repo.ensure_voter_session(db, "bot", "script", T0)
        db.execute(sa.update(VoterSession).where(VoterSession.id == "bot").values(banned=True))
        db.execute(sa.update(Vote).where(Vote.battle_id.in_(["b1", "b2"])).values(session_id="bot"))
        db.execute(sa.update(Vote).where(Vote.battle_id == "b3").values(session_id="good"))
        db.execute(sa.update(Battle).where(Battle.id == "b4").values(identity_leak=True))
        db.execute(
            sa.update(Battle).where(Battle.id == "b5").values(state="invalid", invalid_reason="moderated")
        )
        db.add_all(BattleTag(battle_id=bid, tag="ocr") for bid in ("b0", "b1", "b3", "b4", "b6"))
        db.add(BattleTag(battle_id="b0", tag="chart"))


def _ids(df) -> list[str]:
    return list(df["question_id"])


def test_db_filters(db_url: str, sessions) -> None:
    _fill_for_filters(sessions)
    # b1, b2: banned voter; b4: identity leak; b5: invalidated after the vote; b7: named
    assert _ids(load_battles_db(db_url)) == ["b0", "b3", "b6"]
    assert _ids(load_battles_db(db_url, include_flagged=True)) == ["b0", "b1", "b2", "b3", "b6"]
    assert _ids(load_battles_db(db_url, anony_only=False)) == ["b0", "b3", "b6", "b7"]
    # time window on the vote time: since inclusive, until exclusive; naive = UTC; ISO strings work
    assert _ids(load_battles_db(db_url, since=T0 + timedelta(minutes=3))) == ["b3", "b6"]
    assert _ids(load_battles_db(db_url, until=T0 + timedelta(minutes=3))) == ["b0"]
    window = {"since": "2026-03-01T00:03:00", "until": "2026-03-01T02:06:00+02:00"}  # 00:03 to 00:06 UTC
    assert _ids(load_battles_db(db_url, include_flagged=True, **window)) == ["b3"]
    naive = {"since": datetime(2026, 3, 1, 0, 1), "until": datetime(2026, 3, 1, 0, 3)}
    assert _ids(load_battles_db(db_url, include_flagged=True, **naive)) == ["b1", "b2"]
    # category tags (the leaked b4 stays out even when tagged)
    assert _ids(load_battles_db(db_url, category="ocr")) == ["b0", "b3", "b6"]
    assert _ids(load_battles_db(db_url, category="ocr", include_flagged=True)) == ["b0", "b1", "b3", "b6"]
    assert _ids(load_battles_db(db_url, category="chart")) == ["b0"]
    assert load_battles_db(db_url, category="nope").empty
    combined = load_battles_db(
        db_url, category="ocr", since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=7)
    )
    assert _ids(combined) == ["b3", "b6"]
    with pytest.raises(ValueError, match="since .* is after until"):
        load_battles_db(db_url, since=T0 + timedelta(hours=1), until=T0)
    with pytest.raises(ValueError, match="bad since time"):
        load_battles_db(db_url, since="yesterday")


def test_vote_records_defaults_and_audit_view(db_url: str, sessions) -> None:
    _fill_for_filters(sessions)
    with sessions() as db:
        assert [r["question_id"] for r in vote_records(db)] == ["b0", "b3", "b6", "b7"]
        # include_flagged alone still keeps everything (audits, exports), as before
        everything = [r["question_id"] for r in vote_records(db, include_flagged=True)]
        assert everything == [f"b{i}" for i in range(8)]
        flagged_only = vote_records(db, include_flagged=True, include_invalid=False)
        assert [r["question_id"] for r in flagged_only] == ["b0", "b1", "b2", "b3", "b6", "b7"]
        with_leaks = vote_records(db, include_invalid=True)
        assert [r["question_id"] for r in with_leaks] == ["b0", "b3", "b4", "b5", "b6", "b7"]


def test_filtered_frame_feeds_the_ratings(db_url: str, sessions) -> None:
    _fill_for_filters(sessions)
    df = load_battles_db(db_url, include_flagged=True)
    assert isinstance(df["model_a"].dtype, pd.CategoricalDtype)
    table = ratings_table(df, bootstrap=10, rng=np.random.default_rng(0))
    assert set(table["model"]) == {"strong", "middle", "weak"}
    assert table["num_battles"].sum() == 2 * len(df)
