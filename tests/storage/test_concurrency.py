"""Votes recorded at once by 8 threads and 4 processes: each acknowledged vote is stored exactly once.

Every worker votes on its own share of 2,000 ready battles, and at a barrier all workers race on the
same "shared" battles: some resend another worker's ballot with the same client token (an idempotent
retry), some send a different winner under that token, some are other voters. Afterwards the
database must agree with what each worker was told.
"""

from __future__ import annotations

import multiprocessing
import queue
import sqlite3
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage import repo
from storage.db import make_engine, run_in_transaction, session_factory, upgrade
from storage.schema import WINNERS, Battle, Vote
from tests.storage.vote_writers import (
    Ballot,
    Outcome,
    Round,
    WorkerReport,
    process_worker,
    run_worker,
    seed_battles,
)

THREADS = 8
PROCESSES = 4
WORKERS = THREADS + PROCESSES
DISTINCT = 2000
SHARED = 50
#: What a worker sends on a shared battle, by (worker + round): token label and winner.
SHARED_CHOICES = (
    ("A", "model_a"),
    ("A", "model_a"),  # the same ballot again: an idempotent retry racing the original
    ("A", "tie"),  # the same token with another winner: refused unless it came first
    ("B", "model_b"),  # another voter
    ("C", "model_a"),  # another voter with the same winner: still refused unless first
)
TIMEOUT_S = 120


def _plan() -> list[list[Round]]:
    """Each worker's rounds: one shared ballot at the barrier, then a slice of its own battles."""
    distinct = [f"own-{i:05d}" for i in range(DISTINCT)]
    plans: list[list[Round]] = []
    for worker in range(WORKERS):
        mine = distinct[worker::WORKERS]
        per_round = -(-len(mine) // SHARED)
        rounds = []
        for r in range(SHARED):
            label, winner = SHARED_CHOICES[(worker + r) % len(SHARED_CHOICES)]
            battle_id = f"shared-{r:03d}"
            own = [
                Ballot(b, WINNERS[int(b[-5:]) % len(WINNERS)], f"{b}:x")
                for b in mine[r * per_round : (r + 1) * per_round]
            ]
            rounds.append(Round(Ballot(battle_id, winner, f"{battle_id}:{label}"), own))
        plans.append(rounds)
    return plans


def _run_workers(db_url: str, plans: list[list[Round]]) -> list[WorkerReport]:
    """Start the processes (spawn, each with its own engine) and the threads (one shared engine)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS, timeout=TIMEOUT_S)
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=process_worker, args=(f"process-{i}", db_url, plans[THREADS + i], barrier, results)
        )
        for i in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    engine = make_engine(db_url, pool_size=THREADS)
    factory = session_factory(engine)
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [
                pool.submit(run_worker, f"thread-{i}", factory, plans[i], barrier) for i in range(THREADS)
            ]
            reports = [f.result(timeout=TIMEOUT_S) for f in futures]
        for _ in processes:
            try:
                report = results.get(timeout=TIMEOUT_S)
            except queue.Empty as exc:
                raise AssertionError("a worker process gave no report") from exc
            assert isinstance(report, WorkerReport), report
            reports.append(report)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        engine.dispose()
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    return reports


def test_concurrent_votes_are_each_stored_exactly_once(db_url: str) -> None:
    started = time.monotonic()
    plans = _plan()
    engine = make_engine(db_url)
    seed_battles(
        engine, [f"own-{i:05d}" for i in range(DISTINCT)] + [f"shared-{r:03d}" for r in range(SHARED)]
    )
    seeded = time.monotonic()

    reports = _run_workers(db_url, plans)
    voted = time.monotonic()

    outcomes: list[Outcome] = [o for report in reports for o in report.outcomes]
    assert len(outcomes) == DISTINCT + SHARED * WORKERS
    with session_factory(engine)() as db:
        rows = db.scalars(sa.select(Vote)).all()
        stored = {v.battle_id: v for v in rows}
        voted_battles = db.scalar(sa.select(sa.func.count()).where(Battle.state == "voted"))
    engine.dispose()

    own = [o for o in outcomes if o.ballot.battle_id.startswith("own-")]
    assert sorted(o.ballot.battle_id for o in own) == sorted(f"own-{i:05d}" for i in range(DISTINCT))
    for o in own:  # nobody else votes on these: every ballot is acknowledged and stored as sent
        assert o.acked, o
        vote = stored[o.ballot.battle_id]
        assert (vote.id, vote.winner, vote.client_token) == (
            o.vote_id,
            o.ballot.winner,
            o.ballot.client_token,
        )

    by_shared: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.ballot.battle_id.startswith("shared-"):
            by_shared[o.ballot.battle_id].append(o)
    assert len(by_shared) == SHARED
    for battle_id, racing in by_shared.items():
        vote = stored[battle_id]  # exactly one: votes are keyed by battle here and unique in the table
        winning = (vote.client_token, vote.winner)
        for o in racing:
            if (o.ballot.client_token, o.ballot.winner) == winning:
                # the first writer, or a retry of its ballot: acknowledged with the one stored vote
                assert o.acked and (o.vote_id, o.vote_winner, o.vote_token) == (
                    vote.id,
                    vote.winner,
                    vote.client_token,
                ), o
            else:
                assert not o.acked, (o, winning)
                assert "already" in o.detail, o

    acked_tokens = {(o.ballot.battle_id, o.ballot.client_token) for o in outcomes if o.acked}
    assert {(v.battle_id, v.client_token) for v in stored.values()} <= acked_tokens  # no unacknowledged vote
    assert len(rows) == len(stored) == voted_battles == DISTINCT + SHARED  # one vote per voted battle

    retries = sum(r.retries for r in reports)
    print(
        f"\n{db_url.split(':')[0]}: seeded in {seeded - started:.1f}s, "
        f"{len(outcomes)} ballots in {voted - seeded:.1f}s by {WORKERS} workers, {retries} transient retries"
    )


def _locked() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("UPDATE ...", {}, sqlite3.OperationalError("database is locked"))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_locked(), True),
        (sa.exc.OperationalError("SELECT ...", {}, psycopg.errors.SerializationFailure()), True),
        (sa.exc.OperationalError("SELECT ...", {}, psycopg.errors.DeadlockDetected()), True),
        (sa.exc.OperationalError("SELECT ...", {}, psycopg.errors.AdminShutdown()), True),
        (sa.exc.IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation()), False),
        (sa.exc.IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), False),
        (repo.VoteRejected("this battle has already been voted on"), False),
    ],
)
def test_run_in_transaction_reruns_only_transient_errors(error: Exception, transient: bool) -> None:
    engine = make_engine("sqlite://")
    attempts: list[int] = []

    def flaky(session: Session) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise error
        return "done"

    try:
        if transient:
            assert run_in_transaction(session_factory(engine), flaky, backoff_s=0.001) == "done"
            assert len(attempts) == 3
            with pytest.raises(type(error)):
                attempts.clear()
                run_in_transaction(session_factory(engine), flaky, retries=1, backoff_s=0.001)
            assert len(attempts) == 2
        else:
            with pytest.raises(type(error)):
                run_in_transaction(session_factory(engine), flaky)
            assert len(attempts) == 1
    finally:
        engine.dispose()


def test_sqlite_locking_read_takes_the_write_lock(tmp_path) -> None:
    """On SQLite, ``SELECT ... FOR UPDATE`` (a locking read, as on PostgreSQL) opens the transaction with
    the write lock, so no other writer can slip in between its check and its write."""
    url = f"sqlite:///{tmp_path / 'arena.db'}"
    upgrade(url)
    engine = make_engine(url)
    seed_battles(engine, ["b1", "b2"])
    other = sqlite3.connect(tmp_path / "arena.db", timeout=0.05)
    try:
        with session_factory(engine).begin() as db:
            db.scalars(sa.select(Battle).where(Battle.id == "b1").with_for_update()).one()
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("UPDATE battles SET state = 'invalid' WHERE id = 'b2'")
        other.execute("UPDATE battles SET state = 'invalid' WHERE id = 'b2'")  # free once committed
        other.commit()
        with session_factory(engine)() as db:  # a plain read takes no lock
            db.scalars(sa.select(Battle)).all()
            other.execute("UPDATE battles SET state = 'ready' WHERE id = 'b2'")
            other.commit()
    finally:
        other.close()
        engine.dispose()
