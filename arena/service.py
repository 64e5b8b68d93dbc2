"""The battle service: pair sampling, concurrent streaming, persistence and voting.

Gradio callbacks in ``arena/ui`` are thin wrappers over this module; everything here runs (and is
tested) without a browser. A voter's progress lives in a :class:`BattleSession`, which the UI keeps in
server-side ``gr.State``: model names are held there and never sent to the page before the vote.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session, sessionmaker

from arena.answers import Answer, run_side, store_answer
from arena.battle_session import (
    ABANDONED_REASON,
    SIDES,
    BattleSession,
    Limits,
    Reveal,
    Side,
    StreamUpdate,
    TurnRecord,
)
from arena.errors import ArenaError
from arena.guards.identity import IDENTITY_QUESTION_TAG, is_identity_question
from arena.guards.limits import BANNED_MESSAGE, limit_message
from arena.guards.moderation import NEUTRAL_REFUSAL, ModerationResult, check_turn
from arena.guards.policy import GuardPolicy
from arena.model_settings import ModelSampling, model_seed
from arena.sampling import PairSampler, targets_of
from models.base import ModelBackend
from models.health import HealthMonitor
from models.roster import ModelSpec
from models.wrapper import ManagedBackend
from storage import repo, voter_guards
from storage.db import run_in_transaction
from storage.images import ImageRejected, ImageStore, PreparedImage, StoredImage
from storage.schema import Image as ImageRow
from storage.schema import ModelRow
from storage.sql import utc_now
from storage.vocabulary import ANONY, NAMED

log = logging.getLogger(__name__)

#: What a voter sees when a model fails: never which model, provider or exception.
NEUTRAL_FAILURE = (
    "One of the models could not finish its answer, so this battle will not count. "
    "Please press New round to start another."
)


#: The longest reason a voter may give for a vote (WildVision-Arena asks for one too).
MAX_VOTE_REASON_CHARS = 500


class BattleService:
    """Runs anonymous battles between the roster's models and records them.

    Which loaded models battles may draw, and how often, follows the ``models`` rows (enabled,
    sampling weight, deprecated), which operators change from the admin page or the command line:
    the service reads them again when the last read is older than ``model_refresh_s`` seconds of
    ``clock``, so every arena process on one database applies a change within that interval.
    """

    def __init__(
        self,
        *,
        specs: Sequence[ModelSpec],
        backends: Mapping[str, ModelBackend],
        sessions: sessionmaker[Session],
        images: ImageStore,
        rng: random.Random,
        now: Callable[[], datetime] = utc_now,
        limits: Limits | None = None,
        ip_salt: bytes = b"",
        health: HealthMonitor | None = None,
        model_refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        guards: GuardPolicy | None = None,
        sampler: PairSampler | None = None,
    ) -> None:
        self.specs = {s.name: s for s in specs if s.name in backends}
        self.sampler = sampler or PairSampler(targets=targets_of(specs))
        #: Leak terms come from the whole roster (a model not loaded here may still be named).
        self.guards = guards or GuardPolicy.for_roster(specs)
        self.health = health
        # Every request goes through the wrapper: the model's time limits, retries and accounting.
        self.backends = {
            name: ManagedBackend.for_spec(spec, backends[name], health=health)
            for name, spec in self.specs.items()
        }
        self.sessions = sessions
        self.images = images
        self.rng = rng
        self.now = now
        self.limits = limits or Limits()
        self.ip_salt = ip_salt
        # A vote is checked (ban, daily limit) and written in one transaction, under the voter's lock.
        self._vote_engine = sessions.kw["bind"]
        with self.sessions.begin() as db:
            self.model_ids = repo.sync_models(db, [model_seed(s) for s in self.specs.values()], self.now())
        self.model_refresh_s = model_refresh_s
        self.clock = clock
        self._refreshing = threading.Lock()
        self._sampling: dict[str, ModelSampling] = {}
        self._sampling_read_at = -math.inf
        self.refresh_models()

    # -- sessions and sampling -------------------------------------------------------------------

    def new_session(self, user_agent: str | None = None, ip: str | None = None) -> BattleSession:
        """A new voter. The IP address is kept only as a salted hash (to spot vote stuffing)."""
        ip_hash = hmac.new(self.ip_salt, ip.encode(), hashlib.sha256).hexdigest() if ip else None
        return BattleSession(session_id=secrets.token_hex(16), user_agent=user_agent, ip_hash=ip_hash)

    def reset(self, state: BattleSession) -> BattleSession:
        """Start a new round for the same voter."""
        if state.status == "generating":
            raise ArenaError("Please wait until both answers are complete.")
        return state.next_round()

    def accept_terms(self, state: BattleSession) -> None:
        """Record that this voter accepted the current terms of use (stored with the voter session)."""
        terms = self.guards.terms
        if terms is None:
            return
        with self.sessions.begin() as db:
            voter_guards.accept_terms(db, state.voter, state.user_agent, terms.version, self.now())
        state.terms_version = terms.version

    def refresh_models(self) -> dict[str, ModelSampling]:
        """Read the loaded models' sampling settings from the database now.

        If the read fails, the previous settings stay in force (battles go on) and the next draw
        after ``model_refresh_s`` tries again.
        """
        self._sampling_read_at = self.clock()
        try:
            with self.sessions() as db:
                rows = db.execute(
                    select(
                        ModelRow.name, ModelRow.enabled, ModelRow.sampling_weight, ModelRow.deprecated
                    ).where(ModelRow.name.in_(list(self.specs)))
                ).all()
        except Exception:
            log.exception("could not read the models' settings; keeping the previous ones")
            return self._sampling
        self._sampling = {
            name: ModelSampling(bool(enabled), float(weight), bool(deprecated))
            for name, enabled, weight, deprecated in rows
        }
        return self._sampling

    def sampling(self) -> dict[str, ModelSampling]:
        """The models' sampling settings, read again first when the last read is too old."""
        if self.clock() - self._sampling_read_at >= self.model_refresh_s and self._refreshing.acquire(
            blocking=False
        ):
            try:  # one thread re-reads; the others draw with the settings they have
                return self.refresh_models()
            finally:
                self._refreshing.release()
        return self._sampling

    def available(
        self, spec: ModelSpec, n_images: int = 0, settings: Mapping[str, ModelSampling] | None = None
    ) -> bool:
        """Whether a model can be drawn now: enabled, weighted and not deprecated (per the database),
        healthy, and able to take the images."""
        stored = (self.sampling() if settings is None else settings).get(spec.name)
        healthy = self.health is None or self.health.is_healthy(spec.name)
        return stored is not None and stored.drawable and spec.max_images >= n_images and healthy

    def sample_pair(self, n_images: int = 0) -> tuple[str, str]:
        """Two distinct available models, drawn by the sampling policy (arena.sampling) over their
        weights in the database, in random sides."""
        settings = self.sampling()
        pool = {
            s.name: settings[s.name].sampling_weight
            for s in self.specs.values()
            if self.available(s, n_images, settings)
        }
        if len(pool) < 2:
            raise ArenaError("Not enough models are available for a battle right now. Please try later.")
        return self.sampler.draw(pool, self.rng)

    def _chosen_pair(self, models: tuple[str, str], n_images: int) -> tuple[str, str]:
        """The voter's two chosen models for a named battle, if both may battle now."""
        model_a, model_b = models
        if model_a == model_b:
            raise ArenaError("Please choose two different models.")
        for name in models:
            spec = self.specs.get(name)
            if spec is None or not self.available(spec, n_images):
                raise ArenaError(f"{name} is not available for a battle right now. Please choose another.")
        return model_a, model_b

    # -- a turn ----------------------------------------------------------------------------------

    def start_turn(
        self,
        state: BattleSession,
        prompt: str,
        uploads: Sequence[bytes] = (),
        names: Sequence[str] = (),
        tags: Sequence[str] = (),
        models: tuple[str, str] | None = None,
    ) -> None:
        """Validate and record a user turn; starts a battle on the first turn of a round.

        With ``models`` (side A, side B) the battle this turn starts is a ``named`` one between the
        voter's chosen models, under the same checks; otherwise an anonymous one between drawn models.

        Every check of the whole turn (prompt, each image, moderation, ban, rate limit) passes before
        anything is written: a refused turn leaves no file and no row, except the moderation flag
        that records a refusal for operators. ``names`` are the uploads' file names, for messages;
        ``tags`` label a battle this turn starts (e.g. ``example``: started from a bundled example).
        """
        prompt = self.check_prompt(state, prompt, len(uploads))
        prepared = self.prepare_images(uploads, names)
        pictures = [image.open() for image in prepared]
        self.refuse_if_flagged(state, check_turn(self.guards.moderator, prompt, pictures))

        battle_id = state.battle_id
        new_battle = battle_id is None
        if battle_id is None:
            mode = ANONY if models is None else NAMED
            model_a, model_b = (
                self.sample_pair(len(prepared))
                if models is None
                else self._chosen_pair(models, len(prepared))
            )
            battle_id = secrets.token_hex(16)
        else:
            mode, model_a, model_b = state.mode, state.models["a"], state.models["b"]
            total = state.image_count + len(prepared)
            if total > min(self.specs[model_a].max_images, self.specs[model_b].max_images):
                raise ArenaError("This battle cannot take more images. Press New round to start another.")

        turn_id = self.record_turn(
            state,
            battle_id=battle_id,
            new_battle=new_battle,
            prompt=prompt,
            prepared=prepared,
            models=(model_a, model_b),
            mode=mode,
            tags=tags,
        )
        if new_battle:
            state.vote_token = secrets.token_hex(16)
        state.battle_id = battle_id
        state.mode = mode
        state.models = {"a": model_a, "b": model_b}
        state.turns.append(TurnRecord(prompt=prompt, images=pictures, turn_id=turn_id))
        state.turn_id = turn_id
        state.attempt = 0
        state.status = "generating"

    def record_turn(
        self,
        state: BattleSession,
        *,
        battle_id: str,
        new_battle: bool,
        prompt: str,
        prepared: Sequence[PreparedImage],
        models: tuple[str, str | None],
        mode: str,
        tags: Sequence[str] = (),
    ) -> int:
        """Write a turn whose every check passed, in one transaction; return its id.

        The voter is admitted first (ban, and the hourly limit for a new battle); a new battle is
        created with ``models`` (B is None for a direct chat) in ``mode``; the images are written
        only then. If anything fails, the files this turn created are removed again.
        """
        now = self.now()
        written: list[StoredImage] = []
        try:
            with self.sessions.begin() as db:
                self._admit(db, state, new_battle, now)
                if new_battle:
                    repo.ensure_voter_session(db, state.session_id, state.user_agent, now, state.ip_hash)
                    repo.create_battle(
                        db,
                        battle_id=battle_id,
                        model_a_id=self.model_ids[models[0]],
                        model_b_id=None if models[1] is None else self.model_ids[models[1]],
                        session_id=state.session_id,
                        now=now,
                        mode=mode,
                    )
                written = [self.images.write(image) for image in prepared]
                repo.add_images(db, written, now)
                turn = repo.add_turn(
                    db,
                    battle_id=battle_id,
                    index=len(state.turns),
                    prompt=prompt,
                    image_hashes=[img.sha256 for img in written],
                    now=now,
                )
                if is_identity_question(prompt):
                    voter_guards.add_tag(db, battle_id, IDENTITY_QUESTION_TAG)
                for tag in tags if new_battle else ():
                    voter_guards.add_tag(db, battle_id, tag)
        except BaseException:
            self._discard_unreferenced(written)
            raise
        return turn.id

    def regenerate(self, state: BattleSession) -> None:
        """Ask both models again for the last turn's answers, before the vote; :meth:`stream` then
        streams the new ones. The answers replaced stay stored, marked superseded; the vote applies
        to the answers shown."""
        if state.status != "ready" or state.battle_id is None or state.turn_id is None:
            raise ArenaError("Answers can be regenerated once both are complete, before the vote.")
        now = self.now()
        with self.sessions.begin() as db:
            self._admit(db, state, False, now)
            if not repo.supersede_answers(db, state.battle_id, state.turn_id, now):
                raise ArenaError("This battle can no longer be regenerated. Press New round.")
        state.turns[-1].answers = {side: "" for side in SIDES}
        state.attempt += 1
        state.superseded += 2
        state.status = "generating"

    def _discard_unreferenced(self, written: Sequence[StoredImage]) -> None:
        """After a failed turn, remove the files it created that no committed image row refers to.

        Another turn may have committed the same picture meanwhile; its row keeps the file. If the
        database cannot be asked, the files stay (an unreferenced file is harmless).
        """
        created = [image for image in written if image.created]
        if not created:
            return
        try:
            with self.sessions() as db:
                known = set(
                    db.scalars(
                        select(ImageRow.sha256).where(ImageRow.sha256.in_([i.sha256 for i in created]))
                    )
                )
        except Exception:
            log.warning("could not check the images of a failed turn; leaving %d file(s)", len(created))
            return
        for image in created:
            if image.sha256 not in known:
                self.images.discard(image)

    def check_prompt(self, state: BattleSession, prompt: str, n_uploads: int) -> str:
        """The stripped prompt, if this voter may send it now; otherwise an ArenaError saying why."""
        if state.status == "generating":
            raise ArenaError("Please wait until both answers are complete.")
        if state.status in ("voted", "invalid"):
            raise ArenaError("This battle is over. Press New round to start another.")
        terms = self.guards.terms
        if terms is not None and state.terms_version != terms.version:
            raise ArenaError("Please read and accept the terms of use before your first battle.")
        prompt = (prompt or "").strip()
        if not prompt:
            raise ArenaError("Please write a prompt.")
        if len(prompt) > self.limits.max_prompt_chars:
            raise ArenaError(f"The prompt is longer than {self.limits.max_prompt_chars} characters.")
        if n_uploads > self.limits.max_images:
            raise ArenaError(f"Please upload at most {self.limits.max_images} images per turn.")
        if len(state.turns) >= self.limits.max_turns:
            raise ArenaError(f"A battle has at most {self.limits.max_turns} turns. Please vote.")
        return prompt

    def prepare_images(self, uploads: Sequence[bytes], names: Sequence[str]) -> list[PreparedImage]:
        """Check and clean every upload in memory; the first bad one refuses the turn, naming it."""
        prepared: list[PreparedImage] = []
        for position, data in enumerate(uploads, start=1):
            label = f"Image {position}"
            if position <= len(names) and names[position - 1]:
                label += f" ({names[position - 1]})"
            try:
                prepared.append(self.images.prepare(data))
            except ImageRejected as exc:
                raise ArenaError(f"{label}: {exc}.") from exc
        return prepared

    def refuse_if_flagged(self, state: BattleSession, result: ModerationResult) -> None:
        """Refuse a flagged turn with a neutral message, recording the flag for operators."""
        if not result.flagged:
            return
        now = self.now()
        with self.sessions.begin() as db:
            repo.ensure_voter_session(db, state.session_id, state.user_agent, now, state.ip_hash)
            voter_guards.flag(
                db,
                reason=f"{result.provider}: {result.category or 'flagged'} (prompt)",
                detail=result.detail,
                session_id=state.session_id,
                battle_id=state.battle_id,
                now=now,
            )
        log.info("session %s: turn refused by %s moderation", state.session_id, result.provider)
        raise ArenaError(NEUTRAL_REFUSAL)

    def _admit(self, db: Session, state: BattleSession, new_battle: bool, now: datetime) -> None:
        """Refuse a banned voter, or a new battle past the voter's hourly limit (inside the write)."""
        voter_guards.lock_voter(db, state.voter)
        if voter_guards.is_banned(db, state.voter):
            raise ArenaError(BANNED_MESSAGE)
        if new_battle:
            reached = voter_guards.battle_limit(db, state.voter, self.guards.limits.battles_per_hour, now)
            if reached is not None:
                raise ArenaError(limit_message("new battles", reached, now))

    async def stream(self, state: BattleSession) -> AsyncIterator[StreamUpdate]:
        """Stream both answers to the current turn at the same time, then record them.

        If either model fails or times out, the battle is marked invalid (no vote accepted) and the
        last update says so without naming anyone. If the consumer goes away mid-stream, generation is
        cancelled and the battle is marked invalid as abandoned.
        """
        if state.status != "generating" or state.turn_id is None:
            raise ArenaError("There is no answer to wait for. Send a prompt first.")
        turn = state.turns[-1]
        answers = {side: Answer(started_at=self.now()) for side in SIDES}
        changed: asyncio.Queue[Side | None] = asyncio.Queue()
        tasks = [asyncio.create_task(self._run_side(state, side, answers[side], changed)) for side in SIDES]
        try:
            running = len(tasks)
            while running:
                item = await changed.get()
                running -= item is None
                while not changed.empty():  # coalesce bursts into one update
                    running -= changed.get_nowait() is None
                yield StreamUpdate(answers["a"].text, answers["b"].text)
        except BaseException:
            for task in tasks:
                task.cancel()
            self._finish_turn(state, answers, abandoned=True)
            raise
        for side in SIDES:
            turn.answers[side] = answers[side].text
        failed = await asyncio.to_thread(self._finish_turn, state, answers, abandoned=False)
        yield StreamUpdate(answers["a"].text, answers["b"].text, done=True, failed=failed)

    async def _run_side(
        self, state: BattleSession, side: Side, answer: Answer, changed: asyncio.Queue[Side | None]
    ) -> None:
        name = state.models[side]
        await run_side(
            self.backends[name],
            state.conversation(side),
            # A regenerated answer is drawn with another seed (a seeded backend would repeat itself).
            self.specs[name].generation.to_params(seed=state.attempt or None),
            answer,
            changed,
            side=side,
            timeout_s=self.limits.response_timeout_s,
            now=self.now,
            label=f"battle {state.battle_id} side {side}: model {name}",
        )

    def _finish_turn(self, state: BattleSession, answers: dict[Side, Answer], *, abandoned: bool) -> bool:
        """Record both responses and move the battle to ready or invalid; return True if invalid."""
        turn_id, battle_id = state.turn_id, state.battle_id
        assert turn_id is not None and battle_id is not None, "only a started turn is finished"
        errors = [a.error for a in answers.values() if a.error]
        reason = ABANDONED_REASON if abandoned else None
        if errors:
            reason = "model failure"
        if not abandoned and not errors and not all(a.text.strip() for a in answers.values()):
            reason = "empty answer"
        # Abandoned turns are not checked: the battle is void, and this runs on the event loop.
        flags = {} if abandoned else self._moderate_answers(answers)
        if flags:
            reason = "answer flagged by moderation"
        leak = None if reason or abandoned else self._find_leak(state, answers)
        now = self.now()
        with self.sessions.begin() as db:
            for side in SIDES:
                store_answer(
                    db,
                    answers[side],
                    turn_id=turn_id,
                    side=side,
                    model_id=self.model_ids[state.models[side]],
                    session_id=state.session_id,
                    battle_id=battle_id,
                    flagged=flags.get(side),
                    abandoned=abandoned,
                    now=now,
                    label=f"answer {side}",
                )
            repo.set_battle_state(db, battle_id, "invalid" if reason else "ready", now, reason)
            if leak is not None and state.leak is None:
                voter_guards.mark_identity_leak(db, battle_id, *leak)
        if leak is not None and state.leak is None:
            state.leak = leak
        state.status = "invalid" if reason else "ready"
        return reason is not None

    def _moderate_answers(self, answers: dict[Side, Answer]) -> dict[Side, ModerationResult]:
        """The answers the moderation provider flags, by side."""
        results = {side: self.guards.moderator.check_text(a.text) for side, a in answers.items() if a.text}
        return {side: result for side, result in results.items() if result.flagged}

    def _find_leak(self, state: BattleSession, answers: dict[Side, Answer]) -> tuple[str, Side] | None:
        """The first identity term an answer of this turn names that none of the voter's prompts did."""
        prompts = [turn.prompt for turn in state.turns]
        for side in SIDES:
            term = self.guards.identity.find(answers[side].text, prompts)
            if term is not None:
                log.info("battle %s: side %s named %r; its vote will not count", state.battle_id, side, term)
                return term, side
        return None

    # -- voting ----------------------------------------------------------------------------------

    def vote(self, state: BattleSession, winner: str, reason: str | None = None) -> Reveal:
        """Record the battle's one vote, then reveal who was who.

        The database decides: the battle must be ready, and a second vote is refused by the unique
        constraint on votes, whichever process or replica it comes from. The same click arriving
        twice carries the same token and gets the same answer.
        """
        if state.battle_id is None:
            raise ArenaError("There is no battle to vote on yet.")
        battle_id = state.battle_id

        def record(db: Connection) -> repo.RecordedVote:
            now = self.now()
            ready_at = repo.ready_since(db, battle_id)
            if ready_at is not None:  # not a retry of a vote already recorded: check the voter
                self._admit_vote(db, state, now)
            return repo.record_vote(
                db,
                battle_id=battle_id,
                winner=winner,
                session_id=state.session_id,
                now=now,
                reason=reason,
                client_token=state.vote_token,
                decision_s=None if ready_at is None else max(0.0, (now - ready_at).total_seconds()),
            )

        try:
            # A dropped connection or a lock timeout is retried; the vote token makes that safe.
            winner = run_in_transaction(self._vote_engine, record).winner
        except repo.VoteRejected as exc:
            message = str(exc)
            raise ArenaError(message if message == BANNED_MESSAGE else f"Vote not recorded: {exc}.") from exc
        state.status = "voted"
        state.winner = winner
        return self.reveal(state)

    def add_reason(self, state: BattleSession, reason: str) -> None:
        """Store the voter's optional reason with the vote just cast (at most MAX_VOTE_REASON_CHARS)."""
        reason = (reason or "").strip()
        if state.status != "voted" or state.battle_id is None:
            raise ArenaError("A reason can be added after the vote.")
        if len(reason) > MAX_VOTE_REASON_CHARS:
            raise ArenaError(f"Please keep the reason under {MAX_VOTE_REASON_CHARS} characters.")
        with self.sessions.begin() as db:
            if not repo.set_vote_reason(db, state.battle_id, state.session_id, reason):
                raise ArenaError("There is no vote of yours to add a reason to.")

    def _admit_vote(self, db: Connection, state: BattleSession, now: datetime) -> None:
        """Refuse a banned voter's vote, or one past the voter's daily limit (inside the vote's write)."""
        voter_guards.lock_voter(db, state.voter)
        if voter_guards.is_banned(db, state.voter):
            raise repo.VoteRejected(BANNED_MESSAGE)
        reached = voter_guards.vote_limit(db, state.voter, self.guards.limits.votes_per_day, now)
        if reached is not None:
            raise ArenaError(limit_message("votes", reached, now))

    def reveal(self, state: BattleSession) -> Reveal:
        if state.status != "voted" or state.winner is None:
            raise ArenaError("Model names are shown after the vote.")
        a, b = self.specs[state.models["a"]], self.specs[state.models["b"]]
        notice = None
        if state.leak is not None:
            term, side = state.leak
            notice = (
                f"Model {side.upper()}'s answer named “{term}”, which gives away who made it, "
                "so this vote will not count towards the leaderboard."
            )
        return Reveal(
            state.winner, a.name, b.name, a.display_name or a.name, b.display_name or b.name, notice=notice
        )
