"""Repository functions: every read and write the arena makes, each taking an open Session.

Callers own the transaction (``with factory.begin() as session: ...``), so a group of writes such as
"record the vote and mark the battle voted" commits or rolls back as one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from storage.images import StoredImage
from storage.schema import (
    IMPORTED_BACKEND,
    MAX_REASON_CHARS,
    Battle,
    BattleTag,
    Image,
    ModelRow,
    Response,
    Turn,
    TurnImage,
    Vote,
    VoterSession,
)
from storage.sql import as_utc, chunked, dialect_insert, dialect_name, rowcount
from storage.vocabulary import ANONY, BATTLE_MODES, DIRECT, GENERATING, READY, VOTED, WINNERS, BattleState


class VoteRejected(ValueError):
    """A vote that cannot be recorded (unknown battle, not ready, already voted, bad winner)."""


@dataclass(frozen=True)
class ModelSeed:
    """What the roster says about a model when it is first registered."""

    name: str
    display_name: str
    organization: str
    backend: str
    enabled: bool = True
    sampling_weight: float = 1.0
    license: str = ""
    link: str = ""


def sync_models(session: Session, seeds: Iterable[ModelSeed], now: datetime) -> dict[str, int]:
    """Register roster models missing from the database; return every model's id by name.

    Existing rows are left as they are: once a model is in the database, operators' edits win. The
    exception is a row that only an imported battle file created (backend ``imported``, disabled, no
    display name): the roster's entry fills it in the first time the roster names that model.
    """
    # Each field of ModelSeed is the models column of the same name.
    rows = [asdict(seed) for seed in seeds]
    if rows:
        stmt = dialect_insert(session, ModelRow).values([{**row, "created_at": now} for row in rows])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
        # A row created by an import is no operator's decision: the roster's entry fills it in once.
        for row in rows:
            session.execute(
                update(ModelRow)
                .where(ModelRow.name == row["name"], ModelRow.backend == IMPORTED_BACKEND)
                .values({column: value for column, value in row.items() if column != "name"})
            )
    return {name: id_ for name, id_ in session.execute(select(ModelRow.name, ModelRow.id))}


def list_models(session: Session) -> list[ModelRow]:
    return list(session.scalars(select(ModelRow).order_by(ModelRow.name)))


def ensure_voter_session(
    session: Session, session_id: str, user_agent: str | None, now: datetime, ip_hash: str | None = None
) -> None:
    """Register a voter session once; ``ip_hash`` is the salted hash, never the address."""
    stmt = dialect_insert(session, VoterSession).values(
        id=session_id, user_agent=(user_agent or None) and user_agent[:512], ip_hash=ip_hash, created_at=now
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))


def create_battle(
    session: Session,
    *,
    battle_id: str,
    model_a_id: int,
    model_b_id: int | None,
    session_id: str | None,
    now: datetime,
    mode: str = ANONY,
) -> Battle:
    if mode not in BATTLE_MODES:
        raise ValueError(f"unknown battle mode {mode!r}")
    battle = Battle(
        id=battle_id,
        mode=mode,
        model_a_id=model_a_id,
        model_b_id=model_b_id,
        session_id=session_id,
        state=GENERATING,
        created_at=now,
        updated_at=now,
    )
    session.add(battle)
    session.flush()
    return battle


def add_images(session: Session, images: Sequence[StoredImage], now: datetime) -> None:
    """Record stored images; an image already known (same sha256) is not written twice."""
    if not images:
        return
    rows = {
        img.sha256: {
            "sha256": img.sha256,
            "mime": img.mime,
            "width": img.width,
            "height": img.height,
            "size_bytes": img.size_bytes,
            "created_at": now,
        }
        for img in images
    }
    stmt = dialect_insert(session, Image).values(list(rows.values()))
    session.execute(stmt.on_conflict_do_nothing(index_elements=["sha256"]))


def add_turn(
    session: Session, *, battle_id: str, index: int, prompt: str, image_hashes: Sequence[str], now: datetime
) -> Turn:
    """Add a user turn (with its images in order) and put the battle back into 'generating'."""
    turn = Turn(battle_id=battle_id, index=index, prompt=prompt, created_at=now)
    session.add(turn)
    session.flush()
    session.add_all(
        TurnImage(turn_id=turn.id, position=pos, image_sha256=sha) for pos, sha in enumerate(image_hashes)
    )
    set_battle_state(session, battle_id, GENERATING, now)
    session.flush()
    return turn


def save_response(
    session: Session,
    *,
    turn_id: int,
    side: str,
    model_id: int,
    text: str,
    started_at: datetime,
    first_token_at: datetime | None,
    finished_at: datetime | None,
    output_chunks: int,
    finish_reason: str | None,
    error: str | None = None,
    output_tokens: int | None = None,
) -> Response:
    response = Response(
        turn_id=turn_id,
        side=side,
        model_id=model_id,
        text=text,
        started_at=started_at,
        first_token_at=first_token_at,
        finished_at=finished_at,
        output_chunks=output_chunks,
        output_tokens=output_tokens,
        finish_reason=finish_reason,
        error=error,
    )
    session.add(response)
    session.flush()
    return response


def supersede_answers(session: Session, battle_id: str, turn_id: int, now: datetime) -> bool:
    """Mark a ready battle's current answers to ``turn_id`` superseded and put it back to generating.

    For regenerate: the old answers stay stored (``superseded``) and the new ones the caller saves
    become the current ones. Returns False, changing nothing, unless the battle is ready (answered and
    not yet voted on); the check and the change are one statement, so a racing vote wins cleanly.
    """
    claimed = session.execute(
        update(Battle)
        .where(Battle.id == battle_id, Battle.state == READY)
        .values(state=GENERATING, updated_at=now, invalid_reason=None)
    )
    if not rowcount(claimed):
        return False
    session.execute(
        update(Response)
        .where(Response.turn_id == turn_id, Response.superseded.is_(False))
        .values(superseded=True)
    )
    return True


def ready_since(session: Session | Connection, battle_id: str) -> datetime | None:
    """When a battle that is ready for its vote became ready (None if it is not ready)."""
    row = session.execute(
        select(Battle.updated_at).where(Battle.id == battle_id, Battle.state == READY)
    ).scalar()
    return None if row is None else as_utc(row)


def set_battle_state(
    session: Session, battle_id: str, state: BattleState, now: datetime, reason: str | None = None
) -> None:
    session.execute(
        update(Battle)
        .where(Battle.id == battle_id)
        .values(state=state, updated_at=now, invalid_reason=reason)
    )


@dataclass(frozen=True)
class RecordedVote:
    """A vote as stored; ``replayed`` when this call was a retry of a vote already recorded."""

    id: int
    battle_id: str
    winner: str
    client_token: str | None
    created_at: datetime
    replayed: bool = False


def record_vote(
    session: Session | Connection,
    *,
    battle_id: str,
    winner: str,
    session_id: str | None,
    now: datetime,
    reason: str | None = None,
    client_token: str | None = None,
    decision_s: float | None = None,
) -> RecordedVote:
    """Record the battle's one vote and mark it voted, in the caller's transaction.

    The battle must be 'ready' (both answers complete). The common case is two statements: an
    UPDATE that moves the battle from 'ready' to 'voted' (atomic: of two racing writers only one
    matches, the other waits for its row lock, then finds 'voted') and an INSERT of the vote. The
    unique constraint on votes.battle_id is still the last word: a vote written behind the
    repository makes the INSERT a no-op and the call fail, rolling the UPDATE back with the caller's
    transaction. Retrying with the same ``client_token`` and winner returns the stored vote, so a
    client whose acknowledgement was lost can safely send again.

    ``decision_s`` is how long the voter took, from both answers complete to the vote.
    ``session`` may also be a Core connection; see :func:`vote_target` for the fastest one to use.
    """
    if winner not in WINNERS:
        raise VoteRejected(f"unknown winner {winner!r}; expected one of {', '.join(WINNERS)}")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise VoteRejected(f"the reason is longer than {MAX_REASON_CHARS} characters")
    if client_token is not None and not 0 < len(client_token) <= 64:
        raise VoteRejected("the client token must be 1 to 64 characters")
    params = {
        "p_battle_id": battle_id,
        "p_winner": winner,
        "p_session_id": session_id,
        "p_reason": reason,
        "p_client_token": client_token,
        "p_decision_s": decision_s,
        "p_now": now,
    }
    if dialect_name(session) == "postgresql":
        # One round trip: claim the battle and insert the vote in a single statement.
        inserted = session.execute(_VOTE_STATEMENTS.claim_and_insert, params).first()
        if inserted is None:
            return _not_claimed(session, battle_id, winner, client_token)
        return RecordedVote(inserted[0], battle_id, winner, client_token, now)
    if session.execute(_VOTE_STATEMENTS.claim, params).first() is None:
        return _not_claimed(session, battle_id, winner, client_token)
    inserted = session.execute(_VOTE_STATEMENTS.insert, params).first()
    if inserted is None:
        return _replayed_vote(session, battle_id, winner, client_token)
    return RecordedVote(inserted[0], battle_id, winner, client_token, now)


class _VoteStatements:
    """``record_vote``'s statements, built once with bound parameters (``p_...``).

    Building them per call (Core constructs, then their cache key) cost about 0.5 ms of the
    0.83 ms of CPU a vote took on PostgreSQL; with 8 writer threads sharing one GIL that CPU time
    is what sets the tail latency. Table-level statements: the ORM's bulk-DML machinery would cost
    more than the round trips.
    """

    def __init__(self) -> None:
        battles, votes = Battle.__table__, Vote.__table__
        #: Moves the battle from 'ready' to 'voted': of two racing writers only one matches.
        self.claim = (
            battles.update()
            .where(
                battles.c.id == bindparam("p_battle_id"),
                battles.c.state == READY,
                battles.c.mode != DIRECT,
            )
            .values(state=VOTED, updated_at=bindparam("p_now"))
            .returning(battles.c.id)
        )
        columns = {
            "winner": "p_winner",
            "session_id": "p_session_id",
            "reason": "p_reason",
            "client_token": "p_client_token",
            "decision_s": "p_decision_s",
            "created_at": "p_now",
        }
        #: SQLite: the vote, after the claim in the same transaction.
        self.insert = (
            sqlite.insert(votes)
            .values(battle_id=bindparam("p_battle_id"), **{k: bindparam(p) for k, p in columns.items()})
            .on_conflict_do_nothing(index_elements=["battle_id"])
            .returning(votes.c.id)
        )
        #: PostgreSQL: the claim and the insert as one statement (atomic on its own).
        claimed = self.claim.cte("claimed")
        source = select(
            claimed.c.id, *(bindparam(p, type_=votes.c[k].type).label(k) for k, p in columns.items())
        )
        self.claim_and_insert = (
            postgresql.insert(votes)
            .from_select(["battle_id", *columns], source)
            .add_cte(claimed)
            .on_conflict_do_nothing(index_elements=["battle_id"])
            .returning(votes.c.id)
        )


_VOTE_STATEMENTS = _VoteStatements()


def set_vote_reason(session: Session, battle_id: str, session_id: str | None, reason: str) -> bool:
    """Store the voter's reason for a vote already recorded; only the session that voted may.

    Returns False when there is no such vote by that session.
    """
    if len(reason) > MAX_REASON_CHARS:
        raise VoteRejected(f"the reason is longer than {MAX_REASON_CHARS} characters")
    result = session.execute(
        update(Vote)
        .where(Vote.battle_id == battle_id, Vote.session_id == session_id)
        .values(reason=reason or None)
    )
    return bool(getattr(result, "rowcount", 0))


def vote_target(engine: Engine) -> Engine:
    """The engine to run :func:`record_vote` on, each call its own transaction, via
    ``storage.db.run_in_transaction(vote_target(engine), lambda conn: record_vote(conn, ...))``.

    On PostgreSQL the claim-and-insert is one statement, which is atomic on its own: run in
    autocommit it needs no BEGIN and COMMIT round trips (the commit still waits for the WAL flush).
    The reads that explain a refusal run after it and decide nothing. On SQLite the two statements
    need a transaction, which ``Engine.begin()`` gives.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def _not_claimed(
    session: Session | Connection, battle_id: str, winner: str, client_token: str | None
) -> RecordedVote:
    """Why a battle could not take the vote: unknown, a direct chat, not ready, or already voted."""
    row = session.execute(select(Battle.mode, Battle.state).where(Battle.id == battle_id)).first()
    if row is None:
        raise VoteRejected("unknown battle")
    mode, state = row
    if mode == DIRECT:
        raise VoteRejected("a direct chat takes feedback, not votes")
    if state == VOTED:
        return _replayed_vote(session, battle_id, winner, client_token)
    raise VoteRejected(f"this battle cannot take a vote while it is {state}")


def _replayed_vote(
    session: Session | Connection, battle_id: str, winner: str, client_token: str | None
) -> RecordedVote:
    """The stored vote when this is the same client's retry of it; otherwise the vote is refused."""
    stored = session.execute(
        select(Vote.id, Vote.winner, Vote.client_token, Vote.created_at).where(Vote.battle_id == battle_id)
    ).first()
    if stored is not None and client_token is not None and stored.client_token == client_token:
        if stored.winner != winner:
            raise VoteRejected("this vote was already recorded with a different choice")
        return RecordedVote(
            stored.id, battle_id, stored.winner, stored.client_token, as_utc(stored.created_at), replayed=True
        )
    raise VoteRejected("this battle has already been voted on")


def turn_image_hashes(db: Session | Connection, turn_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each turn's image hashes in prompt order (turns without images are left out)."""
    images: dict[int, list[str]] = {}
    for chunk in chunked(turn_ids, db):
        for turn_id, sha in db.execute(
            select(TurnImage.turn_id, TurnImage.image_sha256)
            .where(TurnImage.turn_id.in_(chunk))
            .order_by(TurnImage.turn_id, TurnImage.position)
        ):
            images.setdefault(turn_id, []).append(sha)
    return images


def answer_texts(session: Session, battle_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Each battle's whole answer per side (all turns joined by blank lines), for style measures."""
    out: dict[str, list[list[str]]] = {}
    for chunk in chunked(battle_ids, session):
        rows = session.execute(
            select(Turn.battle_id, Response.side, Response.text)
            .join(Response, Response.turn_id == Turn.id)
            .where(Turn.battle_id.in_(chunk), Response.superseded.is_(False))
            .order_by(Turn.battle_id, Turn.index)
        )
        for battle_id, side, text in rows:
            out.setdefault(battle_id, [[], []])[0 if side == "a" else 1].append(text)
    return {battle: ("\n\n".join(a), "\n\n".join(b)) for battle, (a, b) in out.items()}


def battle_categories(session: Session, battle_ids: Sequence[str]) -> dict[str, str]:
    """Each tagged battle's category tags, sorted and joined with '+' (e.g. ``chart+ocr``)."""
    tags: dict[str, list[str]] = {}
    for chunk in chunked(battle_ids, session):
        rows = session.execute(
            select(BattleTag.battle_id, BattleTag.tag)
            .where(BattleTag.battle_id.in_(chunk))
            .order_by(BattleTag.battle_id, BattleTag.tag)
        )
        for battle_id, tag in rows:
            tags.setdefault(battle_id, []).append(tag)
    return {battle: "+".join(names) for battle, names in tags.items()}
