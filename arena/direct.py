"""Direct chat: one person talks to one model they picked, with images, and rates its answers.

A conversation is one battle in mode ``direct`` (no second model, so no vote and no place on any
leaderboard: :mod:`storage.counts` counts only battles with two models). Every turn passes the same
guards as a battle turn (terms of use, prompt and upload checks, moderation, bans, and the hourly
limit for new conversations), through the :class:`arena.service.BattleService` it is built on, which
also holds the models, the database, the image store and the clock. Answers are rated with 👍 / 👎 /
🚩 and an optional comment each, stored per answer in ``feedback`` (:mod:`storage.feedback`).

The per-browser state is a :class:`arena.battle_session.BattleSession` whose side ``a`` is the chosen
model (side ``b`` stays empty).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from arena.answers import Answer, run_side, store_answer
from arena.battle_session import BattleSession, Side, TurnRecord
from arena.errors import ArenaError
from arena.guards.limits import BANNED_MESSAGE
from arena.guards.moderation import check_turn
from arena.service import BattleService
from models.roster import ModelSpec
from storage import repo, voter_guards
from storage.feedback import MAX_FEEDBACK_COMMENT_CHARS, has_feedback, remove_feedback, set_feedback
from storage.schema import FEEDBACK_KINDS
from storage.vocabulary import DIRECT

log = logging.getLogger(__name__)

#: The one side a direct chat uses.
SIDE: Side = "a"

#: What a person sees when the model fails, times out or its answer is withheld.
DIRECT_FAILURE = "The model could not finish its answer. Press New chat to start again."

#: Feedback kinds that exclude each other: a 👍 replaces an earlier 👎 on the same answer, and back.
OPPOSITE_KIND = {"up": "down", "down": "up"}

#: The moderation flag reason of a 🚩 a person raised (the admin page lists flagged battles).
USER_FLAG_REASON = "user flag (direct chat)"

__all__ = ["DIRECT_FAILURE", "MAX_FEEDBACK_COMMENT_CHARS", "DirectChatService", "DirectUpdate"]


@dataclass(frozen=True)
class DirectUpdate:
    """The answer so far. ``done`` on the last update; ``failed`` when the chat became invalid."""

    text: str
    done: bool = False
    failed: bool = False


class DirectChatService:
    """Direct chats with one chosen model, over the battle service's models, storage and guards."""

    def __init__(self, battle: BattleService) -> None:
        self.battle = battle

    # -- people and models -----------------------------------------------------------------------

    def new_session(self, user_agent: str | None = None, ip: str | None = None) -> BattleSession:
        """A new person (the IP address is kept only as a salted hash, as for battles)."""
        return self.battle.new_session(user_agent, ip)

    def accept_terms(self, state: BattleSession) -> None:
        """Record that this person accepted the current terms of use."""
        self.battle.accept_terms(state)

    def reset(self, state: BattleSession) -> BattleSession:
        """Start a new conversation for the same person."""
        if state.status == "generating":
            raise ArenaError("Please wait until the answer is complete.")
        return state.next_round()

    def models(self) -> dict[str, str]:
        """The models one can chat with now (enabled in the database and healthy): display name → name.

        Sorted by display name; a display name two models share is followed by the model's name.
        """
        settings = self.battle.sampling()
        health = self.battle.health
        usable = [
            spec
            for name, spec in self.battle.specs.items()
            if (stored := settings.get(name)) is not None
            and stored.enabled
            and (health is None or health.is_healthy(name))
        ]
        shown = [spec.display_name or spec.name for spec in usable]
        labels = {
            spec.name: label if shown.count(label) == 1 else f"{label} ({spec.name})"
            for spec, label in zip(usable, shown, strict=True)
        }
        return {label: name for name, label in sorted(labels.items(), key=lambda item: item[1].casefold())}

    def _usable(self, model: str, n_images: int) -> ModelSpec:
        """The roster entry of ``model`` if one may chat with it now with ``n_images`` images in all."""
        spec = self.battle.specs.get(model)
        if spec is None or model not in self.models().values():
            raise ArenaError("This model is not available right now. Please pick another one.")
        if n_images > spec.max_images:
            raise ArenaError(
                f"This model takes at most {spec.max_images} image{'s' if spec.max_images != 1 else ''} "
                "per conversation. Press New chat to start another."
            )
        return spec

    # -- a turn ----------------------------------------------------------------------------------

    def start_turn(
        self,
        state: BattleSession,
        model: str,
        prompt: str,
        uploads: Sequence[bytes] = (),
        names: Sequence[str] = (),
    ) -> None:
        """Validate and record a user turn to ``model`` (by name); the first turn starts the chat.

        Every check passes before anything is written, as for a battle turn: a refused turn leaves no
        file and no row, except the moderation flag that records a refusal for operators.
        """
        battle = self.battle
        if state.status == "generating":
            raise ArenaError("Please wait until the answer is complete.")
        if state.status == "invalid":
            raise ArenaError("This chat has ended. Press New chat to start another.")
        if state.battle_id is not None and state.models.get(SIDE) != model:
            raise ArenaError("This chat is with another model. Press New chat to talk to this one.")
        if len(state.turns) >= battle.limits.max_turns:
            raise ArenaError(f"A chat has at most {battle.limits.max_turns} turns. Press New chat.")
        prompt = battle.check_prompt(state, prompt, len(uploads))
        prepared = battle.prepare_images(uploads, names)
        spec = self._usable(model, state.image_count + len(prepared))
        pictures = [image.open() for image in prepared]
        battle.refuse_if_flagged(state, check_turn(battle.guards.moderator, prompt, pictures))

        new_chat = state.battle_id is None
        battle_id = state.battle_id or secrets.token_hex(16)
        turn_id = battle.record_turn(
            state,
            battle_id=battle_id,
            new_battle=new_chat,
            prompt=prompt,
            prepared=prepared,
            models=(spec.name, None),
            mode=DIRECT,
        )
        state.battle_id = battle_id
        state.models = {SIDE: spec.name}
        state.turns.append(TurnRecord(prompt=prompt, images=pictures, turn_id=turn_id))
        state.turn_id = turn_id
        state.status = "generating"

    async def stream(self, state: BattleSession) -> AsyncIterator[DirectUpdate]:
        """Stream the model's answer to the current turn, then record it.

        If the model fails or times out, or its answer is flagged by moderation, the chat is marked
        invalid and the last update says so. If the consumer goes away mid-stream, generation is
        cancelled and the chat is marked invalid as abandoned.
        """
        if state.status != "generating" or state.turn_id is None:
            raise ArenaError("There is no answer to wait for. Send a prompt first.")
        name = state.models[SIDE]
        answer = Answer(started_at=self.battle.now())
        changed: asyncio.Queue[Side | None] = asyncio.Queue()
        runner = run_side(
            self.battle.backends[name],
            state.conversation(SIDE),
            self.battle.specs[name].generation.to_params(),
            answer,
            changed,
            side=SIDE,
            timeout_s=self.battle.limits.response_timeout_s,
            now=self.battle.now,
            label=f"direct chat {state.battle_id}: model {name}",
        )
        task = asyncio.create_task(runner)
        try:
            finished = False
            while not finished:
                finished = await changed.get() is None
                while not changed.empty():  # coalesce bursts into one update
                    finished |= changed.get_nowait() is None
                if not finished:
                    yield DirectUpdate(answer.text)
            await task
        except BaseException:
            task.cancel()
            self._finish_turn(state, answer, abandoned=True)
            raise
        failed, shown = await asyncio.to_thread(self._finish_turn, state, answer, abandoned=False)
        state.turns[-1].answers[SIDE] = shown
        yield DirectUpdate(shown, done=True, failed=failed)

    def _finish_turn(self, state: BattleSession, answer: Answer, *, abandoned: bool) -> tuple[bool, str]:
        """Record the response and move the chat to ready or invalid; return (invalid, text kept)."""
        battle = self.battle
        turn_id, battle_id = state.turn_id, state.battle_id
        assert turn_id is not None and battle_id is not None, "only a started turn is finished"
        reason = "abandoned before the answer finished" if abandoned else None
        if answer.error:
            reason = "model failure"
        elif not abandoned and not answer.text.strip():
            reason = "empty answer"
        flagged = None
        if not abandoned and answer.text:
            verdict = battle.guards.moderator.check_text(answer.text)
            if verdict.flagged:
                flagged, reason = verdict, "answer flagged by moderation"
        kept = "" if flagged is not None else answer.text  # a flagged answer is not kept; the flag says why
        now = battle.now()
        with battle.sessions.begin() as db:
            store_answer(
                db,
                answer,
                turn_id=turn_id,
                side=SIDE,
                model_id=battle.model_ids[state.models[SIDE]],
                session_id=state.session_id,
                battle_id=battle_id,
                flagged=flagged,
                abandoned=abandoned,
                now=now,
                label="direct answer",
            )
            repo.set_battle_state(db, battle_id, "invalid" if reason else "ready", now, reason)
        state.status = "invalid" if reason else "ready"
        return reason is not None, kept

    # -- feedback --------------------------------------------------------------------------------

    def feedback(
        self, state: BattleSession, kind: str, comment: str | None = None, *, answer: int | None = None
    ) -> None:
        """Store 👍 (``up``), 👎 (``down``) or 🚩 (``flag``) on one answer, with an optional comment.

        ``answer`` is the 0-based position of the model's answer in this chat (None: the latest one).
        One of each kind per answer and person: the same kind again replaces the comment (a blank one
        keeps the earlier comment). 👍 and 👎 on the same answer exclude each other, the later one
        wins. A 🚩 also puts the chat on the operators' list of flagged battles, once per chat.
        """
        if kind not in FEEDBACK_KINDS:
            raise ArenaError(f"Unknown feedback {kind!r}.")
        comment = (comment or "").strip()
        if len(comment) > MAX_FEEDBACK_COMMENT_CHARS:
            raise ArenaError(f"Please keep the comment under {MAX_FEEDBACK_COMMENT_CHARS} characters.")
        battle_id, turn_id = self._rated(state, answer)
        now = self.battle.now()
        with self.battle.sessions.begin() as db:
            self._admit_feedback(db, state)
            if kind in OPPOSITE_KIND:
                remove_feedback(
                    db,
                    battle_id=battle_id,
                    turn_id=turn_id,
                    session_id=state.session_id,
                    kinds=[OPPOSITE_KIND[kind]],
                )
            # The chat reaches the operators' list with its first 🚩, whichever answer it is on.
            first_flag = kind == "flag" and not has_feedback(db, battle_id=battle_id, kind="flag")
            set_feedback(
                db,
                battle_id=battle_id,
                turn_id=turn_id,
                session_id=state.session_id,
                kind=kind,
                comment=comment,
                now=now,
            )
            if first_flag:
                voter_guards.flag(
                    db,
                    reason=USER_FLAG_REASON,
                    detail=comment or None,
                    session_id=state.session_id,
                    battle_id=battle_id,
                    now=now,
                )

    def withdraw_feedback(self, state: BattleSession, *, answer: int | None = None) -> int:
        """Take back this person's 👍 or 👎 on one answer (None: the latest); return how many went.

        A 🚩 is not withdrawn: operators have already been told.
        """
        battle_id, turn_id = self._rated(state, answer)
        with self.battle.sessions.begin() as db:
            self._admit_feedback(db, state)
            return remove_feedback(
                db,
                battle_id=battle_id,
                turn_id=turn_id,
                session_id=state.session_id,
                kinds=list(OPPOSITE_KIND),
            )

    def _rated(self, state: BattleSession, answer: int | None) -> tuple[str, int]:
        """The chat and the stored turn of answer number ``answer`` (None: the latest), if it can be rated."""
        if state.status == "generating" and (answer is None or answer >= len(state.turns) - 1):
            raise ArenaError("Please wait until the answer is complete.")
        battle_id = state.battle_id
        if battle_id is None or not state.turns:
            raise ArenaError("There is no answer to rate yet.")
        index = len(state.turns) - 1 if answer is None else answer
        if not 0 <= index < len(state.turns):
            raise ArenaError(
                f"There is no answer {index + 1} in this chat (it has {len(state.turns)}). "
                "Please rate one of the answers shown."
            )
        turn_id = state.turns[index].turn_id
        assert turn_id is not None, "a chat's turns are stored before they are answered"
        return battle_id, turn_id

    def _admit_feedback(self, db: Session, state: BattleSession) -> None:
        """Refuse feedback from a banned person; serialise it with their other writes."""
        voter_guards.lock_voter(db, state.voter)
        if voter_guards.is_banned(db, state.voter):
            raise ArenaError(BANNED_MESSAGE)
