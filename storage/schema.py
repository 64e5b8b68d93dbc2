"""The arena's relational schema: models, voter sessions, battles, turns, images, responses and votes.

Every table is created by the Alembic migrations in ``storage/migrations``; ``Base.metadata`` is what
those migrations are checked against. Timestamps are stored as UTC.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Vote outcomes, in the FastChat / Chatbot Arena vocabulary.
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
BATTLE_MODES = ("anony", "named")
BATTLE_STATES = ("generating", "ready", "voted", "invalid")
SIDES = ("a", "b")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ModelRow(Base):
    """A model that can take part in battles. The roster seeds it; operators' later edits live here."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    organization: Mapped[str] = mapped_column(String(200), default="")
    backend: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    sampling_weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VoterSession(Base):
    """One browser session. Only a random id and the user agent are kept, never the raw IP."""

    __tablename__ = "voter_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Battle(Base):
    """Two models answering the same conversation; anonymous until it is voted on."""

    __tablename__ = "battles"
    __table_args__ = (
        CheckConstraint(_in("mode", BATTLE_MODES), name="mode"),
        CheckConstraint(_in("state", BATTLE_STATES), name="state"),
        CheckConstraint("model_a_id <> model_b_id", name="distinct_models"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    model_a_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    model_b_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("voter_sessions.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    model_a: Mapped[ModelRow] = relationship(foreign_keys=[model_a_id])
    model_b: Mapped[ModelRow] = relationship(foreign_keys=[model_b_id])
    turns: Mapped[list[Turn]] = relationship(back_populates="battle", order_by="Turn.index")
    vote: Mapped[Vote | None] = relationship(back_populates="battle")


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
    responses: Mapped[list[Response]] = relationship(order_by="Response.side")


class Image(Base):
    """An uploaded image, stored once on disk under its sha256 (EXIF stripped before hashing)."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TurnImage(Base):
    """The position of an image within a turn's prompt."""

    __tablename__ = "turn_images"

    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"), index=True)


class Response(Base):
    """One model's answer to one turn, with its timing."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("turn_id", "side", name="uq_responses_turn_side"),
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
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)


class Vote(Base):
    """The one vote a battle can receive; the unique battle_id is what enforces 'one'."""

    __tablename__ = "votes"
    __table_args__ = (CheckConstraint(_in("winner", WINNERS), name="winner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id", ondelete="CASCADE"), unique=True)
    winner: Mapped[str] = mapped_column(String(16))
    session_id: Mapped[str | None] = mapped_column(ForeignKey("voter_sessions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    battle: Mapped[Battle] = relationship(back_populates="vote")
