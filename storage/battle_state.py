"""One battle read back whole, as its voter left it: models, turns with image hashes, the answers
shown, the vote. The arena rebuilds a voter's battle from this after a page reload, or on another
process (``arena.resume``). Read-only; callers own the session, as in :mod:`storage.repo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from storage.repo import turn_image_hashes
from storage.schema import Battle, ModelRow, Response, Turn, Vote, VoterSession


@dataclass(frozen=True)
class StoredTurn:
    id: int
    index: int
    prompt: str
    #: the turn's images by hash, in prompt order
    image_hashes: list[str]
    #: the answers shown (not superseded) by side; a side that has none yet is missing
    answers: dict[str, str] = field(default_factory=dict)
    #: how many times this turn's answers were regenerated
    regenerations: int = 0


@dataclass(frozen=True)
class StoredBattle:
    id: str
    mode: str
    state: str
    #: why the battle became invalid, when it did
    invalid_reason: str | None
    session_id: str | None
    model_a: str
    model_b: str | None
    turns: list[StoredTurn]
    winner: str | None
    identity_leak_term: str | None
    identity_leak_side: str | None


@dataclass(frozen=True)
class StoredVoter:
    session_id: str
    user_agent: str | None
    ip_hash: str | None
    terms_version: str | None


def load_voter(db: Session, session_id: str) -> StoredVoter | None:
    """A voter session as stored, or None if there is none with this id."""
    row = db.execute(
        select(VoterSession.user_agent, VoterSession.ip_hash, VoterSession.terms_version).where(
            VoterSession.id == session_id
        )
    ).first()
    return None if row is None else StoredVoter(session_id, *row)


def battle_progress(db: Session, battle_id: str) -> tuple[str, int, int] | None:
    """How far a battle has got, cheaply: (state, turns, superseded answers); None if it does not exist.
    A process compares this with what it holds to tell whether another process moved the battle on."""
    turns = select(func.count()).select_from(Turn).where(Turn.battle_id == Battle.id).scalar_subquery()
    superseded = (
        select(func.count())
        .select_from(Response)
        .join(Turn, Turn.id == Response.turn_id)
        .where(Turn.battle_id == Battle.id, Response.superseded.is_(True))
        .scalar_subquery()
    )
    row = db.execute(select(Battle.state, turns, superseded).where(Battle.id == battle_id)).first()
    return None if row is None else (row[0], int(row[1] or 0), int(row[2] or 0))


def load_battle(db: Session, battle_id: str) -> StoredBattle | None:
    """A battle with its turns, images, current answers and vote; None if there is no such battle."""
    model_a, model_b = aliased(ModelRow), aliased(ModelRow)
    row = db.execute(
        select(
            Battle.mode,
            Battle.state,
            Battle.invalid_reason,
            Battle.session_id,
            model_a.name,
            model_b.name,
            Battle.identity_leak_term,
            Battle.identity_leak_side,
            Vote.winner,
        )
        .join(model_a, model_a.id == Battle.model_a_id)
        .outerjoin(model_b, model_b.id == Battle.model_b_id)
        .outerjoin(Vote, Vote.battle_id == Battle.id)
        .where(Battle.id == battle_id)
    ).first()
    if row is None:
        return None
    mode, state, reason, session_id, name_a, name_b, leak_term, leak_side, winner = row
    turn_rows = db.execute(
        select(Turn.id, Turn.index, Turn.prompt).where(Turn.battle_id == battle_id).order_by(Turn.index)
    ).all()
    turn_ids = [turn_id for turn_id, _, _ in turn_rows]
    images = turn_image_hashes(db, turn_ids)
    answers: dict[int, dict[str, str]] = {}
    regenerations: dict[int, int] = {}
    if turn_ids:
        for turn_id, side, text in db.execute(
            select(Response.turn_id, Response.side, Response.text).where(
                Response.turn_id.in_(turn_ids), Response.superseded.is_(False)
            )
        ):
            answers.setdefault(turn_id, {})[side] = text
        for turn_id, replaced in db.execute(
            select(Response.turn_id, func.count())
            .where(Response.turn_id.in_(turn_ids), Response.superseded.is_(True), Response.side == "a")
            .group_by(Response.turn_id)
        ):
            regenerations[turn_id] = int(replaced)
    turns = [
        StoredTurn(
            turn_id,
            index,
            prompt,
            images.get(turn_id, []),
            answers.get(turn_id, {}),
            regenerations.get(turn_id, 0),
        )
        for turn_id, index, prompt in turn_rows
    ]
    return StoredBattle(
        battle_id, mode, state, reason, session_id, name_a, name_b, turns, winner, leak_term, leak_side
    )


__all__ = ["StoredBattle", "StoredTurn", "StoredVoter", "battle_progress", "load_battle", "load_voter"]
