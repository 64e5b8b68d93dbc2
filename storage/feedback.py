"""Feedback on answers (👍 up, 👎 down, 🚩 flag, each with an optional comment), mostly from direct chats.

One row per (battle, session, kind): giving the same kind again changes its comment, never adds a row.
Callers own the transaction, as in :mod:`storage.repo`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from storage.schema import FEEDBACK_KINDS, Feedback
from storage.sql import as_utc, dialect_insert, rowcount

#: The longest comment a person may attach to one piece of feedback.
MAX_FEEDBACK_COMMENT_CHARS = 500


@dataclass(frozen=True)
class FeedbackRecord:
    """One stored piece of feedback, as read back."""

    battle_id: str
    session_id: str | None
    kind: str
    comment: str | None
    created_at: datetime


def set_feedback(
    db: Session,
    *,
    battle_id: str,
    session_id: str,
    kind: str,
    comment: str | None,
    now: datetime,
) -> bool:
    """Store feedback of ``kind`` on a battle by a session; return True if it is new (not a repeat).

    A repeat replaces the comment if one is given; ``comment`` None (or blank) keeps the earlier one.
    Raises ValueError for an unknown kind or a comment over :data:`MAX_FEEDBACK_COMMENT_CHARS`.
    """
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"unknown feedback kind {kind!r} (expected one of {', '.join(FEEDBACK_KINDS)})")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_FEEDBACK_COMMENT_CHARS:
        raise ValueError(f"the comment is longer than {MAX_FEEDBACK_COMMENT_CHARS} characters")
    stmt = dialect_insert(db, Feedback).values(
        battle_id=battle_id, session_id=session_id, kind=kind, comment=comment, created_at=now
    )
    # The unique key decides between racing requests: a second one never adds a row.
    conflict = stmt.on_conflict_do_nothing(index_elements=["battle_id", "session_id", "kind"])
    inserted = db.execute(conflict.returning(Feedback.id)).first() is not None
    if not inserted and comment is not None:
        db.execute(
            update(Feedback)
            .where(Feedback.battle_id == battle_id, Feedback.session_id == session_id, Feedback.kind == kind)
            .values(comment=comment)
        )
    return inserted


def remove_feedback(db: Session, *, battle_id: str, session_id: str, kinds: Iterable[str]) -> int:
    """Withdraw this session's feedback of the given kinds on a battle; return how many rows went."""
    result = db.execute(
        delete(Feedback).where(
            Feedback.battle_id == battle_id,
            Feedback.session_id == session_id,
            Feedback.kind.in_(list(kinds)),
        )
    )
    return rowcount(result)


def feedback_for(db: Session | Connection, battle_id: str) -> list[FeedbackRecord]:
    """Every piece of feedback on a battle, oldest first."""
    rows = db.execute(
        select(Feedback.battle_id, Feedback.session_id, Feedback.kind, Feedback.comment, Feedback.created_at)
        .where(Feedback.battle_id == battle_id)
        .order_by(Feedback.created_at, Feedback.id)
    ).all()
    return [
        FeedbackRecord(battle_id, session_id, kind, comment, as_utc(created_at))
        for battle_id, session_id, kind, comment, created_at in rows
    ]


__all__ = ["MAX_FEEDBACK_COMMENT_CHARS", "FeedbackRecord", "feedback_for", "remove_feedback", "set_feedback"]
