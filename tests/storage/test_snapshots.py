"""Shared leaderboard snapshots, the data version that says when they are out of date, and leases."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from storage import repo
from storage.counts import VoteFilter
from storage.db import make_engine, run_in_transaction, session_factory
from storage.schema import WINNERS, AuditEntry, Battle, BattleTag, VoterSession
from storage.snapshots import (
    battle_arrays,
    category_vote_counts,
    data_version,
    delete_snapshots,
    lease_holder,
    load_snapshots,
    mark_snapshot_failed,
    release_lease,
    save_snapshot,
    snapshot_stamps,
    try_acquire_lease,
)

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def _voted_battle(sessions, battle_id: str, winner: str = "model_a") -> None:
    seeds = [repo.ModelSeed(n, n.upper(), "org", "scripted") for n in ("m1", "m2")]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, NOW)
        repo.ensure_voter_session(db, "s1", "pytest", NOW)
        repo.create_battle(
            db, battle_id=battle_id, model_a_id=ids["m1"], model_b_id=ids["m2"], session_id="s1", now=NOW
        )
        repo.set_battle_state(db, battle_id, "ready", NOW)
        repo.record_vote(db, battle_id=battle_id, winner=winner, session_id="s1", now=NOW)


def _version(sessions) -> str:
    with sessions() as db:
        return data_version(db)


def test_data_version_changes_with_everything_that_changes_a_leaderboard(sessions) -> None:
    seen = [_version(sessions)]
    assert _version(sessions) == seen[0], "reading changes nothing"

    _voted_battle(sessions, "b1")
    seen.append(_version(sessions))
    _voted_battle(sessions, "b2")
    seen.append(_version(sessions))
    with sessions.begin() as db:
        db.add(AuditEntry(actor="op", action="exclude-battle", target="b1", old={}, new={}, created_at=NOW))
    seen.append(_version(sessions))
    with sessions.begin() as db:
        db.get(VoterSession, "s1").banned = True
    seen.append(_version(sessions))
    with sessions.begin() as db:
        db.add(BattleTag(battle_id="b2", tag="ocr"))
    seen.append(_version(sessions))
    assert len(set(seen)) == len(seen), seen
    assert all(len(v) <= 64 for v in seen)  # fits the column


def test_snapshot_upsert_load_failure_and_signatures(sessions) -> None:
    with sessions() as db:
        assert load_snapshots(db) == [] and snapshot_stamps(db) == {}
    with sessions.begin() as db:
        save_snapshot(
            db,
            view="bt",
            data_version="v1",
            payload={"rows": [1]},
            computed_at=NOW,
            duration_s=0.5,
            computed_by="h:1",
        )
        save_snapshot(
            db,
            view="elo",
            data_version="v1",
            payload={"rows": []},
            computed_at=NOW,
            duration_s=0.1,
            computed_by="h:1",
        )
    with sessions() as db:
        first = {v: s.signature for v, s in snapshot_stamps(db).items()}
    later = NOW + timedelta(minutes=1)
    with sessions.begin() as db:  # a second save of one view replaces it
        save_snapshot(
            db,
            view="bt",
            data_version="v2",
            payload={"rows": [1, 2]},
            computed_at=later,
            duration_s=0.7,
            computed_by="h:2",
        )
    with sessions() as db:
        bt, elo = load_snapshots(db)
        second = {v: s.signature for v, s in snapshot_stamps(db).items()}
    assert (bt.view, bt.data_version, bt.payload, bt.computed_at, bt.computed_by) == (
        "bt",
        "v2",
        {"rows": [1, 2]},
        later,
        "h:2",
    )
    assert bt.failure is None and elo.payload == {"rows": []}
    assert second["bt"] != first["bt"] and second["elo"] == first["elo"]

    with sessions.begin() as db:
        assert mark_snapshot_failed(db, "bt", error="ValueError: boom", failed_at=later)
        assert not mark_snapshot_failed(db, "never-stored", error="x", failed_at=later)
    with sessions() as db:
        [bt] = load_snapshots(db, ["bt"])
        third = {v: s.signature for v, s in snapshot_stamps(db).items()}
    assert bt.payload == {"rows": [1, 2]}, "the last good payload is kept"
    assert bt.failure == {"error": "ValueError: boom", "failed_at": later.isoformat()}
    assert bt.data_version == "v2" and third["bt"] != second["bt"]

    with sessions.begin() as db:  # a good save clears the failure
        save_snapshot(
            db,
            view="bt",
            data_version="v3",
            payload={"rows": []},
            computed_at=later,
            duration_s=0.1,
            computed_by="h:2",
        )
        assert delete_snapshots(db, ["elo"]) == 1
    with sessions() as db:
        [bt] = load_snapshots(db)
    assert bt.failure is None and bt.data_version == "v3"


def test_lease_is_held_renewed_and_taken_over_only_when_expired(sessions) -> None:
    def acquire(holder: str, at: datetime, ttl: float = 30.0) -> bool:
        return run_in_transaction(sessions, lambda db: try_acquire_lease(db, "leaderboard", holder, ttl, at))

    assert acquire("p1", NOW)
    assert not acquire("p2", NOW + timedelta(seconds=10)), "held by p1"
    assert acquire("p1", NOW + timedelta(seconds=20)), "the holder renews"
    assert not acquire("p2", NOW + timedelta(seconds=45)), "renewed until 50 s"
    with sessions() as db:
        assert lease_holder(db, "leaderboard", NOW + timedelta(seconds=45)) == "p1"
        assert lease_holder(db, "leaderboard", NOW + timedelta(seconds=51)) is None
    assert acquire("p2", NOW + timedelta(seconds=51)), "expired: another process takes over"
    assert not acquire("p1", NOW + timedelta(seconds=52))
    with sessions.begin() as db:
        assert not release_lease(db, "leaderboard", "p1"), "only the holder can release"
        assert release_lease(db, "leaderboard", "p2")
    assert acquire("p1", NOW + timedelta(seconds=53)), "released: free at once"


def _race(factories, at: datetime, label: str) -> list[str]:
    """Every factory (one engine each, like separate processes) asks for the lease at once; who got it."""
    barrier = threading.Barrier(len(factories))
    won: list[str] = []
    errors: list[BaseException] = []

    def race(i: int) -> None:
        holder = f"{label}-p{i}"
        try:
            barrier.wait()
            if run_in_transaction(
                factories[i], lambda db: try_acquire_lease(db, "leaderboard", holder, 30.0, at)
            ):
                won.append(holder)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(factories))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return won


def test_racing_holders_never_both_get_the_lease(db_url) -> None:
    """Four engines race for a free lease, then twice for an expired one: exactly one wins each time."""
    engines = [make_engine(db_url) for _ in range(4)]
    factories = [session_factory(e) for e in engines]
    try:
        for round_, at in enumerate([NOW, NOW + timedelta(seconds=31), NOW + timedelta(seconds=62)]):
            won = _race(factories, at, f"r{round_}")
            assert len(won) == 1, (round_, won)
            with factories[0]() as db:
                assert lease_holder(db, "leaderboard", at) == won[0]
    finally:
        for engine in engines:
            engine.dispose()


def _battle_with_answers(
    sessions, battle_id: str, winner: str, answers: list[tuple[str, str]], at: datetime, tags=()
) -> None:
    seeds = [repo.ModelSeed(n, n.upper(), "org", "scripted") for n in ("m1", "m2", "m3")]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, NOW)
        repo.create_battle(
            db, battle_id=battle_id, model_a_id=ids["m1"], model_b_id=ids["m3"], session_id=None, now=at
        )
        for index, (a, b) in enumerate(answers):
            turn = repo.add_turn(db, battle_id=battle_id, index=index, prompt="p", image_hashes=[], now=at)
            for side, text, model in (("a", a, "m1"), ("b", b, "m3")):
                repo.save_response(
                    db,
                    turn_id=turn.id,
                    side=side,
                    model_id=ids[model],
                    text=text,
                    started_at=at,
                    first_token_at=at,
                    finished_at=at,
                    output_chunks=1,
                    finish_reason="stop",
                )
        repo.set_battle_state(db, battle_id, "ready", at)
        repo.record_vote(db, battle_id=battle_id, winner=winner, session_id=None, now=at)
        db.add_all(BattleTag(battle_id=battle_id, tag=t) for t in tags)


def test_battle_arrays_reads_counted_votes_in_order_with_answer_lengths(sessions) -> None:
    _battle_with_answers(sessions, "late", "tie", [("abc", "de")], NOW + timedelta(hours=2), tags=["ocr"])
    _battle_with_answers(
        sessions, "early", "model_b", [("a" * 10, "b" * 4), ("c" * 5, "")], NOW, tags=["ocr", "chart"]
    )
    _battle_with_answers(sessions, "mid", "tie (bothbad)", [], NOW + timedelta(hours=1))
    _battle_with_answers(sessions, "gone", "model_a", [("x", "y")], NOW + timedelta(hours=3), tags=["ocr"])
    with sessions.begin() as db:
        db.get(Battle, "gone").excluded = True  # an operator's exclusion: never counted
        ids = {m.name: m.id for m in repo.list_models(db)}

    with sessions() as db:
        arrays = battle_arrays(db, VoteFilter(), lengths=True)
        plain = battle_arrays(db, VoteFilter(category="ocr"))
        tags = category_vote_counts(db, VoteFilter(), limit=10)
        top = category_vote_counts(db, VoteFilter(), limit=1)
    assert len(arrays) == 3
    assert arrays.model_a.tolist() == [ids["m1"]] * 3 and arrays.model_b.tolist() == [ids["m3"]] * 3
    assert [WINNERS[w] for w in arrays.winner] == ["model_b", "tie (bothbad)", "tie"]
    assert arrays.len_a.tolist() == [15, 0, 3] and arrays.len_b.tolist() == [4, 0, 2]
    assert len(plain) == 2 and plain.len_a is None
    assert [WINNERS[w] for w in plain.winner] == ["model_b", "tie"]
    assert tags == [("ocr", 2), ("chart", 1)] and top == [("ocr", 2)]
    with sessions() as db:
        assert len(battle_arrays(db, VoteFilter(category="none-such"))) == 0
