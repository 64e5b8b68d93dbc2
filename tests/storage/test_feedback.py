"""Feedback rows on SQLite and PostgreSQL: one per (battle, answer, session, kind), and feedback
without an answer (on the whole battle, as stored before migration 0007) still one per kind."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import repo
from storage.db import downgrade, make_engine, session_factory, upgrade
from storage.feedback import feedback_for, has_feedback, remove_feedback, set_feedback
from storage.schema import Feedback, Turn

NOW = datetime(2026, 5, 2, 9, 0, tzinfo=UTC)


def _chat(db: Session, battle_id: str = "chat1", turns: int = 2) -> list[int]:
    """A direct chat by session ``s1`` with ``turns`` turns; their ids in order."""
    ids = repo.sync_models(db, [repo.ModelSeed("m1", "M1", "org", "scripted")], NOW)
    repo.ensure_voter_session(db, "s1", "agent", NOW)
    repo.create_battle(
        db,
        battle_id=battle_id,
        model_a_id=ids["m1"],
        model_b_id=None,
        session_id="s1",
        now=NOW,
        mode="direct",
    )
    return [
        repo.add_turn(db, battle_id=battle_id, index=i, prompt=f"q{i}", image_hashes=[], now=NOW).id
        for i in range(turns)
    ]


def _ordered(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=repr)  # None and ints do not compare


def _rows(db: Session) -> list[tuple]:
    """(answer index, kind, comment) of every feedback row on the chat."""
    return _ordered([(r.turn_index, r.kind, r.comment) for r in feedback_for(db, "chat1")])


def _give(db: Session, turn_id: int | None, kind: str = "up", comment: str | None = None) -> bool:
    return set_feedback(
        db, battle_id="chat1", turn_id=turn_id, session_id="s1", kind=kind, comment=comment, now=NOW
    )


def test_feedback_without_a_turn_is_one_row_per_kind(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    with sessions.begin() as db:
        first, second = _chat(db)
        assert _give(db, None, comment="whole chat") is True
        assert _give(db, None, comment="whole chat, changed") is False  # NULL turn ids still dedupe
        assert _give(db, None) is False
        assert _give(db, first) is True  # the same kind on an answer is a row of its own
        assert _give(db, second, comment="second") is True
        assert _give(db, second, comment="second, changed") is False
        assert _give(db, None, kind="flag") is True
    with sessions() as db:
        assert _rows(db) == _ordered(
            [
                (0, "up", None),
                (1, "up", "second, changed"),
                (None, "flag", None),
                (None, "up", "whole chat, changed"),
            ]
        )
        records = {(r.turn_id, r.kind): r.turn_index for r in feedback_for(db, "chat1")}
        assert records == {(None, "up"): None, (None, "flag"): None, (first, "up"): 0, (second, "up"): 1}
        assert has_feedback(db, battle_id="chat1", kind="flag") and not has_feedback(
            db, battle_id="chat1", kind="down"
        )

    # The indexes themselves refuse a second row, whichever code writes it.
    for turn_id in (None, first):
        with pytest.raises(IntegrityError), sessions.begin() as db:
            db.execute(
                sa.insert(Feedback).values(
                    battle_id="chat1", turn_id=turn_id, session_id="s1", kind="up", created_at=NOW
                )
            )

    with sessions.begin() as db:
        assert (
            remove_feedback(db, battle_id="chat1", turn_id=None, session_id="s1", kinds=["up", "down"]) == 1
        )
        assert remove_feedback(db, battle_id="chat1", turn_id=second, session_id="s1", kinds=["up"]) == 1
    with sessions() as db:
        assert _rows(db) == _ordered([(0, "up", None), (None, "flag", None)])

    # An answer's feedback goes with its turn.
    with sessions.begin() as db:
        db.execute(sa.delete(Turn).where(Turn.id == first))
    with sessions() as db:
        assert _rows(db) == [(None, "flag", None)]
    engine.dispose()


def test_upgrade_to_0007_keeps_battle_level_feedback_and_downgrade_drops_answer_feedback(
    empty_db_url: str,
) -> None:
    upgrade(empty_db_url, "0006")
    engine = make_engine(empty_db_url)
    with session_factory(engine).begin() as db:
        _chat(db)
        db.execute(
            sa.text(
                "INSERT INTO feedback (battle_id, session_id, kind, comment, created_at) "
                "VALUES ('chat1', 's1', 'up', 'old', :now), ('chat1', 's1', 'flag', NULL, :now)"
            ),
            {"now": NOW},
        )
    engine.dispose()

    upgrade(empty_db_url, "0007")
    engine = make_engine(empty_db_url)
    sessions = session_factory(engine)
    with sessions() as db:
        assert _rows(db) == _ordered([(None, "up", "old"), (None, "flag", None)])
    with sessions.begin() as db:
        first = db.scalar(sa.select(Turn.id).where(Turn.index == 0))
        assert _give(db, None, comment="old, kept once") is False  # an old row is found again
        assert _give(db, first, kind="down") is True
    with sessions() as db:
        assert _rows(db) == _ordered(
            [(None, "up", "old, kept once"), (None, "flag", None), (0, "down", None)]
        )
    engine.dispose()

    downgrade(empty_db_url, "0006")
    engine = make_engine(empty_db_url)
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT kind, comment FROM feedback ORDER BY kind")).all()
        assert "turn_id" not in {c["name"] for c in sa.inspect(conn).get_columns("feedback")}
    assert left == [("flag", None), ("up", "old, kept once")]
    engine.dispose()
