"""Repository functions for model-run labelling tasks (``categorize``, ``image-need``): which battles
still need a label, storing labels, and turning them into ``battle_tags`` rows that filtered
leaderboards read.

A label row is keyed by (battle, tagger, template version, task); the unique constraint on that key,
written with ON CONFLICT DO NOTHING, decides between racing runs, and only the run whose label row
was inserted writes the battle's tags, so a battle is never tagged twice for one key.

Tags written here carry ``source = "tagger@template-version"`` (:func:`tag_source`); tags set by the
arena or by people (the admin page) have ``source`` NULL. **Human precedence:** a tag listed in
``human_first`` (the taxonomy's categories) is not added to a battle that already has a human tag from
that list, and :func:`drop_overridden_model_tags` removes model tags from battles that people tagged
later. A battle keeps one row per tag name (the table's key is (battle, tag)): the first writer's
source stays.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.orm import Session

from storage.schema import Battle, BattleLabel, BattleTag, Turn, TurnImage
from storage.sql import chunked, dialect_insert, rowcount
from storage.vocabulary import ANONY, READY, VOTED

#: The ``battle_labels.task`` of each labelling command.
TASK_CATEGORIZE = "categorize"
TASK_IMAGE_NEED = "image-need"
#: The image-need verdicts, used as ``battle_labels.label`` and as tag names (MMStar's criterion).
VISION_INDISPENSABLE = "vision-indispensable"
ANSWERABLE_WITHOUT_IMAGE = "answerable-without-image"
IMAGE_NEED_LABELS = (VISION_INDISPENSABLE, ANSWERABLE_WITHOUT_IMAGE)

#: Battle states whose answers are complete (a battle being played is left alone).
LABELLABLE_STATES = (READY, VOTED)


def tag_source(tagger: str, template_version: str) -> str:
    """``battle_tags.source`` of tags written by a model-run task: ``tagger@template-version``."""
    return f"{tagger}@{template_version}"


@dataclass(frozen=True)
class NewLabel:
    """One ``battle_labels`` row to insert; ``label`` is None exactly when ``error`` says why."""

    battle_id: str
    tagger: str
    template_version: str
    task: str
    label: str | None
    details: str | None
    raw_output: str
    error: str | None
    input_tokens: int | None
    output_tokens: int | None
    created_at: datetime


def battles_to_label(
    session: Session,
    *,
    tagger: str,
    template_version: str,
    task: str,
    anony_only: bool = True,
    voted_only: bool = False,
    with_images: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[str]:
    """Ids of complete two-model battles without a label of this key, oldest first.

    ``with_images`` keeps only battles whose first turn has at least one image.
    """
    done = exists().where(
        BattleLabel.battle_id == Battle.id,
        BattleLabel.tagger == tagger,
        BattleLabel.template_version == template_version,
        BattleLabel.task == task,
    )
    stmt = (
        select(Battle.id)
        .where(
            Battle.state.in_((VOTED,) if voted_only else LABELLABLE_STATES), Battle.model_b_id.is_not(None)
        )
        .where(~done)
        .order_by(Battle.created_at, Battle.id)
    )
    if anony_only:
        stmt = stmt.where(Battle.mode == ANONY)
    if with_images:
        pictured = (
            select(TurnImage.turn_id)
            .join(Turn, Turn.id == TurnImage.turn_id)
            .where(Turn.battle_id == Battle.id, Turn.index == 0)
        )
        stmt = stmt.where(pictured.exists())
    if since is not None:
        stmt = stmt.where(Battle.created_at >= since)
    if until is not None:
        stmt = stmt.where(Battle.created_at < until)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def labelled_battles(
    session: Session, battle_ids: Sequence[str], *, tagger: str, template_version: str, task: str
) -> set[str]:
    """The battles among ``battle_ids`` that already have a label row of this key."""
    done: set[str] = set()
    for chunk in chunked(battle_ids, session):
        done.update(
            session.scalars(
                select(BattleLabel.battle_id).where(
                    BattleLabel.battle_id.in_(chunk),
                    BattleLabel.tagger == tagger,
                    BattleLabel.template_version == template_version,
                    BattleLabel.task == task,
                )
            )
        )
    return done


def _human_tagged(session: Session, battle_ids: Collection[str], tags: Collection[str]) -> set[str]:
    """Battles among ``battle_ids`` that carry a human (source NULL) tag from ``tags``."""
    if not tags or not battle_ids:
        return set()
    found: set[str] = set()
    for chunk in chunked(sorted(battle_ids), session):
        found.update(
            session.scalars(
                select(BattleTag.battle_id).where(
                    BattleTag.battle_id.in_(chunk),
                    BattleTag.tag.in_(sorted(tags)),
                    BattleTag.source.is_(None),
                )
            )
        )
    return found


def save_labels(
    session: Session,
    labels: Iterable[tuple[NewLabel, Sequence[str]]],
    *,
    human_first: Collection[str] = (),
) -> int:
    """Insert label rows and, for each row this call inserted, its tags (source ``tagger@version``).

    ``labels`` pairs each row with the tags it implies. A row whose key already exists is left as it
    is and its tags are not written (another run got there first). A tag in ``human_first`` is skipped
    for a battle that already has a human tag from ``human_first``. Returns the label rows inserted.
    """
    pairs = list(labels)
    if not pairs:
        return 0
    table = BattleLabel.__table__
    stmt = (
        dialect_insert(session, table)
        .values([vars(label) for label, _ in pairs])
        .on_conflict_do_nothing(index_elements=["battle_id", "tagger", "template_version", "task"])
        .returning(table.c.battle_id, table.c.tagger, table.c.template_version, table.c.task)
    )
    inserted = {tuple(row) for row in session.execute(stmt)}
    won = [
        (label, tags)
        for label, tags in pairs
        if (label.battle_id, label.tagger, label.template_version, label.task) in inserted
    ]
    protected = _human_tagged(session, {label.battle_id for label, _ in won}, human_first)
    tag_rows: list[dict[str, Any]] = []
    for label, tags in won:
        source = tag_source(label.tagger, label.template_version)
        for tag in dict.fromkeys(tags):
            if tag in human_first and label.battle_id in protected:
                continue
            tag_rows.append({"battle_id": label.battle_id, "tag": tag, "source": source})
    if tag_rows:
        insert_tags = dialect_insert(session, BattleTag.__table__).values(tag_rows)
        session.execute(insert_tags.on_conflict_do_nothing(index_elements=["battle_id", "tag"]))
    return len(inserted)


def drop_overridden_model_tags(session: Session, tags: Collection[str]) -> int:
    """Delete model-written tags from ``tags`` on battles that carry a human tag from ``tags``.

    People may tag a battle on the admin page after a model did; this applies the human-precedence
    rule to such battles. Returns the rows deleted.
    """
    if not tags:
        return 0
    human = BattleTag.__table__.alias("human")
    overridden = exists().where(
        and_(
            human.c.battle_id == BattleTag.battle_id, human.c.tag.in_(sorted(tags)), human.c.source.is_(None)
        )
    )
    result = session.execute(
        delete(BattleTag).where(BattleTag.source.is_not(None), BattleTag.tag.in_(sorted(tags)), overridden)
    )
    return rowcount(result)


def label_records(
    session: Session, *, task: str, tagger: str | None = None, template_version: str | None = None
) -> list[dict[str, Any]]:
    """Every stored label of a task (optionally of one tagger and template version), oldest first."""
    stmt = (
        select(BattleLabel).where(BattleLabel.task == task).order_by(BattleLabel.created_at, BattleLabel.id)
    )
    if tagger is not None:
        stmt = stmt.where(BattleLabel.tagger == tagger)
    if template_version is not None:
        stmt = stmt.where(BattleLabel.template_version == template_version)
    return [
        {
            "battle_id": row.battle_id,
            "tagger": row.tagger,
            "template_version": row.template_version,
            "task": row.task,
            "label": row.label,
            "details": row.details,
            "raw_output": row.raw_output,
            "error": row.error,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
        }
        for row in session.scalars(stmt)
    ]


def battle_tag_rows(session: Session, battle_ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """(battle, tag, source) of every tag on the given battles, sorted."""
    rows: list[tuple[str, str, str | None]] = []
    for chunk in chunked(battle_ids, session):
        rows.extend(
            (battle_id, tag, source)
            for battle_id, tag, source in session.execute(
                select(BattleTag.battle_id, BattleTag.tag, BattleTag.source).where(
                    BattleTag.battle_id.in_(chunk)
                )
            )
        )
    return sorted(rows, key=lambda r: (r[0], r[1]))


__all__ = [
    "ANSWERABLE_WITHOUT_IMAGE",
    "IMAGE_NEED_LABELS",
    "LABELLABLE_STATES",
    "TASK_CATEGORIZE",
    "TASK_IMAGE_NEED",
    "VISION_INDISPENSABLE",
    "NewLabel",
    "battle_tag_rows",
    "battles_to_label",
    "drop_overridden_model_tags",
    "label_records",
    "labelled_battles",
    "save_labels",
    "tag_source",
]
