"""The arena's relational schema: models, voter sessions, battles, turns, images, responses and votes.

Every table is created by the Alembic migrations in ``storage/migrations``; ``Base.metadata`` is what
those migrations are checked against. Timestamps are stored as UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import False_

# The vote vocabulary is defined in storage.vocabulary; the check constraints below spell it out.
from storage.vocabulary import ANSWER_ORDERS
from storage.vocabulary import BATTLE_MODES as BATTLE_MODES
from storage.vocabulary import BATTLE_STATES as BATTLE_STATES
from storage.vocabulary import WINNERS as WINNERS

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SIDES = ("a", "b")
FEEDBACK_KINDS = ("up", "down", "flag")
#: ``models.backend`` of a model that only came from an imported battle file (no roster named it yet).
IMPORTED_BACKEND = "imported"
#: A vote's optional free-text reason is capped so one request cannot bloat the database.
MAX_REASON_CHARS = 2000


def sa_false() -> False_:
    """Server-side default FALSE, portable across SQLite and PostgreSQL."""
    return false()


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    #: Every model here maps one Table (SQLAlchemy types ``__table__`` as the wider FromClause).
    __table__: ClassVar[Table]


class ModelRow(Base):
    """A model that can take part in battles. The roster seeds it; operators' later edits live here."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    organization: Mapped[str] = mapped_column(String(200), default="")
    license: Mapped[str] = mapped_column(String(200), default="", server_default="")
    link: Mapped[str] = mapped_column(String(500), default="", server_default="")
    knowledge_cutoff: Mapped[str | None] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    deprecated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    sampling_weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VoterSession(Base):
    """One browser session: a random id, a salted hash of the IP (never the IP) and the user agent."""

    __tablename__ = "voter_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ip_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    banned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    anomalous: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    #: The version of the terms of use the voter accepted, and when (NULL: not accepted yet).
    terms_version: Mapped[str | None] = mapped_column(String(64))
    terms_accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Battle(Base):
    """Two models answering the same conversation; anonymous until it is voted on."""

    __tablename__ = "battles"
    __table_args__ = (
        CheckConstraint(_in("mode", BATTLE_MODES), name="mode"),
        CheckConstraint(_in("state", BATTLE_STATES), name="state"),
        CheckConstraint("model_b_id IS NULL OR model_a_id <> model_b_id", name="distinct_models"),
        CheckConstraint("(mode = 'direct') = (model_b_id IS NULL)", name="direct_has_one_model"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    model_a_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    #: NULL only for direct chats, which have one model.
    model_b_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("voter_sessions.id", ondelete="SET NULL"), index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    #: Set when an answer revealed a model's identity (such battles are left out of ratings).
    identity_leak: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    #: The identity term an answer revealed (e.g. "OpenAI"), and the side ("a" or "b") whose answer did.
    identity_leak_term: Mapped[str | None] = mapped_column(String(200))
    identity_leak_side: Mapped[str | None] = mapped_column(String(1))
    #: Set by an operator (admin page or CLI) to leave a battle out of ratings; see ``audit_log``.
    excluded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    language: Mapped[str | None] = mapped_column(String(32))
    #: Where the battle came from: "arena" (played here) or "import" (a FastChat file).
    source: Mapped[str] = mapped_column(String(16), default="arena", server_default="arena")
    #: Indexed for time windows over battles (the admin page's share of battles in the last 24 h).
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    model_a: Mapped[ModelRow] = relationship(foreign_keys=[model_a_id])
    model_b: Mapped[ModelRow | None] = relationship(foreign_keys=[model_b_id])
    turns: Mapped[list[Turn]] = relationship(back_populates="battle", order_by="Turn.index")
    vote: Mapped[Vote | None] = relationship(back_populates="battle")
    tags: Mapped[list[BattleTag]] = relationship(order_by="BattleTag.tag")


class BattleTag(Base):
    """A category tag on a battle (e.g. "ocr", "chart", "multi-image"), for filtered leaderboards."""

    __tablename__ = "battle_tags"

    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    #: who set it: NULL for the arena and people (the admin page), ``tagger@template-version`` for a
    #: model-run analysis task (``python -m analysis categorize`` / ``image-need``)
    source: Mapped[str | None] = mapped_column(String(240))


class Turn(Base):
    """One user prompt (with its ordered images) inside a battle."""

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("battle_id", "index", name="uq_turns_battle_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    battle: Mapped[Battle] = relationship(back_populates="turns")
    images: Mapped[list[TurnImage]] = relationship(order_by="TurnImage.position")
    #: The answers shown now (a regenerated turn keeps its superseded answers apart, see Response).
    responses: Mapped[list[Response]] = relationship(
        primaryjoin="and_(Turn.id == Response.turn_id, Response.superseded == false())",
        order_by="Response.side",
        viewonly=True,
    )


class Image(Base):
    """An uploaded image, stored once on disk under its sha256 (EXIF stripped before hashing)."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    #: perceptual hash (imagehash's pHash, 64 bits as 16 hex digits) for near-duplicate prompts
    phash: Mapped[str | None] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TurnImage(Base):
    """The position of an image within a turn's prompt."""

    __tablename__ = "turn_images"

    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"), index=True)


#: The one current (not superseded) answer per turn and side; superseded answers may repeat.
CURRENT_RESPONSE_WHERE = "superseded = false"


class Response(Base):
    """One model's answer to one turn, with its timing.

    Regenerating a turn marks its answers ``superseded`` and adds new ones: every reader of answers
    (export, judging, analysis) takes only the rows with ``superseded`` false, the answers shown.
    """

    __tablename__ = "responses"
    __table_args__ = (
        Index(
            "uq_responses_turn_side_current",
            "turn_id",
            "side",
            unique=True,
            sqlite_where=sql_text(CURRENT_RESPONSE_WHERE),
            postgresql_where=sql_text(CURRENT_RESPONSE_WHERE),
        ),
        CheckConstraint(_in("side", SIDES), name="side"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    side: Mapped[str] = mapped_column(String(1))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    first_token_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    output_chunks: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    #: Replaced by a regenerated answer before the vote: kept, but never shown, exported or judged.
    superseded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())


class Vote(Base):
    """The one vote a battle can receive; the unique battle_id is what enforces 'one'."""

    __tablename__ = "votes"
    __table_args__ = (CheckConstraint(_in("winner", WINNERS), name="winner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id", ondelete="CASCADE"), unique=True)
    winner: Mapped[str] = mapped_column(String(16))
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("voter_sessions.id", ondelete="SET NULL"), index=True
    )
    #: Who voted, as an external label (FastChat's "judge" field) for imported votes.
    judge: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    #: The client's idempotency token: retrying a vote with the same token returns the stored vote.
    client_token: Mapped[str | None] = mapped_column(String(64))
    #: Seconds from the moment both answers of the last turn were complete to the vote (NULL for
    #: imported votes and votes cast before this was recorded).
    decision_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    battle: Mapped[Battle] = relationship(back_populates="vote")


#: Feedback rows on one answer (a turn) and rows on a whole battle (no turn) are unique apart.
FEEDBACK_ON_ANSWER_WHERE = "turn_id IS NOT NULL"
FEEDBACK_ON_BATTLE_WHERE = "turn_id IS NULL"


class Feedback(Base):
    """Thumbs up / down / flag on one answer of a direct chat (or any battle), one of each kind per
    session and answer. Rows without a turn are on the battle as a whole (those stored before
    feedback was per answer); they are unique per (battle, session, kind) by their own index."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint(_in("kind", FEEDBACK_KINDS), name="kind"),
        Index(
            "uq_feedback_on_answer",
            "battle_id",
            "turn_id",
            "session_id",
            "kind",
            unique=True,
            sqlite_where=sql_text(FEEDBACK_ON_ANSWER_WHERE),
            postgresql_where=sql_text(FEEDBACK_ON_ANSWER_WHERE),
        ),
        Index(
            "uq_feedback_on_battle",
            "battle_id",
            "session_id",
            "kind",
            unique=True,
            sqlite_where=sql_text(FEEDBACK_ON_BATTLE_WHERE),
            postgresql_where=sql_text(FEEDBACK_ON_BATTLE_WHERE),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id", ondelete="CASCADE"), index=True)
    #: The answer rated (its turn); NULL for feedback on the battle as a whole.
    turn_id: Mapped[int | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("voter_sessions.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JudgeVerdict(Base):
    """One judge model's verdict on one battle, in one answer order, with one prompt template."""

    __tablename__ = "judge_verdicts"
    __table_args__ = (
        CheckConstraint(_in("answer_order", ANSWER_ORDERS), name="answer_order"),
        UniqueConstraint(
            "battle_id", "judge_model", "template_version", "answer_order", name="uq_judge_verdicts_key"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id", ondelete="CASCADE"), index=True)
    judge_model: Mapped[str] = mapped_column(String(200))
    template_version: Mapped[str] = mapped_column(String(32))
    answer_order: Mapped[str] = mapped_column(String(2))
    #: "A", "B" or "tie" in the order shown to the judge; NULL when the output could not be parsed.
    verdict: Mapped[str | None] = mapped_column(String(8))
    raw_output: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BattleLabel(Base):
    """What a model-run analysis task said about one battle: its category and language
    (``categorize``), whether its prompt needs the image (``image-need``), with the evidence.

    One row per (battle, tagger model, template version, task): a run resumes and never asks twice.
    ``label`` is NULL when the output could not be used; ``error`` then says why.
    """

    __tablename__ = "battle_labels"
    __table_args__ = (
        UniqueConstraint("battle_id", "tagger", "template_version", "task", name="uq_battle_labels_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id", ondelete="CASCADE"), index=True)
    tagger: Mapped[str] = mapped_column(String(200))
    template_version: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32), index=True)
    label: Mapped[str | None] = mapped_column(String(64))
    #: the task's other findings as JSON (language, flags; the blind answer and the judge's reasons)
    details: Mapped[str | None] = mapped_column(Text)
    raw_output: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ImageDescription(Base):
    """A detailed description of an image by a captioning model, for text-only judges (TouchStone)."""

    __tablename__ = "image_descriptions"
    __table_args__ = (
        UniqueConstraint(
            "image_sha256", "describer", "template_version", name="uq_image_descriptions_key"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256", ondelete="CASCADE"), index=True)
    describer: Mapped[str] = mapped_column(String(200))
    template_version: Mapped[str] = mapped_column(String(32))
    #: the description; NULL when the model failed (``error`` says why)
    text: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModerationFlag(Base):
    """Something an operator should look at: a flagged prompt, image, answer or voter."""

    __tablename__ = "moderation_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    battle_id: Mapped[str | None] = mapped_column(ForeignKey("battles.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("voter_sessions.id", ondelete="CASCADE"), index=True
    )
    image_sha256: Mapped[str | None] = mapped_column(ForeignKey("images.sha256", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AnalysisResult(Base):
    """A computed figure set kept for the admin page (e.g. a judge's agreement with people).

    Results are appended, never updated: the latest row per (kind, subject) is the current one, and
    older rows show how a figure moved as votes and verdicts accumulated.
    """

    __tablename__ = "analysis_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: What was computed, e.g. ``judge_agreement`` or ``judge_leaderboards``.
    kind: Mapped[str] = mapped_column(String(32))
    #: What it is about, e.g. the judge model's name.
    subject: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, object]] = mapped_column(JSON)
    result: Mapped[dict[str, object]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditEntry(Base):
    """One operator action (admin page or ``python -m arena admin``): who, when, what, old → new."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(200))
    #: e.g. ``set-model``, ``exclude-battle``, ``include-battle``, ``ban-voter``, ``unban-voter``.
    action: Mapped[str] = mapped_column(String(32))
    #: What was changed: a model name, a battle id or a voter session id.
    target: Mapped[str] = mapped_column(String(200), index=True)
    old: Mapped[dict[str, object]] = mapped_column(JSON)
    new: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LeaderboardSnapshot(Base):
    """The latest computed leaderboard of one view (method, filters), shared by every arena process.

    ``data_version`` says which votes it was computed from, so no process recomputes an unchanged view.
    """

    __tablename__ = "leaderboard_snapshots"

    view: Mapped[str] = mapped_column(String(200), primary_key=True)
    data_version: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: Seconds the computation took, and which process did it (host:pid).
    duration_s: Mapped[float] = mapped_column(Float)
    computed_by: Mapped[str] = mapped_column(String(200))


class Lease(Base):
    """A named lease that one process holds until ``expires_at`` (e.g. who computes snapshots)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
