"""A voter's battle as the arena process holds it: turns, secret model names, status; and its limits.

The UI keeps a :class:`BattleSession` in server-side ``gr.State``; model names never leave the server
before the vote. The browser keeps only a signed battle token, from which :mod:`arena.resume` rebuilds
the session out of the database after a reload or on another process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from models.base import Message
from storage.vocabulary import ANONY, BattleMode, BattleState
from storage.voter_guards import Voter

Side = Literal["a", "b"]
SIDES: tuple[Side, Side] = ("a", "b")
#: The invalid reason of a battle whose answers were cut off (the voter left, or reloaded, mid-answer).
ABANDONED_REASON = "abandoned before the answers finished"
#: A browser session's battle: "idle" before its first battle, then the stored battle's state.
Status = Literal["idle"] | BattleState


@dataclass
class TurnRecord:
    prompt: str
    images: list[Image.Image]
    answers: dict[Side, str] = field(default_factory=lambda: {"a": "", "b": ""})
    #: The stored turn's id (``turns.id``), once it is written.
    turn_id: int | None = None


@dataclass
class BattleSession:
    """One voter's state across rounds. Kept server side; holds the (secret) model names."""

    session_id: str
    user_agent: str | None = None
    ip_hash: str | None = None
    battle_id: str | None = None
    #: Idempotency token sent with this battle's vote, so a repeated click is not a second vote.
    vote_token: str | None = None
    models: dict[Side, str] = field(default_factory=dict)
    turns: list[TurnRecord] = field(default_factory=list)
    turn_id: int | None = None
    status: Status = "idle"
    winner: str | None = None
    #: The version of the terms of use this voter accepted (None: not yet).
    terms_version: str | None = None
    #: The first identity leak found in this battle's answers: (term, side).
    leak: tuple[str, Side] | None = None
    #: ``anony`` (drawn models, names secret until the vote) or ``named`` (the voter chose them).
    mode: BattleMode = ANONY
    #: How many times the last turn's answers were regenerated (a new sampling seed each time).
    attempt: int = 0
    #: How many answers of this battle were replaced by regenerating, over all its turns.
    superseded: int = 0

    def next_round(self) -> BattleSession:
        """A fresh battle for the same voter (same session, IP hash and accepted terms)."""
        return BattleSession(
            session_id=self.session_id,
            user_agent=self.user_agent,
            ip_hash=self.ip_hash,
            terms_version=self.terms_version,
        )

    @property
    def voter(self) -> Voter:
        return Voter(self.session_id, self.ip_hash)

    def conversation(self, side: Side) -> list[Message]:
        """The conversation as the model on ``side`` saw it: its own earlier answers only."""
        messages: list[Message] = []
        for turn in self.turns:
            messages.append(Message.user(turn.prompt, turn.images))
            if turn.answers[side] and turn is not self.turns[-1]:
                messages.append(Message.assistant(turn.answers[side]))
        return messages

    @property
    def image_count(self) -> int:
        return sum(len(t.images) for t in self.turns)


@dataclass(frozen=True)
class StreamUpdate:
    """The answers so far. ``done`` on the last update; ``failed`` when the battle became invalid."""

    text_a: str
    text_b: str
    done: bool = False
    failed: bool = False


@dataclass(frozen=True)
class Reveal:
    winner: str
    name_a: str
    name_b: str
    display_a: str
    display_b: str
    #: Why this vote will not count, when it will not (e.g. an answer named its model's maker).
    notice: str | None = None


@dataclass(frozen=True)
class Limits:
    max_images: int = 4
    max_prompt_chars: int = 4000
    max_turns: int = 8
    response_timeout_s: float = 300.0
