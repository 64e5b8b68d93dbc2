"""``python -m analysis voters`` through the real CLI: on a battle file (voter = ``judge``) and on arena
databases (SQLite and PostgreSQL) with votes written as the arena writes them; ``--apply`` flags."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from analysis.cli import main
from analysis.io import load_pair_counts_db, load_voter_votes_db
from analysis.voters import simulate_arena
from storage import repo
from storage.db import make_engine, session_factory
from storage.schema import AuditEntry, VoterSession

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MODELS = ("alpha", "bravo", "charlie", "delta")
STRENGTH = {"alpha": 200.0, "bravo": 70.0, "charlie": -60.0, "delta": -210.0}


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_battle_file_with_judges(tmp_path: Path) -> None:
    arena = simulate_arena(5, n_honest=120, n_planted=6)
    path = tmp_path / "battles.jsonl"
    arena.votes.rename(columns={"voter": "judge"}).to_json(path, orient="records", lines=True)
    code, out, _ = cli("voters", "--battles", str(path), "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 126
    by_voter = {r["voter"]: r for r in rows}
    planted = [v for v, kind in arena.kinds.items() if kind != "honest"]
    assert sum(by_voter[v]["anomalous"] for v in planted) >= 5
    assert sum(r["anomalous"] for r in rows if r["voter"] not in planted) <= 6
    for r in rows:
        assert {
            "voter",
            "n_votes",
            "p_value",
            "anomalous",
            "median_decision_s",
            "left_share",
            "method",
        } <= set(r)
    lefty = next(v for v in planted if "left" in v)
    assert by_voter[lefty]["left_share"] == 1.0 and by_voter[lefty]["median_decision_s"] < 5
    assert rows[0]["method"] == "fisher-mid+side"

    code, table, _ = cli("voters", "--battles", str(path), "--method", "likelihood", "--min-votes", "50")
    assert code == 0
    assert lefty in table and "ANOMALOUS" in table and "likelihood-pearson3+side" in table
    assert "position bias:" in table and "decisive votes went to the left answer" in table


def test_apply_needs_a_database_and_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"model_a": "x", "model_b": "y", "winner": "model_a", "judge": "u"}) + "\n")
    code, out, err = cli("voters", "--battles", str(path), "--apply")
    assert code == 2 and out == "" and "--apply" in err and "--db" in err
    code, _, err = cli("voters", "--battles", str(path), "--method", "likelihood", "--variant", "mid")
    assert code == 2 and "not a variant of likelihood" in err
    code, _, err = cli("voters", "--battles", str(path), "--alpha", "2")
    assert code == 2 and "--alpha" in err


def _write_votes(url: str) -> dict[str, int]:
    """Ten honest voter sessions (by the strengths above), one that always votes left and one with
    few votes, written through the repository; returns each voter's number of votes."""
    rng = np.random.default_rng(3)
    engine = make_engine(url)
    sessions = session_factory(engine)
    counts: dict[str, int] = {}
    plan = [(f"honest-{i}", 30) for i in range(10)] + [("lefty", 30), ("newcomer", 5)]
    n = 0
    with sessions.begin() as db:
        ids = repo.sync_models(
            db, [repo.ModelSeed(m, m.title(), "org", "scripted") for m in MODELS], T0 - timedelta(days=1)
        )
        for voter, votes in plan:
            repo.ensure_voter_session(db, voter, "pytest", T0)
            counts[voter] = votes
            for _ in range(votes):
                n += 1
                a, b = rng.choice(len(MODELS), size=2, replace=False)
                ma, mb = MODELS[a], MODELS[b]
                if voter == "lefty":
                    winner = "model_a"
                else:
                    p = 1 / (1 + 10 ** ((STRENGTH[mb] - STRENGTH[ma]) / 400))
                    winner = "tie" if rng.random() < 0.15 else ("model_a" if rng.random() < p else "model_b")
                at = T0 + timedelta(minutes=n)
                battle_id = f"b{n}"
                repo.create_battle(
                    db, battle_id=battle_id, model_a_id=ids[ma], model_b_id=ids[mb], session_id=voter, now=at
                )
                repo.add_turn(db, battle_id=battle_id, index=0, prompt="p", image_hashes=[], now=at)
                repo.set_battle_state(db, battle_id, "ready", at)
                repo.record_vote(
                    db,
                    battle_id=battle_id,
                    winner=winner,
                    session_id=voter,
                    now=at,
                    decision_s=2.0 if voter == "lefty" else 10.0 + n % 7,
                )
    engine.dispose()
    return counts


def test_database_voters_and_apply(db_url: str) -> None:
    counts = _write_votes(db_url)
    loaded = load_voter_votes_db(db_url)
    assert len(loaded) == sum(counts.values())
    assert loaded["voter"].value_counts().to_dict() == counts
    assert (loaded["tstamp"].diff().dropna() > 0).all()  # vote order

    code, out, _ = cli("voters", "--db", db_url, "--format", "json")
    assert code == 0
    rows = {r["voter"]: r for r in json.loads(out)}
    assert set(rows) == set(counts)
    assert rows["lefty"]["anomalous"] and rows["lefty"]["left_share"] == 1.0
    assert rows["lefty"]["median_decision_s"] == 2.0 and rows["lefty"]["n_votes"] == 30
    assert rows["newcomer"]["p_value"] is None and not rows["newcomer"]["anomalous"]
    flagged = sorted(v for v, r in rows.items() if r["anomalous"])
    assert "lefty" in flagged and len(flagged) <= 2
    before = load_pair_counts_db(db_url).num_battles().sum()

    code, out, _ = cli("voters", "--db", db_url, "--apply")
    assert code == 0 and f"flagged {len(flagged)} voter session(s) as anomalous" in out
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as db:
            marked = sorted(db.scalars(sa.select(VoterSession.id).where(VoterSession.anomalous)))
            audit = db.execute(sa.select(AuditEntry.actor, AuditEntry.action, AuditEntry.target)).all()
        assert marked == flagged
        assert sorted(audit) == [("analysis voters", "flag-anomalous", v) for v in flagged]
        # the flagged votes leave the ratings' counts
        after = load_pair_counts_db(db_url).num_battles().sum()
        assert before - after == 2 * sum(counts[v] for v in flagged)
        # a second run: flagged voters are no longer counted, nothing changes, no new audit rows
        code, out, _ = cli("voters", "--db", db_url, "--apply", "--include-flagged")
        assert code == 0 and "flagged 0 voter session(s)" in out
        with session_factory(engine)() as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == len(flagged)
    finally:
        engine.dispose()


def test_imported_judges_are_tested_but_never_flagged(db_url: str, tmp_path: Path) -> None:
    from storage.transfer.importer import import_battles

    arena = simulate_arena(9, n_honest=40, n_planted=3, votes_per_voter=40)
    records = arena.votes.rename(columns={"voter": "judge"}).assign(
        question_id=[f"q{i}" for i in range(len(arena.votes))], anony=True, tstamp=1.7e9 + arena.votes.index
    )
    path = tmp_path / "battles.jsonl"
    records.drop(columns=["decision_s"]).to_json(path, orient="records", lines=True)
    engine = make_engine(db_url)
    try:
        import_battles(engine, path, progress=False)
    finally:
        engine.dispose()
    code, out, err = cli("voters", "--db", db_url, "--format", "json", "--apply")
    assert code == 0
    rows = json.loads(out)
    assert {r["voter"] for r in rows} == set(arena.kinds)
    assert all(r["median_decision_s"] is None for r in rows)  # imported votes have no decision time
    flagged = [r for r in rows if r["anomalous"]]
    assert flagged and "flagged 0 voter session(s)" in err  # judge labels are no voter sessions


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_empty_database(db_url: str, fmt: str) -> None:
    code, out, _ = cli("voters", "--db", db_url, "--format", fmt)
    assert code == 0
    assert (json.loads(out) == []) if fmt == "json" else "0 voter(s)" in out


def test_report_shows_position_bias(tmp_path: Path) -> None:
    rows = [{"model_a": "x", "model_b": "y", "winner": "model_a", "judge": "u"}] * 6
    rows += [{"model_a": "y", "model_b": "x", "winner": "model_b", "judge": "u"}] * 4
    rows += [{"model_a": "x", "model_b": "y", "winner": "tie", "judge": "u"}] * 3
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = cli("report", "--battles", str(path), "--out", str(tmp_path / "rep"), "--bootstrap", "5")
    assert code == 0
    page = Path(out.strip()).read_text(encoding="utf-8")
    assert "<h2>Position bias</h2>" in page
    # 6 of 10 decisive votes went left: Wilson 95% interval 31.3% to 83.2%
    assert "60.0% of the 10 decisive votes" in page and "31.3% to 83.2%" in page
