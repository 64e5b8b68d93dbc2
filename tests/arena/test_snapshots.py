"""Leaderboard snapshots: computed in the background from the stored votes, shared through the database.

Every test runs on SQLite and PostgreSQL, with votes written through the repository as the arena writes
them, and the service reading them back through real queries and fits.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from arena.snapshots import SnapshotService
from arena.views import MINUS, STANDARD_VIEWS, format_interval
from storage import repo
from storage.schema import BattleTag, ModelRow

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MODELS = ("alpha", "bravo", "charlie", "delta")


class Clock:
    """A settable clock passed to the service (its heavy views refresh by elapsed time)."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _seed_models(db) -> dict[str, int]:
    seeds = [
        repo.ModelSeed(
            name,
            f"{name.title()} Display",
            f"{name} org",
            "scripted",
            license="apache-2.0",
            link=f"https://example.org/{name}",
        )
        for name in MODELS
    ]
    return repo.sync_models(db, seeds, T0)


class Votes:
    """Writes voted battles (with both answers) the way the battle service does."""

    def __init__(self, sessions) -> None:
        self.sessions = sessions
        self.n = 0

    def add(
        self,
        a: str,
        b: str,
        winner: str,
        *,
        count: int = 1,
        mode: str = "anony",
        tags=(),
        at=T0,
        answers: tuple[int, int] = (10, 10),
    ) -> None:
        with self.sessions.begin() as db:
            ids = _seed_models(db)
            for _ in range(count):
                self.n += 1
                battle_id = f"b{self.n}"
                repo.create_battle(
                    db,
                    battle_id=battle_id,
                    model_a_id=ids[a],
                    model_b_id=ids[b],
                    session_id=None,
                    now=at,
                    mode=mode,
                )
                turn = repo.add_turn(db, battle_id=battle_id, index=0, prompt="p", image_hashes=[], now=at)
                for side, model, size in (("a", a, answers[0]), ("b", b, answers[1])):
                    repo.save_response(
                        db,
                        turn_id=turn.id,
                        side=side,
                        model_id=ids[model],
                        text="x" * size,
                        started_at=at,
                        first_token_at=at,
                        finished_at=at,
                        output_chunks=1,
                        finish_reason="stop",
                    )
                repo.set_battle_state(db, battle_id, "ready", at)
                repo.record_vote(db, battle_id=battle_id, winner=winner, session_id=None, now=at)
                db.add_all(BattleTag(battle_id=battle_id, tag=t) for t in tags)

    def league(self, rounds: int = 1, **kw) -> None:
        """Each pair of models: stronger (earlier in MODELS) wins 6, loses 2, ties 2, per round."""
        for _ in range(rounds):
            for i, a in enumerate(MODELS):
                for b in MODELS[i + 1 :]:
                    self.add(a, b, "model_a", count=6, answers=(30, 10), **kw)
                    self.add(b, a, "model_a", count=2, answers=(10, 30), **kw)
                    self.add(a, b, "tie", count=2, **kw)


def _service(sessions, clock: Clock, **kw) -> SnapshotService:
    kw.setdefault("min_votes", 10)
    return SnapshotService(sessions, refresh_s=60, now=clock, **kw)


def _finite_rows(payload: dict) -> None:
    for row in payload["rows"]:
        for key in ("rating", "ci_lower", "ci_upper"):
            assert row[key] is not None and math.isfinite(row[key]), row


def test_computes_every_view_once_then_only_after_votes_change(sessions) -> None:
    votes = Votes(sessions)
    votes.league()
    clock = Clock()
    service = _service(sessions, clock)
    assert service.current("bt") is None, "nothing before the first refresh"

    assert service.refresh_once()
    assert dict(service.computations) == {spec.key: 1 for spec in STANDARD_VIEWS}
    bt = service.current("bt")
    assert bt is not None and not bt.stale and bt.error is None and bt.computed_at == T0
    assert [r["model"] for r in bt.payload["rows"]] == list(MODELS)  # the league's true order
    _finite_rows(bt.payload)
    assert bt.payload["ci"] == "sandwich" and bt.payload["total_votes"] == 60

    clock.at += timedelta(minutes=1)
    assert not service.refresh_once(), "votes unchanged: nothing recomputed"
    assert service.computations["bt"] == 1

    votes.add("delta", "alpha", "model_a")
    clock.at += timedelta(minutes=1)
    assert service.refresh_once()
    assert service.computations["bt"] == 2 and service.computations["davidson"] == 2
    assert service.computations["elo"] == 1 and service.computations["bt-style"] == 1, "heavy: not yet"
    assert service.current("bt").payload["total_votes"] == 61
    assert service.current("bt").computed_at == clock.at

    clock.at += timedelta(minutes=5)
    service.refresh_once()
    assert service.computations["elo"] == 2 and service.computations["bt-style"] == 2
    assert service.current("elo").payload["total_votes"] == 61

    service.refresh_once(force=True)
    assert service.computations["bt"] == 3, "force recomputes an unchanged view"


def test_payload_carries_models_intervals_counts_and_plots_data(sessions) -> None:
    votes = Votes(sessions)
    votes.league(at=T0 - timedelta(days=1))
    votes.league(tags=["ocr"])
    votes.add("alpha", "bravo", "model_b", count=3, mode="named")
    with sessions.begin() as db:
        db.execute(sa.update(ModelRow).where(ModelRow.name == "delta").values(deprecated=True))
    service = _service(sessions, Clock())
    service.refresh_once()

    bt = service.current("bt").payload
    top = bt["rows"][0]
    assert top == {
        **top,
        "model": "alpha",
        "display_name": "Alpha Display",
        "organization": "alpha org",
        "license": "apache-2.0",
        "link": "https://example.org/alpha",
        "deprecated": False,
        "rank_ub": 1,
        "num_battles": 60,
    }
    assert top["ci_lower"] < top["rating"] < top["ci_upper"]
    assert bt["rows"][-1]["model"] == "delta" and bt["rows"][-1]["deprecated"] is True
    assert math.isclose(sum(r["rating"] for r in bt["rows"]) / 4, 1000.0, abs_tol=1e-6)
    assert bt["votes_per_day"] == [{"day": "2026-04-30", "votes": 60}, {"day": "2026-05-01", "votes": 60}]
    pc = bt["pair_counts"]
    assert pc["models"] == list(MODELS)
    assert pc["battles"][0][1] == pc["battles"][1][0] == 20
    assert pc["wins"][0][1] == 6 * 2 + 1 * 2 and pc["wins"][1][0] == 2 * 2 + 1 * 2  # ties as half
    assert bt["not_enough_votes"] == [] and bt["min_votes"] == 10

    assert service.current("bt-all").payload["total_votes"] == 123, "named battles count there"
    assert service.current("bt-7d").payload["total_votes"] == 120
    davidson = service.current("davidson").payload
    assert davidson["method"] == "davidson" and davidson["extras"]["tie_param"] > 0
    elo = service.current("elo").payload
    assert elo["ci"] == "none" and elo["rows"][0]["model"] == "alpha"
    style = service.current("bt-style").payload
    assert style["ci"] == "bootstrap" and style["extras"]["coefficients"][0]["feature"] == "length"
    _finite_rows(style)

    keys = [v.key for v in service.views()]
    assert keys == ["bt", "bt-style", "bt:cat=ocr"], "public views only"
    assert service.current("bt:cat=ocr").payload["total_votes"] == 60
    assert {v.key for v in service.views(admin=True)} == {s.key for s in STANDARD_VIEWS} | {"bt:cat=ocr"}


def test_few_votes_are_listed_never_fitted_into_a_diverged_rating(sessions) -> None:
    """The issue's first symptom: one vote showed 2235 / −235."""
    service = _service(sessions, Clock(), min_votes=1)
    service.refresh_once()
    empty = service.current("bt").payload
    assert (empty["rows"], empty["not_enough_votes"], empty["total_votes"]) == ([], [], 0)

    votes = Votes(sessions)
    votes.add("alpha", "bravo", "model_a")
    service.refresh_once()
    bt = service.current("bt").payload
    assert bt["rows"] == [], "a perfect split has no finite rating, whatever min_votes says"
    assert bt["not_enough_votes"] == [
        {"model": "alpha", "display_name": "Alpha Display", "votes": 1},
        {"model": "bravo", "display_name": "Bravo Display", "votes": 1},
    ]

    # alpha, bravo and charlie beat each other around; delta has enough votes but never won
    votes.add("bravo", "alpha", "model_a", count=4)
    votes.add("charlie", "bravo", "model_a", count=5)
    votes.add("alpha", "charlie", "model_a", count=5)
    votes.add("alpha", "delta", "model_a", count=12)
    votes.add("bravo", "charlie", "tie", count=1)
    service.min_votes = 10
    service.refresh_once()
    bt = service.current("bt").payload
    assert sorted(r["model"] for r in bt["rows"]) == ["alpha", "bravo", "charlie"]
    assert [(w["model"], w["votes"]) for w in bt["not_enough_votes"]] == [("delta", 12)]
    _finite_rows(bt)
    assert all(abs(r["rating"] - 1000) < 400 for r in bt["rows"]), bt["rows"]


def test_two_processes_on_one_database_never_both_compute(sessions) -> None:
    votes = Votes(sessions)
    votes.league()
    clock = Clock()
    first = _service(sessions, clock, holder="host:1")
    second = _service(sessions, clock, holder="host:2")

    # both start at once: the lease lets one of them compute
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}

    def refresh(service: SnapshotService) -> None:
        barrier.wait()
        results[service.holder] = service.refresh_once()

    threads = [threading.Thread(target=refresh, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [False, True], results
    leader, reader = (first, second) if results["host:1"] else (second, first)
    assert reader.computations == {} and leader.computations["bt"] == 1
    reader.refresh_once()
    assert reader.current("bt").payload == leader.current("bt").payload, "the reader reads the snapshot"
    assert reader.current("bt").computed_by == leader.holder

    votes.add("delta", "alpha", "model_a")
    clock.at += timedelta(minutes=1)
    assert not reader.refresh_once() and reader.current("bt").payload["total_votes"] == 60
    assert leader.refresh_once()
    reader.refresh_once()
    assert reader.current("bt").payload["total_votes"] == 61 and reader.computations == {}

    leader.stop()  # gives the lease up: the other process takes over at once
    votes.add("delta", "bravo", "model_a")
    clock.at += timedelta(minutes=1)
    assert reader.refresh_once() and reader.computations["bt"] == 1
    assert reader.current("bt").payload["total_votes"] == 62


def test_a_recompute_asked_in_another_process_is_done_by_the_lease_holder(sessions) -> None:
    """The admin's Recompute button may be served by a process that does not compute snapshots."""
    Votes(sessions).league()
    clock = Clock()
    leader = _service(sessions, clock, holder="host:1")
    other = _service(sessions, clock, holder="host:2")
    assert leader.refresh_once() and not other.refresh_once()
    clock.at += timedelta(minutes=1)
    assert not leader.refresh_once(), "nothing changed, nothing asked"

    other.request_recompute()  # the button, on the process without the lease
    assert not other.refresh_once() and other.computations == {}
    assert leader.refresh_once() and leader.computations["bt"] == 2 and leader.computations["elo"] == 2
    assert not leader.refresh_once(), "the request is taken once"


def test_a_failed_refresh_keeps_the_last_good_snapshot_marked_stale(sessions, caplog) -> None:
    votes = Votes(sessions)
    votes.league()
    clock = Clock()
    service = _service(sessions, clock)
    reader = _service(sessions, clock, holder="other:2")
    service.refresh_once()
    good = service.current("bt")

    votes.add("delta", "alpha", "model_a")
    clock.at += timedelta(minutes=1)
    engine = sessions.kw["bind"]
    with engine.begin() as conn:  # the computation now fails: its model table is gone
        conn.exec_driver_sql("ALTER TABLE models RENAME TO models_away")
    try:
        with caplog.at_level(logging.ERROR, logger="arena.snapshots"):
            service.refresh_once()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE models_away RENAME TO models")
    stale = service.current("bt")
    assert stale.stale and "models" in stale.error
    assert stale.payload == good.payload and stale.computed_at == good.computed_at
    assert any("could not be computed" in r.message and r.exc_info for r in caplog.records)
    reader.refresh_once()
    assert reader.current("bt").stale and reader.current("bt").error == stale.error, "shared as well"

    clock.at += timedelta(minutes=1)
    service.refresh_once()
    fresh = service.current("bt")
    assert not fresh.stale and fresh.error is None and fresh.payload["total_votes"] == 61


def test_background_thread_computes_at_start_and_on_request(sessions) -> None:
    Votes(sessions).league()
    service = SnapshotService(sessions, refresh_s=3600, min_votes=10)
    service.start()
    try:
        _wait_until(lambda: service.current("bt") is not None)
        first = service.computations["bt"]
        service.request_recompute()
        _wait_until(lambda: service.computations["bt"] > first and service.current("bt") is not None)
    finally:
        service.stop()
    assert service.current("bt").payload["total_votes"] == 60


def _wait_until(condition, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the background refresh did not happen")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("rating", "lower", "upper", "shown"),
    [
        (1000.0, 991.0, 1012.0, f"+12 / {MINUS}9"),
        (1000.4, 1000.4, 1000.4, f"+0 / {MINUS}0"),
        (1000.0, 1001.0, 1010.0, f"+10 / {MINUS}0"),  # a percentile interval can miss the point
        (1000.0, 990.0, 999.0, f"+0 / {MINUS}10"),
    ],
)
def test_interval_is_printed_without_doubled_signs(
    rating: float, lower: float, upper: float, shown: str
) -> None:
    text = format_interval(rating, lower, upper)
    assert text == shown
    assert "--" not in text and "+-" not in text and "-" not in text
