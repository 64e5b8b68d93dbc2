"""Repository functions for image descriptions (TouchStone-style judging with a text-only judge).

A captioning model of the roster describes each image once; the description (or the error of the
failed call) is stored in ``image_descriptions`` keyed by (image, describer, template version). The
unique constraint on that key, written with ON CONFLICT DO NOTHING, makes a describe run resumable and
safe to run concurrently, and every later judge run with the same describer reuses the stored text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.schema import ImageDescription, Turn, TurnImage
from storage.sql import chunked, dialect_insert, rowcount


@dataclass(frozen=True)
class NewDescription:
    """One describer call's result: ``text`` when it worked, else ``error`` (and ``text`` None)."""

    image_sha256: str
    describer: str
    template_version: str
    text: str | None
    error: str | None
    input_tokens: int | None
    output_tokens: int | None
    created_at: datetime


def battle_images(session: Session, battle_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each battle's images (every turn, in turn and position order); battles without images left out."""
    found: list[tuple[str, int, int, str]] = []
    for chunk in chunked(battle_ids, session):
        rows = session.execute(
            select(Turn.battle_id, Turn.index, TurnImage.position, TurnImage.image_sha256)
            .join(TurnImage, TurnImage.turn_id == Turn.id)
            .where(Turn.battle_id.in_(chunk))
        )
        found.extend((battle_id, index, position, sha) for battle_id, index, position, sha in rows)
    out: dict[str, list[str]] = {}
    for battle_id, _, _, sha in sorted(found):
        out.setdefault(battle_id, []).append(sha)
    return out


def described_images(
    session: Session, hashes: Sequence[str], describer: str, template_version: str
) -> set[str]:
    """The images this describer and template have already been asked about (described or failed)."""
    done: set[str] = set()
    for chunk in chunked(hashes, session):
        done.update(
            session.scalars(
                select(ImageDescription.image_sha256).where(
                    ImageDescription.image_sha256.in_(chunk),
                    ImageDescription.describer == describer,
                    ImageDescription.template_version == template_version,
                )
            )
        )
    return done


def load_descriptions(
    session: Session, hashes: Sequence[str], describer: str, template_version: str
) -> dict[str, str]:
    """The stored descriptions of these images by this describer and template (failed calls left out)."""
    texts: dict[str, str] = {}
    for chunk in chunked(hashes, session):
        for sha, text in session.execute(
            select(ImageDescription.image_sha256, ImageDescription.text).where(
                ImageDescription.image_sha256.in_(chunk),
                ImageDescription.describer == describer,
                ImageDescription.template_version == template_version,
                ImageDescription.text.is_not(None),
            )
        ):
            if text is not None:
                texts[sha] = text
    return texts


def save_descriptions(session: Session, descriptions: Iterable[NewDescription]) -> int:
    """Insert descriptions; one that already exists for its key is left as it is. Returns rows inserted."""
    rows = [vars(d) for d in descriptions]
    if not rows:
        return 0
    stmt = dialect_insert(session, ImageDescription.__table__).values(rows)
    result = session.execute(
        stmt.on_conflict_do_nothing(index_elements=["image_sha256", "describer", "template_version"])
    )
    return rowcount(result)


__all__ = [
    "NewDescription",
    "battle_images",
    "described_images",
    "load_descriptions",
    "save_descriptions",
]
