"""Vote counts aggregated in SQL (``storage.counts``), on SQLite and PostgreSQL.

The expected figures come from the battle list below, filtered in plain Python: an oracle that does
not share the SQL it checks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from storage import repo
from storage.counts import (
    VoteFilter,
    model_names,
    pair_outcome_counts,
    vote_columns,
    votes_per_day,
    votes_per_model,
)
from storage.schema import Battle, BattleTag, VoterSession

T0 = datetime(2026, 3, 1, 21, 0, tzinfo=UTC)  # battles run from 21:00 UTC into the next day


@dataclass(frozen=True)
class Spec:
    """One battle of the fixture and everything that decides whether its vote counts."""

    id: str
    a: str
    b: str
    winner: str
    hours: float  # vote time after T0
    mode: str = "anony"
    voter: str | None = None  # "good", "bot" (banned) or "odd" (anomalous)
    leak: bool = False
    invalid: bool = False
    excluded: bool = False
    tags: tuple[str, ...] = ()

    @property
    def at(self) -> datetime:
        return T0 + timedelta(hours=self.hours)


SPECS = [
    Spec("b00", "m1", "m2", "model_a", 0.0, tags=("ocr",)),
    Spec("b01", "m2", "m1", "model_a", 0.5, voter="good"),
    Spec("b02", "m1", "m2", "tie", 1.0, tags=("ocr", "chart")),
    Spec("b03", "m1", "m2", "tie (bothbad)", 1.5),
    Spec("b04", "m3", "m1", "model_b", 2.0, voter="bot", tags=("ocr",)),
    Spec("b05", "m3", "m1", "model_b", 2.5, voter="odd"),
    Spec("b06", "m2", "m3", "model_b", 3.0, leak=True, tags=("ocr",)),
    Spec("b07", "m2", "m3", "model_a", 3.5, invalid=True),
    Spec("b08", "m2", "m3", "model_a", 4.0, excluded=True, tags=("ocr",)),
    Spec("b09", "m2", "m3", "model_a", 4.5, mode="named"),
    Spec("b10", "m4", "m1", "model_a", 26.0, voter="good"),  # the day after next (UTC)
    Spec("b11", "m1", "m4", "tie", 27.0, mode="named", voter="bot"),
    Spec("b12", "m3", "m2", "model_b", 28.0, tags=("chart",)),
]


def _fill(sessions) -> None:
    seeds = [repo.ModelSeed(n, n.upper(), "", "scripted") for n in ("m1", "m2", "m3", "m4", "m5")]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, T0)
        for voter in ("good", "bot", "odd"):
            repo.ensure_voter_session(db, voter, "pytest", T0)
        for s in SPECS:
            repo.create_battle(
                db,
                battle_id=s.id,
                model_a_id=ids[s.a],
                model_b_id=ids[s.b],
                session_id=s.voter,
                now=s.at,
                mode=s.mode,
            )
            repo.add_turn(db, battle_id=s.id, index=0, prompt="?", image_hashes=[], now=s.at)
            repo.set_battle_state(db, s.id, "ready", s.at)
            repo.record_vote(db, battle_id=s.id, winner=s.winner, session_id=s.voter, now=s.at)
            db.execute(
                sa.update(Battle)
                .where(Battle.id == s.id)
                .values(
                    identity_leak=s.leak, excluded=s.excluded, **({"state": "invalid"} if s.invalid else {})
                )
            )
            db.add_all(BattleTag(battle_id=s.id, tag=tag) for tag in s.tags)
        db.execute(sa.update(VoterSession).where(VoterSession.id == "bot").values(banned=True))
        db.execute(sa.update(VoterSession).where(VoterSession.id == "odd").values(anomalous=True))


def _counted(flt: VoteFilter) -> list[Spec]:
    """The oracle: which battles' votes ``flt`` counts."""
    since = flt.since.replace(tzinfo=flt.since.tzinfo or UTC) if flt.since else None
    until = flt.until.replace(tzinfo=flt.until.tzinfo or UTC) if flt.until else None
    return [
        s
        for s in SPECS
        if not (s.leak or s.invalid or s.excluded)
        and (s.mode == "anony" or not flt.anony_only)
        and (flt.include_flagged or s.voter not in ("bot", "odd"))
        and (since is None or s.at >= since)
        and (until is None or s.at < until)
        and (flt.category is None or flt.category in s.tags)
    ]


FILTERS = [
    VoteFilter(),
    VoteFilter(include_flagged=True),
    VoteFilter(anony_only=False),
    VoteFilter(anony_only=False, include_flagged=True),
    VoteFilter(category="ocr"),
    VoteFilter(category="ocr", include_flagged=True),
    VoteFilter(category="chart", anony_only=False),
    VoteFilter(category="none-such"),
    VoteFilter(since=T0 + timedelta(hours=1)),  # inclusive
    VoteFilter(until=T0 + timedelta(hours=2.5), include_flagged=True),  # exclusive
    VoteFilter(since=datetime(2026, 3, 1, 22, 30), until=datetime(2026, 3, 3)),  # naive = UTC
    VoteFilter(  # the same moments in another zone
        since=datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=2))),
        until=datetime(2026, 3, 3, 2, 0, tzinfo=timezone(timedelta(hours=2))),
        anony_only=False,
    ),
]


@pytest.mark.parametrize("flt", FILTERS, ids=[repr(f)[10:-1] or "default" for f in FILTERS])
def test_pair_outcome_counts_match_the_battles(sessions, flt: VoteFilter) -> None:
    _fill(sessions)
    expected = Counter((s.a, s.b, s.winner) for s in _counted(flt))
    with sessions() as db:
        rows = pair_outcome_counts(db, flt)
    assert rows == sorted(rows)
    assert {(a, b, w): n for a, b, w, n in rows} == dict(expected)
    assert all(n > 0 for *_, n in rows)


def test_never_counted_battles_stay_out_of_every_view(sessions) -> None:
    _fill(sessions)
    widest = VoteFilter(anony_only=False, include_flagged=True)
    with sessions() as db:
        total = sum(n for *_, n in pair_outcome_counts(db, widest))
        per_model = votes_per_model(db, widest)
        per_day = votes_per_day(db, widest)
        columns = [c for chunk in vote_columns(db, widest) for c in zip(*chunk, strict=True)]
    never = {"b06", "b07", "b08"}  # leaked, invalid, excluded
    assert total == len(SPECS) - len(never) == sum(n for _, n in per_day) == len(columns)
    assert never.isdisjoint(c[1] for c in columns)
    assert sum(per_model.values()) == 2 * total
    # audits may still see them
    with sessions() as db:
        audit = [
            c[1] for chunk in vote_columns(db, widest, include_invalid=True) for c in zip(*chunk, strict=True)
        ]
    assert sorted(audit) == [s.id for s in SPECS]


@pytest.mark.parametrize("flt", [VoteFilter(), VoteFilter(anony_only=False, include_flagged=True)])
def test_votes_per_day_and_per_model(sessions, flt: VoteFilter) -> None:
    _fill(sessions)
    counted = _counted(flt)
    with sessions() as db:
        days = votes_per_day(db, flt)
        per_model = votes_per_model(db, flt)
    assert days == sorted(Counter(s.at.strftime("%Y-%m-%d") for s in counted).items())
    assert len(days) >= 2  # the fixture crosses midnight UTC
    expected = Counter(s.a for s in counted) + Counter(s.b for s in counted)
    assert per_model == dict(sorted(expected.items()))
    assert "m5" not in per_model  # a model without counted votes is absent


def test_vote_columns_read_each_counted_vote(sessions) -> None:
    _fill(sessions)
    flt = VoteFilter(anony_only=False)
    with sessions() as db:
        names = model_names(db)
        chunks = list(vote_columns(db, flt, chunk_rows=3))
    assert len(chunks) >= 2 and all(len(set(map(len, chunk))) == 1 for chunk in chunks)
    rows = sorted((c for chunk in chunks for c in zip(*chunk, strict=True)), key=lambda r: (r[7], r[0]))
    counted = sorted(_counted(flt), key=lambda s: s.at)
    assert [r[1] for r in rows] == [s.id for s in counted]
    assert [(names[r[2]], names[r[3]], r[4], r[6]) for r in rows] == [
        (s.a, s.b, s.winner, s.mode) for s in counted
    ]
    assert [r[7] for r in rows] == [s.at.timestamp() for s in counted]  # seconds, to the microsecond
    assert [r[5] for r in rows] == [s.voter for s in counted]
    assert {r[8] for r in rows} == {1}


def test_bad_time_window_is_refused(sessions) -> None:
    _fill(sessions)
    with sessions() as db, pytest.raises(ValueError, match="since .* is after until"):
        pair_outcome_counts(db, VoteFilter(since=T0 + timedelta(hours=1), until=T0))


def test_works_on_a_core_connection_and_an_empty_database(sessions) -> None:
    with sessions() as db:
        assert pair_outcome_counts(db.connection()) == []
        assert votes_per_day(db) == [] and votes_per_model(db) == {}
    _fill(sessions)
    with sessions() as db:
        assert pair_outcome_counts(db.connection()) == pair_outcome_counts(db)
