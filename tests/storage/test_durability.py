"""Acknowledged votes survive a killed writer process and, on PostgreSQL, lost connections.

A vote is acknowledged once ``factory.begin()`` returned: the writer prints the battle id only then.
SQLite runs with WAL + synchronous=NORMAL, which is durable against a killed process (not against
power loss); this is what the crash test checks there.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from storage import repo
from storage.db import make_engine, session_factory
from storage.schema import WINNERS, Battle, Vote
from tests.storage.vote_writers import NOW, Ballot, ready_id, seed_battles, send_ballot

WRITER = Path(__file__).with_name("vote_writers.py")
KILL_ROUNDS = 3
ACKS_BEFORE_KILL = 200
BATTLES = 2000
TIMEOUT_S = 60


def _acks_until_killed(db_url: str, first: int) -> list[str]:
    """Start a writer at ready battle ``first``, SIGKILL it after ACKS_BEFORE_KILL acks; every ack."""
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), db_url, "--first", str(first), "--count", str(BATTLES - first)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: communicate() below reads the pipe's fd, so nothing may sit in a buffer
    )
    watchdog = threading.Timer(TIMEOUT_S, writer.kill)
    watchdog.start()
    acks: list[str] = []
    try:
        assert writer.stdout is not None
        for line in iter(writer.stdout.readline, b""):
            acks.append(line.decode().strip())
            if len(acks) >= ACKS_BEFORE_KILL:
                writer.send_signal(signal.SIGKILL)  # mid-run: the next transaction is under way
                break
        rest, errors = writer.communicate()
    finally:
        watchdog.cancel()
        writer.kill()
    acks.extend(rest.decode().split())  # acknowledged before the kill, still in the pipe
    assert writer.returncode == -signal.SIGKILL, errors.decode()
    return acks


def test_acknowledged_votes_survive_a_killed_writer(db_url: str) -> None:
    engine = make_engine(db_url)
    seed_battles(engine, [ready_id(i) for i in range(BATTLES)])
    engine.dispose()

    acked: list[str] = []
    for _ in range(KILL_ROUNDS):
        # The next writer starts right after the last ack: the battle whose commit may have landed
        # unacknowledged is voted again with the same token, so it is acknowledged, not refused.
        acks = _acks_until_killed(db_url, first=len(acked))
        assert len(acks) >= ACKS_BEFORE_KILL
        acked.extend(acks)
    assert acked == [ready_id(i) for i in range(len(acked))]

    engine = make_engine(db_url)  # a new process's view; on SQLite this replays the WAL
    with session_factory(engine)() as db:
        stored = dict(db.execute(sa.select(Vote.battle_id, Vote.winner)).all())
        voted = set(db.scalars(sa.select(Battle.id).where(Battle.state == "voted")))
        if engine.dialect.name == "sqlite":
            assert db.execute(sa.text("PRAGMA integrity_check")).scalar() == "ok"
    engine.dispose()
    assert {b: stored.get(b) for b in acked} == {ready_id(i): WINNERS[i % 4] for i in range(len(acked))}
    # At most the one transaction in flight at the last kill committed without an acknowledgement,
    # and a vote never lands without its battle being marked voted (one transaction).
    assert len(stored) - len(acked) in (0, 1)
    assert voted == set(stored)


def test_a_vote_is_undone_with_its_transaction(db_url: str) -> None:
    """record_vote's savepoint stays inside the caller's transaction (on SQLite too): a transaction
    that fails after the vote leaves neither the vote nor a 'voted' battle behind."""
    engine = make_engine(db_url)
    seed_battles(engine, ["b1"])
    factory = session_factory(engine)
    with pytest.raises(RuntimeError, match="after the vote"), factory.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="tie", session_id=None, now=NOW, client_token="t1")
        with engine.connect() as other:  # another connection sees nothing before the commit
            assert other.scalar(sa.select(sa.func.count()).select_from(Vote)) == 0
        raise RuntimeError("something failed after the vote")
    with factory() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Vote)) == 0
        assert db.get(Battle, "b1").state == "ready"
    engine.dispose()


@pytest.mark.parametrize("empty_db_url", ["postgresql"], indirect=True)  # pg_terminate_backend
def test_writes_resume_after_postgresql_connections_are_terminated(db_url: str) -> None:
    terminations = 5
    between = 40  # acknowledged votes required between terminations (writes resumed)
    engine = make_engine(db_url)  # pool_pre_ping is on
    seed_battles(engine, [ready_id(i) for i in range(BATTLES)])
    connects = [0]
    event.listen(engine, "connect", lambda *_: connects.__setitem__(0, connects[0] + 1))
    factory = session_factory(engine)

    acked: list[tuple[str, int]] = []
    retries = [0]
    stop = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(BATTLES):
                if stop.is_set():
                    return
                # The same token on every retry: a commit whose acknowledgement was lost is
                # acknowledged on the retry with the stored vote, not counted twice.
                ballot = Ballot(ready_id(i), WINNERS[i % 4], f"token-{i}")
                outcome = send_ballot(factory, ballot, retries)
                assert outcome.acked and outcome.vote_id is not None, outcome
                acked.append((ballot.battle_id, outcome.vote_id))
        except BaseException as exc:
            failure.append(exc)

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while len(acked) < count:
            assert not failure, failure
            assert time.monotonic() < deadline, f"writes did not resume: {len(acked)} acks, wanted {count}"
            time.sleep(0.005)

    admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    killed: list[int] = []
    try:
        with admin.connect() as conn:
            for _ in range(terminations):
                wait_for(len(acked) + between)
                killed.append(
                    len(
                        conn.execute(
                            sa.text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            )
                        ).all()
                    )
                )
            wait_for(len(acked) + between)  # and after the last one
    finally:
        stop.set()
        thread.join(TIMEOUT_S)
        admin.dispose()
    assert not failure, failure
    assert not thread.is_alive()

    with factory() as db:
        stored = dict(db.execute(sa.select(Vote.battle_id, Vote.id)).all())
        tokens = dict(db.execute(sa.select(Vote.battle_id, Vote.client_token)).all())
        voted = set(db.scalars(sa.select(Battle.id).where(Battle.state == "voted")))
    engine.dispose()

    assert all(n >= 1 for n in killed), killed  # each termination hit the writer's connection
    assert connects[0] >= terminations  # and the engine opened a new connection after each
    assert dict(acked) == stored  # every ack stored, with the id acknowledged; nothing else stored
    assert len(acked) == len(stored) == len(voted)
    assert all(tokens[b] == f"token-{int(b.split('-')[1])}" for b in stored)
    print(f"\npostgresql: {len(acked)} votes, {terminations} terminations, {retries[0]} retried transactions")
