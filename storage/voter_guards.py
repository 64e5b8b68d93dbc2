"""Reads and writes that keep bad votes out: rate-limit counts, bans, terms, leak and moderation flags.

Everything is counted from the database, so the limits hold across every arena process that shares
it. :func:`lock_voter` serialises one voter's check-then-write on PostgreSQL (a transaction-scoped
advisory lock), so two requests racing from two processes cannot both pass a limit with one slot
left; on SQLite one writer holds the database at a time, which gives the same guarantee.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstrumentedAttribute, Session

from storage.schema import Battle, BattleTag, ModerationFlag, Vote, VoterSession
from storage.sql import as_utc, dialect_insert, dialect_name

#: Longest stored moderation reason (``moderation_flags.reason``).
MAX_FLAG_REASON = 64


@dataclass(frozen=True)
class Voter:
    """Who is asking: the browser session and the salted hash of its IP (None when unknown)."""

    session_id: str
    ip_hash: str | None


@dataclass(frozen=True)
class LimitReached:
    """A limit the voter has reached: how many requests in the window, and when the next is allowed."""

    count: int
    limit: int
    window: timedelta
    retry_at: datetime


def lock_voter(db: Session | Connection, voter: Voter) -> None:
    """Serialise this voter's check-then-write with any other, until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock on the voter (by IP hash, else session), so other
    voters are not held up. SQLite: a locking read, which makes ``storage.db`` open the transaction
    with ``BEGIN IMMEDIATE`` (the database's one write lock) before the counts are read.
    """
    if dialect_name(db) != "postgresql":
        db.execute(select(VoterSession.id).where(VoterSession.id == voter.session_id).with_for_update())
        return
    key = (voter.ip_hash or voter.session_id).encode()
    number = int.from_bytes(hashlib.sha256(b"vlm-arena-voter:" + key).digest()[:8], "big", signed=True)
    db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": number})


def _voter_sessions(voter: Voter) -> Select[str]:
    """The voter sessions that count as this voter: the session itself and every one from its IP hash."""
    condition = VoterSession.id == voter.session_id
    if voter.ip_hash is not None:
        condition = condition | (VoterSession.ip_hash == voter.ip_hash)
    return select(VoterSession.id).where(condition)


def is_banned(db: Session | Connection, voter: Voter) -> bool:
    """Whether this session, or any session from the same IP hash, is banned."""
    sessions = _voter_sessions(voter).where(VoterSession.banned.is_(True)).limit(1)
    return db.execute(sessions).first() is not None


def _limit(
    db: Session | Connection,
    created_at: InstrumentedAttribute[datetime],
    session_id: InstrumentedAttribute[str | None],
    voter: Voter,
    limit: int,
    window: timedelta,
    now: datetime,
) -> LimitReached | None:
    if limit <= 0:
        return None
    since = now - window
    # The limit-th newest request in the window: if it exists, the limit is reached, and the voter
    # may go on once it leaves the window.
    stmt = (
        select(created_at)
        .where(session_id.in_(_voter_sessions(voter)), created_at > since)
        .order_by(created_at.desc())
        .offset(limit - 1)
        .limit(1)
    )
    oldest = db.execute(stmt).scalar()
    if oldest is None:
        return None
    return LimitReached(limit, limit, window, as_utc(oldest) + window)


def battle_limit(
    db: Session | Connection, voter: Voter, limit: int, now: datetime, window: timedelta = timedelta(hours=1)
) -> LimitReached | None:
    """The battles-per-window limit if this voter has reached it (``limit`` 0: no limit)."""
    return _limit(db, Battle.created_at, Battle.session_id, voter, limit, window, now)


def vote_limit(
    db: Session | Connection, voter: Voter, limit: int, now: datetime, window: timedelta = timedelta(days=1)
) -> LimitReached | None:
    """The votes-per-window limit if this voter has reached it (``limit`` 0: no limit)."""
    return _limit(db, Vote.created_at, Vote.session_id, voter, limit, window, now)


def accept_terms(db: Session, voter: Voter, user_agent: str | None, version: str, now: datetime) -> None:
    """Record that this voter session accepted the terms of use in ``version`` (creating the session)."""
    stmt = dialect_insert(db, VoterSession).values(
        id=voter.session_id,
        ip_hash=voter.ip_hash,
        user_agent=(user_agent or None) and user_agent[:512],
        created_at=now,
        terms_version=version,
        terms_accepted_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"], set_={"terms_version": version, "terms_accepted_at": now}
    )
    db.execute(stmt)


def add_tag(db: Session, battle_id: str, tag: str) -> None:
    """Tag a battle once (a second call with the same tag changes nothing)."""
    stmt = dialect_insert(db, BattleTag).values(battle_id=battle_id, tag=tag)
    db.execute(stmt.on_conflict_do_nothing(index_elements=["battle_id", "tag"]))


def mark_identity_leak(db: Session, battle_id: str, term: str, side: str) -> bool:
    """Flag a battle whose answer on ``side`` revealed ``term``; the first leak found is the one kept.

    Returns True if this call set the flag.
    """
    result = db.execute(
        update(Battle)
        .where(Battle.id == battle_id, Battle.identity_leak.is_(False))
        .values(identity_leak=True, identity_leak_term=term[:200], identity_leak_side=side)
    )
    return bool(getattr(result, "rowcount", 0))


def flag(
    db: Session,
    *,
    reason: str,
    now: datetime,
    session_id: str | None = None,
    battle_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Record something an operator should look at (a refused prompt or image, a flagged answer)."""
    db.add(
        ModerationFlag(
            battle_id=battle_id,
            session_id=session_id,
            reason=reason[:MAX_FLAG_REASON],
            detail=detail,
            created_at=now,
        )
    )
    db.flush()
