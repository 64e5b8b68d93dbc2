"""Forgetting a voter and backing up a live SQLite database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from storage import repo
from storage.db import make_engine
from storage.images import ImageStore
from storage.maintenance import backup_sqlite, forget_session
from storage.schema import Battle, Feedback, Response, Turn, TurnImage, Vote, VoterSession
from storage.schema import Image as ImageRow
from tests.helpers import image_bytes, vote_records

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 5, 1, tzinfo=UTC)


def _seed(sessions, store: ImageStore) -> dict[str, str]:
    """Two voters; s1's first battle has a private image and one it shares with s2."""
    private = store.put(image_bytes(Image.new("RGB", (9, 9), "red")))
    shared = store.put(image_bytes(Image.new("RGB", (9, 9), "blue")))
    with sessions.begin() as db:
        ids = repo.sync_models(db, [repo.ModelSeed(n, n, "", "scripted") for n in ("m1", "m2")], NOW)
        repo.add_images(db, [private, shared], NOW)
        plan = [("s1", "b1", [private, shared]), ("s1", "b2", []), ("s2", "b3", [shared])]
        for sid, bid, images in plan:
            repo.ensure_voter_session(db, sid, "agent", NOW, ip_hash="h" * 64)
            repo.create_battle(
                db, battle_id=bid, model_a_id=ids["m1"], model_b_id=ids["m2"], session_id=sid, now=NOW
            )
            turn = repo.add_turn(
                db, battle_id=bid, index=0, prompt="?", image_hashes=[i.sha256 for i in images], now=NOW
            )
            for side, model in (("a", "m1"), ("b", "m2")):
                repo.save_response(
                    db,
                    turn_id=turn.id,
                    side=side,
                    model_id=ids[model],
                    text="x",
                    started_at=NOW,
                    first_token_at=NOW,
                    finished_at=NOW,
                    output_chunks=1,
                    finish_reason="stop",
                )
            repo.set_battle_state(db, bid, "ready", NOW)
            repo.record_vote(db, battle_id=bid, winner="tie", session_id=sid, now=NOW)
        db.add(Feedback(battle_id="b3", session_id="s1", kind="up", created_at=NOW))
    return {"private": private.sha256, "shared": shared.sha256}


def _count(sessions, table, *where) -> int:
    with sessions() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(table).where(*where))


def test_forget_removes_a_voters_data_and_only_their_images(sessions, tmp_path) -> None:
    store = ImageStore(tmp_path / "images")
    shas = _seed(sessions, store)
    report = forget_session(sessions, "s1", store)
    assert (report.session_found, report.battles, report.votes, report.images, report.image_files) == (
        True,
        2,
        2,
        1,
        1,
    )
    assert _count(sessions, VoterSession, VoterSession.id == "s1") == 0
    assert _count(sessions, Battle) == 1 and _count(sessions, Vote) == 1
    assert (
        _count(sessions, Turn) == 1 and _count(sessions, Response) == 2 and _count(sessions, TurnImage) == 1
    )
    assert _count(sessions, Feedback) == 0
    assert store.find(shas["private"]) is None and store.find(shas["shared"]) is not None
    with sessions() as db:
        assert set(db.scalars(sa.select(ImageRow.sha256))) == {shas["shared"]}
        assert vote_records(db)[0]["question_id"] == "b3"


def test_forget_cli(db_url: str, sessions, tmp_path) -> None:
    store = ImageStore(tmp_path / "images")
    _seed(sessions, store)
    command = [sys.executable, "-m", "storage", "forget", "--db", db_url, "--images", str(store.root)]
    done = subprocess.run([*command, "--session", "s2"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 battles, 1 votes, 0 images" in done.stdout
    missing = subprocess.run(
        [*command, "--session", "nobody"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "no voter session 'nobody'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_online_backup_while_writing(tmp_path) -> None:
    from storage.db import session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'live.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory.begin() as db:
        ids = repo.sync_models(db, [repo.ModelSeed(n, n, "", "scripted") for n in ("m1", "m2")], NOW)
    stop = threading.Event()
    written = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            with factory.begin() as db:
                repo.create_battle(
                    db,
                    battle_id=f"w{i}",
                    model_a_id=ids["m1"],
                    model_b_id=ids["m2"],
                    session_id=None,
                    now=NOW,
                )
            written.append(i)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    while len(written) < 50:
        pass
    pages = backup_sqlite(engine, tmp_path / "copy.db")
    stop.set()
    thread.join()
    assert pages > 0
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        copied = copy.execute("SELECT count(*) FROM battles").fetchone()[0]
        assert copy.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert 50 <= copied <= len(written)
    with pytest.raises(FileExistsError):
        backup_sqlite(engine, tmp_path / "copy.db")
    engine.dispose()


def test_backup_refuses_postgresql() -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with pytest.raises(ValueError, match="pg_dump"):
        backup_sqlite(engine, Path("/tmp/never-written.db"))
    engine.dispose()
