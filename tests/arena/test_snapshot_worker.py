"""The leaderboard worker process: it computes and stores the snapshots, the web process only reads.

Real child processes (``spawn``) on SQLite and PostgreSQL: the worker computes at start, a recompute
request wakes it, a killed worker is started again and takes its lease back at once, and stopping it
gives the lease up.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from arena.snapshot_worker import SnapshotWorker, WorkerConfig, worker_holder
from arena.snapshots import LEASE_NAME, SnapshotService
from storage import repo
from storage.schema import Lease
from storage.snapshots import lease_holder

MODELS = ("alpha", "bravo", "charlie")


def _votes(sessions) -> None:
    """A small league: alpha beats bravo beats charlie, mostly (every model wins and loses)."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with sessions.begin() as db:
        ids = repo.sync_models(
            db,
            [
                repo.ModelSeed(name=m, display_name=m.title(), organization="", backend="scripted")
                for m in MODELS
            ],
            now,
        )
    n = 0
    for i, a in enumerate(MODELS):
        for b in MODELS[i + 1 :]:
            for winner in ["model_a"] * 8 + ["model_b"] * 3 + ["tie"] * 2:
                n += 1
                with sessions.begin() as db:
                    repo.create_battle(
                        db, battle_id=f"b{n}", model_a_id=ids[a], model_b_id=ids[b], session_id=None, now=now
                    )
                    repo.set_battle_state(db, f"b{n}", "ready", now, None)
                    repo.record_vote(db, battle_id=f"b{n}", winner=winner, session_id=None, now=now)


def _until(condition: Callable[[], object], limit_s: float = 90.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_worker_computes_reader_reads_and_a_killed_worker_comes_back(db_url, sessions) -> None:
    _votes(sessions)
    holder = worker_holder("test-host:1")
    worker = SnapshotWorker(WorkerConfig(db=db_url, refresh_s=3600, min_votes=5, holder=holder))
    reader = SnapshotService(sessions, refresh_s=3600, min_votes=5, compute=False, worker=worker)
    worker.start()
    try:
        _until(lambda: reader.refresh_once() is False and reader.current("bt") is not None)
        first = reader.current("bt")
        assert first is not None and first.computed_by == holder
        assert [row["model"] for row in first.payload["rows"]] == list(MODELS)
        assert reader.computations == {}, "the reading service never computes"
        with sessions() as db:
            assert lease_holder(db, LEASE_NAME, datetime.now(UTC)) == holder

        # the admin's Recompute: stored, and the sleeping worker (refresh_s = 1 h) is woken for it
        reader.request_recompute()
        _until(lambda: (reader.refresh_once(), reader.current("bt").computed_at > first.computed_at)[1])

        # a killed worker is started again under the same lease name
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def restarted() -> bool:
            worker.ensure_alive()  # what the reading service's thread does every few seconds
            return worker.pid not in (None, pid)

        _until(restarted)
        assert worker.starts == 2
        # nothing changed, so it has nothing to compute; asked to, it can at once: the lease is its own
        second = reader.current("bt")
        reader.request_recompute()
        _until(lambda: (reader.refresh_once(), reader.current("bt").computed_at > second.computed_at)[1])
    finally:
        reader.stop()  # stops the worker, which gives the lease up
    with sessions() as db:
        lease = db.scalar(select(Lease).where(Lease.name == LEASE_NAME))
        assert lease is not None and lease.expires_at.replace(tzinfo=UTC) < datetime.now(UTC)
