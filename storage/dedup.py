"""Perceptual image hashes and the first turns of counted battles, for finding duplicate prompts.

``images.phash`` keeps each picture's pHash (imagehash's DCT hash, 64 bits written as 16 hex digits),
computed once: ``backfill_phashes`` fills the rows where it is NULL from the image store, lazily, when
a duplicate search runs (the upload path does not compute it). ``first_turns`` reads, for the votes a
``VoteFilter`` counts, each battle's first prompt with its images' hashes; the grouping itself is
``analysis.dedup``'s.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import imagehash
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.counts import VoteFilter, vote_conditions
from storage.schema import Battle, Image, ModelRow, Turn, TurnImage, Vote

#: Hex digits of a stored pHash (64 bits).
PHASH_HEX_DIGITS = 16
#: Placeholder rows an import creates for hashes whose bytes it lacks (no file to hash).
PLACEHOLDER_MIME = "application/octet-stream"


class ImageReader(Protocol):
    """What the backfill needs of an image store (``storage.images.ImageStore`` is one)."""

    def read(self, sha256: str) -> bytes | None: ...


def image_phash(image: PILImage.Image) -> str:
    """The pHash of a picture as 16 hex digits (``imagehash.phash``, hash_size 8)."""
    return str(imagehash.phash(image))


def phash_of_bytes(data: bytes) -> str | None:
    """The pHash of an encoded picture, or None when it cannot be decoded."""
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            img.load()
            return image_phash(img)
    except (UnidentifiedImageError, OSError, ValueError, PILImage.DecompressionBombError):
        return None


@dataclass(frozen=True)
class Backfill:
    """What ``backfill_phashes`` did: hashes stored, and images it could not hash (file missing or
    undecodable; tried again next time)."""

    computed: int
    unreadable: int


def backfill_phashes(sessions: sessionmaker[Session], store: ImageReader, *, batch: int = 500) -> Backfill:
    """Compute and store the pHash of every image whose ``phash`` is NULL (import placeholders,
    which have no bytes, are skipped), reading each file once through ``store``.

    Walks the images in hash order, ``batch`` at a time, one transaction per batch, so a large
    store is hashed in bounded memory and an interrupted run keeps what it stored.
    """
    computed = unreadable = 0
    after = ""
    while True:
        with sessions() as db:
            todo = list(
                db.scalars(
                    select(Image.sha256)
                    .where(Image.phash.is_(None), Image.sha256 > after, Image.mime != PLACEHOLDER_MIME)
                    .order_by(Image.sha256)
                    .limit(batch)
                )
            )
        if not todo:
            return Backfill(computed, unreadable)
        after = todo[-1]
        found: dict[str, str] = {}
        for sha in todo:
            data = store.read(sha)
            phash = None if data is None else phash_of_bytes(data)
            if phash is None:
                unreadable += 1
            else:
                found[sha] = phash
        if found:
            with sessions.begin() as db:
                for sha, phash in found.items():
                    db.execute(update(Image).where(Image.sha256 == sha).values(phash=phash))
            computed += len(found)


@dataclass(frozen=True)
class FirstTurn:
    """A counted battle's first prompt: its text, its images in position order as (sha256, pHash or
    None), the two models, the vote and when it was cast."""

    battle_id: str
    prompt: str
    images: tuple[tuple[str, str | None], ...]
    model_a: str
    model_b: str
    winner: str
    voted_at: datetime
    vote_id: int


def first_turns(db: Session, flt: VoteFilter) -> list[FirstTurn]:
    """The first turn (index 0) of every battle whose vote ``flt`` counts, in vote order (time, then
    vote id). Two queries, both filtered in SQL: the turns, then their images. Battles without a
    turn are not listed."""
    ma = ModelRow.__table__.alias("ma")
    mb = ModelRow.__table__.alias("mb")
    counted = and_(*vote_conditions(flt))
    rows = db.execute(
        select(Battle.id, Turn.prompt, ma.c.name, mb.c.name, Vote.winner, Vote.created_at, Vote.id)
        .select_from(Vote)
        .join(Battle, Battle.id == Vote.battle_id)
        .join(Turn, and_(Turn.battle_id == Battle.id, Turn.index == 0))
        .join(ma, ma.c.id == Battle.model_a_id)
        .join(mb, mb.c.id == Battle.model_b_id)
        .where(counted)
        .order_by(Vote.created_at, Vote.id)
    ).all()
    pictures: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for battle_id, sha, phash in db.execute(
        select(Battle.id, TurnImage.image_sha256, Image.phash)
        .select_from(Vote)
        .join(Battle, Battle.id == Vote.battle_id)
        .join(Turn, and_(Turn.battle_id == Battle.id, Turn.index == 0))
        .join(TurnImage, TurnImage.turn_id == Turn.id)
        .join(Image, Image.sha256 == TurnImage.image_sha256)
        .where(counted)
        .order_by(Battle.id, TurnImage.position)
    ):
        pictures[battle_id].append((sha, phash))
    return [
        FirstTurn(
            battle_id=battle_id,
            prompt=prompt,
            images=tuple(pictures.get(battle_id, ())),
            model_a=a,
            model_b=b,
            winner=winner,
            voted_at=voted_at,
            vote_id=vote_id,
        )
        for battle_id, prompt, a, b, winner, voted_at, vote_id in rows
    ]


__all__ = [
    "PHASH_HEX_DIGITS",
    "Backfill",
    "FirstTurn",
    "ImageReader",
    "backfill_phashes",
    "first_turns",
    "image_phash",
    "phash_of_bytes",
]
