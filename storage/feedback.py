"""Feedback on answers (👍 up, 👎 down, 🚩 flag, each with an optional comment), mostly from direct chats.

Feedback is on one answer, named by its turn (``turn_id``), or on a battle as a whole (``turn_id``
None, as all feedback was before it became per answer). One row per (battle, turn, session, kind):
giving the same kind again changes its comment, never adds a row. Callers own the transaction, as in
:mod:`storage.repo`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from storage.schema import (
    FEEDBACK_KINDS,
    FEEDBACK_ON_ANSWER_WHERE,
    FEEDBACK_ON_BATTLE_WHERE,
    Feedback,
    Turn,
)
from storage.sql import as_utc, dialect_insert, rowcount

#: The longest comment a person may attach to one piece of feedback.
MAX_FEEDBACK_COMMENT_CHARS = 500


@dataclass(frozen=True)
class FeedbackRecord:
    """One stored piece of feedback, as read back. ``turn_id`` and ``turn_index`` (the answer's
    0-based position in the battle) are None for feedback on the battle as a whole."""

    battle_id: str
    session_id: str | None
    kind: str
    comment: str | None
    created_at: datetime
    turn_id: int | None = None
    turn_index: int | None = None


def _same_key(battle_id: str, turn_id: int | None, session_id: str) -> list[ColumnElement[bool]]:
    """The WHERE clauses that pick one session's feedback on one answer (or on the whole battle)."""
    on_turn = Feedback.turn_id.is_(None) if turn_id is None else Feedback.turn_id == turn_id
    return [Feedback.battle_id == battle_id, on_turn, Feedback.session_id == session_id]


def set_feedback(
    db: Session,
    *,
    battle_id: str,
    turn_id: int | None,
    session_id: str,
    kind: str,
    comment: str | None,
    now: datetime,
) -> bool:
    """Store feedback of ``kind`` by a session on one answer (``turn_id``, a turn of ``battle_id``) or,
    with ``turn_id`` None, on the whole battle; return True if it is new (not a repeat).

    A repeat replaces the comment if one is given; ``comment`` None (or blank) keeps the earlier one.
    Raises ValueError for an unknown kind or a comment over :data:`MAX_FEEDBACK_COMMENT_CHARS`.
    """
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"unknown feedback kind {kind!r} (expected one of {', '.join(FEEDBACK_KINDS)})")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_FEEDBACK_COMMENT_CHARS:
        raise ValueError(f"the comment is longer than {MAX_FEEDBACK_COMMENT_CHARS} characters")
    stmt = dialect_insert(db, Feedback).values(
        battle_id=battle_id,
        turn_id=turn_id,
        session_id=session_id,
        kind=kind,
        comment=comment,
        created_at=now,
    )
    # The partial unique index that covers this row decides between racing requests: a second one
    # never adds a row.
    if turn_id is None:
        key, where = ["battle_id", "session_id", "kind"], FEEDBACK_ON_BATTLE_WHERE
    else:
        key, where = ["battle_id", "turn_id", "session_id", "kind"], FEEDBACK_ON_ANSWER_WHERE
    conflict = stmt.on_conflict_do_nothing(index_elements=key, index_where=text(where))
    inserted = db.execute(conflict.returning(Feedback.id)).first() is not None
    if not inserted and comment is not None:
        db.execute(
            update(Feedback)
            .where(*_same_key(battle_id, turn_id, session_id), Feedback.kind == kind)
            .values(comment=comment)
        )
    return inserted


def remove_feedback(
    db: Session, *, battle_id: str, turn_id: int | None, session_id: str, kinds: Iterable[str]
) -> int:
    """Withdraw this session's feedback of the given kinds on one answer (``turn_id``) or, with
    ``turn_id`` None, on the whole battle; return how many rows went."""
    result = db.execute(
        delete(Feedback).where(*_same_key(battle_id, turn_id, session_id), Feedback.kind.in_(list(kinds)))
    )
    return rowcount(result)


def has_feedback(db: Session | Connection, *, battle_id: str, kind: str) -> bool:
    """Whether anyone gave feedback of ``kind`` on a battle or any of its answers."""
    found = db.execute(
        select(Feedback.id).where(Feedback.battle_id == battle_id, Feedback.kind == kind).limit(1)
    ).first()
    return found is not None


def feedback_for(db: Session | Connection, battle_id: str) -> list[FeedbackRecord]:
    """Every piece of feedback on a battle and its answers, oldest first."""
    rows = db.execute(
        select(
            Feedback.battle_id,
            Feedback.session_id,
            Feedback.kind,
            Feedback.comment,
            Feedback.created_at,
            Feedback.turn_id,
            Turn.index,
        )
        .outerjoin(Turn, Turn.id == Feedback.turn_id)
        .where(Feedback.battle_id == battle_id)
        .order_by(Feedback.created_at, Feedback.id)
    ).all()
    return [
        FeedbackRecord(battle_id, session_id, kind, comment, as_utc(created_at), turn_id, turn_index)
        for battle_id, session_id, kind, comment, created_at, turn_id, turn_index in rows
    ]


__all__ = [
    "MAX_FEEDBACK_COMMENT_CHARS",
    "FeedbackRecord",
    "feedback_for",
    "has_feedback",
    "remove_feedback",
    "set_feedback",
]
