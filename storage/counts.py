"""Vote counts aggregated in SQL, for leaderboards that must stay cheap at millions of votes.

Every function here runs ONE aggregate query with all filters in its WHERE clause, so the database
returns a few thousand rows (one per model pair and outcome, or per day) however many votes there are,
and Python never holds one object per vote. ``VoteFilter`` says which votes count; ``vote_conditions``
is that rule as SQL conditions, shared by the aggregates here, the column reader ``vote_columns`` and
``storage.snapshots``, so every path counts the same votes.

Never counted, whatever the filter: battles marked invalid, battles whose answers leaked a model's
identity (``identity_leak``), and battles an operator excluded from ratings (``excluded``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Float,
    Integer,
    Select,
    and_,
    bindparam,
    cast,
    extract,
    func,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from storage.schema import Battle, BattleTag, ModelRow, Turn, Vote, VoterSession
from storage.sql import as_utc, dialect_name
from storage.vocabulary import ANONY, INVALID


@dataclass(frozen=True)
class VoteFilter:
    """Which votes a leaderboard counts (the defaults are the public leaderboard's)."""

    #: only battles in mode "anony" (named battles can bias votes)
    anony_only: bool = True
    #: also votes of voter sessions flagged banned or anomalous
    include_flagged: bool = False
    #: votes cast at or after this moment (naive = UTC)
    since: datetime | None = None
    #: votes cast before this moment (naive = UTC)
    until: datetime | None = None
    #: only battles carrying this tag in ``battle_tags``
    category: str | None = None
    #: leave out battles carrying this tag (e.g. "identity-question")
    exclude_category: str | None = None
    #: leave out these battles (``analysis ratings --dedup``: copies beyond a duplicate group's cap)
    exclude_battles: frozenset[str] = frozenset()


def utc_bound(moment: datetime | None, name: str) -> datetime | None:
    """A time bound in UTC, the zone every timestamp is stored in (naive = already UTC)."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
    return as_utc(moment)


def vote_conditions(flt: VoteFilter, *, include_invalid: bool = False) -> list[ColumnElement[bool]]:
    """The WHERE conditions (over ``votes`` joined to ``battles``) that select the votes ``flt`` counts.

    ``include_invalid`` keeps invalid, leaked and excluded battles (audits and exports only; no
    leaderboard counts them). Raises ``ValueError`` when ``since`` is after ``until``.
    """
    since, until = utc_bound(flt.since, "since"), utc_bound(flt.until, "until")
    if since is not None and until is not None and since > until:
        raise ValueError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    conditions: list[ColumnElement[bool]] = [Battle.model_b_id.is_not(None)]
    if flt.anony_only:
        conditions.append(Battle.mode == ANONY)
    if not include_invalid:
        conditions += [
            Battle.state != INVALID,
            Battle.identity_leak.is_(False),
            Battle.excluded.is_(False),
        ]
    if not flt.include_flagged:
        flagged = select(VoterSession.id).where(VoterSession.banned | VoterSession.anomalous)
        conditions.append(Vote.session_id.is_(None) | Vote.session_id.not_in(flagged))
    if since is not None:
        conditions.append(Vote.created_at >= since)
    if until is not None:
        conditions.append(Vote.created_at < until)
    if flt.category is not None:
        tagged = select(BattleTag.battle_id).where(
            BattleTag.battle_id == Battle.id, BattleTag.tag == flt.category
        )
        conditions.append(tagged.exists())
    if flt.exclude_category is not None:
        excluded = select(BattleTag.battle_id).where(
            BattleTag.battle_id == Battle.id, BattleTag.tag == flt.exclude_category
        )
        conditions.append(~excluded.exists())
    if flt.exclude_battles:
        # ids rendered inline (literal_execute): tens of thousands stay under the drivers' parameter limits
        ids: BindParameter[list[str]] = bindparam(
            None, sorted(flt.exclude_battles), expanding=True, literal_execute=True
        )
        conditions.append(Battle.id.not_in(ids))
    return conditions


def _counted(flt: VoteFilter, *columns: Any) -> Select[Any]:
    """``SELECT columns FROM votes JOIN battles WHERE <flt>``."""
    return select(*columns).join(Battle, Battle.id == Vote.battle_id).where(and_(*vote_conditions(flt)))


def pair_outcome_counts(
    db: Session | Connection, flt: VoteFilter = VoteFilter()
) -> list[tuple[str, str, str, int]]:
    """Votes per (model_a name, model_b name, winner), as shown on screen (model_a = left side).

    One aggregate query: the votes are grouped by the battle's two model ids and the winner in the
    database, and only the grouped rows are joined to the model names. Sorted by the names and winner.
    """
    # "+ 0" keeps SQLite from walking the battles in model-id index order to save the GROUP BY sort:
    # that visits the table rows at random (about 3x slower than scanning it and sorting).
    a, b = (Battle.model_a_id + 0).label("a"), (Battle.model_b_id + 0).label("b")
    grouped = _counted(flt, a, b, Vote.winner, func.count().label("n")).group_by(a, b, Vote.winner).subquery()
    ma = ModelRow.__table__.alias("ma")
    mb = ModelRow.__table__.alias("mb")
    stmt = (
        select(ma.c.name, mb.c.name, grouped.c.winner, grouped.c.n)
        .join(ma, ma.c.id == grouped.c.a)
        .join(mb, mb.c.id == grouped.c.b)
        .order_by(ma.c.name, mb.c.name, grouped.c.winner)
    )
    return [(str(a), str(b), str(w), int(c)) for a, b, w, c in db.execute(stmt)]


def _utc_day(db: Session | Connection) -> ColumnElement[Any]:
    """The UTC calendar day of a vote as 'YYYY-MM-DD' (timestamps are stored in UTC)."""
    if dialect_name(db) == "postgresql":
        return func.to_char(func.timezone("UTC", Vote.created_at), "YYYY-MM-DD")
    return func.substr(Vote.created_at, 1, 10)  # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff'


def votes_per_day(db: Session | Connection, flt: VoteFilter = VoteFilter()) -> list[tuple[str, int]]:
    """Counted votes per UTC day, oldest first: ``[("2026-03-01", 412), ...]`` (one GROUP BY query)."""
    day = _utc_day(db).label("day")
    stmt = _counted(flt, day, func.count()).group_by(day).order_by(day)
    return [(str(d), int(c)) for d, c in db.execute(stmt)]


def votes_per_model(db: Session | Connection, flt: VoteFilter = VoteFilter()) -> dict[str, int]:
    """Counted battles per model (a battle counts for both its models), from ``pair_outcome_counts``."""
    out: dict[str, int] = {}
    for a, b, _, n in pair_outcome_counts(db, flt):
        out[a] = out.get(a, 0) + n
        out[b] = out.get(b, 0) + n
    return dict(sorted(out.items()))


def _epoch_seconds(db: Session | Connection) -> ColumnElement[float]:
    """A vote's time as float seconds since the epoch, as ``datetime.timestamp()`` gives it."""
    if dialect_name(db) == "postgresql":
        return cast(extract("epoch", Vote.created_at), Float)
    # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC: the fraction as written, plus whole seconds
    whole = cast(func.strftime("%s", Vote.created_at), Integer)
    return cast(func.substr(Vote.created_at, 20, 7), Float) + whole


#: The per-vote columns ``vote_columns`` reads, in order.
VOTE_COLUMNS: tuple[str, ...] = (
    "vote_id",
    "battle_id",
    "model_a_id",
    "model_b_id",
    "winner",
    "voter",
    "mode",
    "tstamp",
    "turns",
)


def vote_columns(
    db: Session | Connection,
    flt: VoteFilter = VoteFilter(),
    *,
    include_invalid: bool = False,
    chunk_rows: int = 100_000,
) -> Iterator[tuple[Sequence[Any], ...]]:
    """The counted votes as column chunks: per chunk, one sequence per ``VOTE_COLUMNS``, in NO order.

    For readers that need each vote (online Elo, style control) without one Python object per vote:
    the driver's rows are fetched ``chunk_rows`` at a time and turned into columns at once, so at most
    one chunk of row tuples lives at a time. The database returns them in storage order (sorting a
    million rows by time costs it several seconds of random reads); sort by (``tstamp``,
    ``vote_id``) for vote order. Models come as ids (``model_names`` maps them), ``voter`` is the
    imported judge label or the voter session id (None when neither), ``tstamp`` the vote time in
    seconds since the epoch (computed in SQL: no datetime object per vote), ``turns`` the battle's
    number of turns (0 when it has none).
    """
    if dialect_name(db) == "postgresql":
        # a hash join with the grouped turns beats a lookup per vote
        per_battle = select(Turn.battle_id, func.count().label("turns")).group_by(Turn.battle_id).subquery()
        turns: Any = func.coalesce(per_battle.c.turns, 0)
    else:
        # SQLite walks the (battle_id, index) key of turns once per vote, in scan order
        per_battle = None
        turns = select(func.count()).where(Turn.battle_id == Battle.id).scalar_subquery()
    stmt = select(
        Vote.id,
        Battle.id,
        Battle.model_a_id,
        Battle.model_b_id,
        Vote.winner,
        func.coalesce(Vote.judge, Vote.session_id),
        Battle.mode,
        _epoch_seconds(db),
        turns,
    ).join(Battle, Battle.id == Vote.battle_id)
    if per_battle is not None:
        stmt = stmt.outerjoin(per_battle, per_battle.c.battle_id == Battle.id)
    stmt = stmt.where(and_(*vote_conditions(flt, include_invalid=include_invalid)))
    conn = db.connection() if isinstance(db, Session) else db  # Core rows: no ORM work per row
    result = conn.execute(stmt.execution_options(yield_per=chunk_rows))
    try:
        for rows in result.partitions(chunk_rows):
            yield tuple(zip(*rows, strict=True))
    finally:
        result.close()


def model_names(db: Session | Connection) -> dict[int, str]:
    """Every model's name by id."""
    return {int(i): str(n) for i, n in db.execute(select(ModelRow.id, ModelRow.name))}


__all__ = [
    "VOTE_COLUMNS",
    "VoteFilter",
    "model_names",
    "pair_outcome_counts",
    "utc_bound",
    "vote_columns",
    "vote_conditions",
    "votes_per_day",
    "votes_per_model",
]
