"""Vote writers shared by the concurrency and durability tests (and the storage benchmark).

Importable as ``tests.storage.vote_writers`` (worker threads and spawned worker processes) and
runnable as a script: ``python tests/storage/vote_writers.py URL --first N --count M`` records votes
on the ready battles ``ready-N`` ... ``ready-(N+M-1)`` and prints each battle id, flushed, after its
transaction committed. The durability test kills that process mid-run.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from storage import repo
from storage.db import make_engine, run_in_transaction, session_factory
from storage.schema import WINNERS, Battle, ModelRow

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
MODEL_NAMES = ("model-left", "model-right")


def ready_id(index: int) -> str:
    """The id of the ``index``-th seeded ready battle."""
    return f"ready-{index:06d}"


def seed_battles(engine: Engine, battle_ids: Sequence[str], *, batch: int = 5000) -> None:
    """Create two models and ``battle_ids`` anonymous battles in state 'ready' with bulk Core inserts.

    Safe to call again with new ids (the models are created only once).
    """
    with engine.begin() as conn:
        ids = {name: id_ for name, id_ in conn.execute(select(ModelRow.name, ModelRow.id))}
        missing = [name for name in MODEL_NAMES if name not in ids]
        if missing:
            conn.execute(
                insert(ModelRow.__table__),
                [
                    {
                        "name": n,
                        "display_name": n,
                        "organization": "",
                        "backend": "scripted",
                        "created_at": NOW,
                    }
                    for n in missing
                ],
            )
            ids = {name: id_ for name, id_ in conn.execute(select(ModelRow.name, ModelRow.id))}
        left, right = (ids[n] for n in MODEL_NAMES)
        for start in range(0, len(battle_ids), batch):
            conn.execute(
                insert(Battle.__table__),
                [
                    {
                        "id": battle_id,
                        "mode": "anony",
                        "model_a_id": left,
                        "model_b_id": right,
                        "state": "ready",
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for battle_id in battle_ids[start : start + batch]
                ],
            )


@dataclass(frozen=True)
class Ballot:
    """One vote a worker is asked to send."""

    battle_id: str
    winner: str
    client_token: str


@dataclass(frozen=True)
class Outcome:
    """What a worker was told about one ballot: acknowledged (with the stored vote) or rejected."""

    ballot: Ballot
    acked: bool
    vote_id: int | None = None
    vote_winner: str | None = None
    vote_token: str | None = None
    detail: str = ""


@dataclass
class Round:
    """A worker's share of one round: the shared battle it races on (at the barrier), then its own."""

    shared: Ballot | None
    own: list[Ballot] = field(default_factory=list)


@dataclass
class WorkerReport:
    """Every outcome of one worker and how many transient errors it retried."""

    name: str
    outcomes: list[Outcome]
    retries: int


def send_ballot(factory: sessionmaker[Session], ballot: Ballot, retries: list[int]) -> Outcome:
    """Record one ballot through ``repo.record_vote`` (retrying transient errors) and say what came back."""

    def vote(session: Session) -> tuple[int, str, str | None]:
        stored = repo.record_vote(
            session,
            battle_id=ballot.battle_id,
            winner=ballot.winner,
            session_id=None,
            now=NOW,
            client_token=ballot.client_token,
        )
        return stored.id, stored.winner, stored.client_token

    def count(_exc: BaseException, _attempt: int) -> None:
        retries[0] += 1

    try:
        # The way the arena records a vote: its own transaction on vote_target (autocommit on PostgreSQL).
        target = repo.vote_target(factory.kw["bind"])
        vote_id, winner, token = run_in_transaction(target, vote, retries=30, on_retry=count)
    except repo.VoteRejected as exc:
        return Outcome(ballot, acked=False, detail=str(exc))
    return Outcome(ballot, acked=True, vote_id=vote_id, vote_winner=winner, vote_token=token)


def run_worker(
    name: str, factory: sessionmaker[Session], rounds: Sequence[Round], barrier: Any
) -> WorkerReport:
    """Play ``rounds``: wait at ``barrier`` so every worker sends its shared ballot at once, then vote
    on the worker's own battles. A failing worker breaks the barrier so the others do not hang."""
    retries = [0]
    outcomes: list[Outcome] = []
    try:
        for round_ in rounds:
            if round_.shared is not None:
                barrier.wait()
                outcomes.append(send_ballot(factory, round_.shared, retries))
            outcomes.extend(send_ballot(factory, ballot, retries) for ballot in round_.own)
    except BaseException:
        barrier.abort()
        raise
    return WorkerReport(name, outcomes, retries[0])


def process_worker(name: str, url: str, rounds: Sequence[Round], barrier: Any, results: Any) -> None:
    """Entry point of a spawned worker process: its own engine, then ``run_worker``; the report (or
    the traceback) goes to the ``results`` queue."""
    engine = make_engine(url)
    try:
        results.put(run_worker(name, session_factory(engine), rounds, barrier))
    except BaseException:
        results.put(f"{name} failed:\n{traceback.format_exc()}")
    finally:
        engine.dispose()


def crash_writer(url: str, first: int, count: int) -> None:
    """Vote on ready battles ``first`` .. ``first + count - 1`` in order, printing each battle id once
    its transaction committed. The token is the battle id, so a rerun over a battle whose commit
    landed without being printed is acknowledged with the stored vote instead of being refused."""
    engine = make_engine(url)
    factory = session_factory(engine)
    retries = [0]
    for index in range(first, first + count):
        battle_id = ready_id(index)
        outcome = send_ballot(factory, Ballot(battle_id, WINNERS[index % 4], battle_id), retries)
        if not outcome.acked:
            raise SystemExit(f"{battle_id}: {outcome.detail}")
        print(battle_id, flush=True)
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Command line of the crash writer (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    crash_writer(args.url, args.first, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
