"""Helpers that tests (and benchmarks) share but the product itself never needs."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from PIL import Image
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from storage.counts import VoteFilter, vote_conditions
from storage.db import normalize_url
from storage.schema import AnalysisResult, Battle, ModelRow, Turn, Vote
from storage.sql import as_utc
from storage.vocabulary import ANONY


def image_bytes(image: Image.Image) -> bytes:
    """Encode an in-memory image as PNG, as an upload reaches ``BattleService.start_turn``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def scratch_postgres_database(admin_url: str, prefix: str = "arena_scratch") -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``admin_url``, dropped on exit.

    ``admin_url`` names any database the role may connect to and create databases from; the URL
    yielded points at the new one.
    """
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(normalize_url(admin_url)).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def latest_analysis_result(session: Session, *, kind: str, subject: str) -> AnalysisResult | None:
    """The most recent stored analysis result of this kind about this subject, or None."""
    return session.scalars(
        select(AnalysisResult)
        .where(AnalysisResult.kind == kind, AnalysisResult.subject == subject)
        .order_by(AnalysisResult.computed_at.desc(), AnalysisResult.id.desc())
        .limit(1)
    ).first()


def vote_records(
    session: Session,
    *,
    anony_only: bool = False,
    include_flagged: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    category: str | None = None,
    include_invalid: bool | None = None,
) -> list[dict[str, object]]:
    """Every voted battle as a FastChat-style battle record, in vote order: a plain reference reader
    that tests compare the leaderboard's readers against.

    The filters are ``storage.counts.VoteFilter``'s, applied by ``vote_conditions``; ``include_invalid``
    decides the leaked/invalid/excluded battles on their own (None: as ``include_flagged``).
    """
    if include_invalid is None:
        include_invalid = include_flagged
    flt = VoteFilter(
        anony_only=anony_only, include_flagged=include_flagged, since=since, until=until, category=category
    )
    a = ModelRow.__table__.alias("ma")
    b = ModelRow.__table__.alias("mb")
    turn_count = select(Turn.battle_id, func.count().label("turns")).group_by(Turn.battle_id).subquery()
    stmt = (
        select(
            Battle.id,
            a.c.name,
            b.c.name,
            Vote.winner,
            func.coalesce(Vote.judge, Vote.session_id),
            Battle.mode,
            Vote.created_at,
            turn_count.c.turns,
        )
        .join(Vote, Vote.battle_id == Battle.id)
        .join(a, a.c.id == Battle.model_a_id)
        .join(b, b.c.id == Battle.model_b_id)
        .outerjoin(turn_count, turn_count.c.battle_id == Battle.id)
        .where(*vote_conditions(flt, include_invalid=include_invalid))
        .order_by(Vote.created_at, Vote.id)
    )
    return [
        {
            "question_id": battle_id,
            "model_a": model_a,
            "model_b": model_b,
            "winner": winner,
            "judge": voter or "arena_user",
            "turn": int(n_turns or 1),
            "anony": mode == ANONY,
            "tstamp": as_utc(created).timestamp(),
        }
        for battle_id, model_a, model_b, winner, voter, mode, created, n_turns in session.execute(stmt)
    ]
