"""Operations on a live database: forgetting a voter (privacy requests) and online SQLite backups."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.images import ImageStore
from storage.schema import Battle, Feedback, Image, ModerationFlag, Turn, TurnImage, Vote, VoterSession
from storage.sql import chunked


@dataclass(frozen=True)
class ForgetReport:
    session_found: bool
    battles: int
    votes: int
    images: int
    image_files: int


def forget_session(
    factory: sessionmaker[Session], session_id: str, images: ImageStore | None
) -> ForgetReport:
    """Delete everything a voter session left: its battles (with their turns, answers and votes), its
    feedback and flags, the session itself, and the images that only this session uploaded.

    Images another session also uploaded stay. The rows go in one transaction; image files are
    removed only after it commits, so a failure never leaves rows pointing at missing files.
    """
    with factory.begin() as db:
        # A locking read first: on PostgreSQL it locks the session row, on SQLite it opens the
        # transaction with the write lock, so the reads below and the deletes are one snapshot.
        found = db.get(VoterSession, session_id, with_for_update=True) is not None
        of_session = select(Battle.id).where(Battle.session_id == session_id)
        battle_ids = list(db.scalars(of_session))
        shas = set(
            db.scalars(
                select(TurnImage.image_sha256)
                .join(Turn, Turn.id == TurnImage.turn_id)
                .where(Turn.battle_id.in_(of_session))
            )
        )
        votes = db.scalar(
            select(func.count())
            .select_from(Vote)
            .where((Vote.battle_id.in_(of_session)) | (Vote.session_id == session_id))
        )
        db.execute(delete(Vote).where(Vote.session_id == session_id))
        db.execute(delete(Feedback).where(Feedback.session_id == session_id))
        # Turns, images' positions, responses, votes, tags, verdicts and flags go by cascade.
        db.execute(delete(Battle).where(Battle.session_id == session_id))
        db.execute(delete(VoterSession).where(VoterSession.id == session_id))
        still_used: set[str] = set()
        for column in (TurnImage.image_sha256, ModerationFlag.image_sha256):
            for chunk in chunked(sorted(shas), db):
                still_used.update(db.scalars(select(column).where(column.in_(chunk))))
        orphans = sorted(shas - still_used)
        for chunk in chunked(orphans, db):
            db.execute(delete(Image).where(Image.sha256.in_(chunk)))
    removed = 0
    if images is not None:
        for sha in orphans:
            removed += images.remove(sha)  # through the store: a shared directory or an fsspec URL
    return ForgetReport(found, len(battle_ids), int(votes or 0), len(orphans), removed)


def backup_sqlite(engine: Engine, out: Path) -> int:
    """Copy a live SQLite database to ``out`` with SQLite's online backup API; return its page count.

    Writers may keep writing during the copy: the backup is a consistent snapshot. The copy is
    checked with ``PRAGMA integrity_check`` before it is reported done.
    """
    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise ValueError("backup works on SQLite files; for PostgreSQL use pg_dump or pg_basebackup")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new path")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    source = sqlite3.connect(url.database)
    target = sqlite3.connect(partial)
    try:
        source.backup(target, pages=1024)
        status = target.execute("PRAGMA integrity_check").fetchone()[0]
        pages = target.execute("PRAGMA page_count").fetchone()[0]
    finally:
        target.close()
        source.close()
    if status != "ok":
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"backup failed its integrity check: {status}")
    partial.replace(out)
    return int(pages)
