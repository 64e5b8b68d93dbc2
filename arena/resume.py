"""Battles that survive a page reload, a restart, or a request served by another arena process.

The browser keeps only an opaque, signed **battle token** (in ``gr.BrowserState``): the voter session,
the battle (if one is running) and the tab's mode, with the time it was issued, signed with HMAC-SHA256
under the arena's secret key (``ARENA_SECRET_KEY``, else a key kept in the data folder). It names no
model. On a reload, or when a process holds no state for the request, :func:`resume` checks the token
and rebuilds the voter's :class:`~arena.battle_session.BattleSession` from the database: the turns,
their images, the answers shown, the vote. The model names stay on the server, as before the reload;
the database still takes exactly one vote per battle.

A token that is forged, garbled, expired (``ARENA_BATTLE_TOKEN_TTL_H``), of another tab's mode, or
whose battle belongs to another voter, resumes nothing: the page starts afresh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from PIL import Image

from arena.battle_session import ABANDONED_REASON, SIDES, BattleSession, Status, TurnRecord
from storage.battle_state import StoredBattle, battle_progress, load_battle, load_voter
from storage.images import suffix_of
from storage.vocabulary import BATTLE_MODES, GENERATING, BattleMode

if TYPE_CHECKING:
    from arena.service import BattleService

log = logging.getLogger(__name__)

TOKEN_VERSION = "v1"
#: Longer than any token this module issues; anything longer is refused unread.
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class TokenClaims:
    """What a valid battle token says."""

    session_id: str
    battle_id: str | None
    mode: BattleMode
    issued_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BattleTokens:
    """Issues and checks battle tokens under one key (every arena process of a database shares it)."""

    def __init__(self, key: bytes, *, ttl_s: float = 24 * 3600.0, clock: Callable[[], float] = time.time):
        if len(key) < 16:
            raise ValueError("the battle-token key must be at least 16 bytes")
        if ttl_s <= 0:
            raise ValueError("the battle-token lifetime must be positive")
        self._key = hashlib.sha256(b"vlm-arena battle token\0" + key).digest()
        self.ttl_s = ttl_s
        self.clock = clock

    @classmethod
    def ephemeral(cls) -> BattleTokens:
        """Tokens under a random key: valid for this process only (tests, embedded use)."""
        return cls(secrets.token_bytes(32))

    @property
    def browser_secret(self) -> str:
        """The value for ``gr.BrowserState(secret=...)``: the same on every process with this key, so
        any of them reads what the browser stored. Gradio hands it to the page, so it is derived one
        way from the key and protects nothing; the token's own signature does."""
        return hmac.new(self._key, b"browser-state", hashlib.sha256).hexdigest()[:32]

    def issue(self, state: BattleSession, mode: BattleMode) -> str:
        """A token for this voter and their current battle (if any) in a tab of ``mode``."""
        claims = {"s": state.session_id, "b": state.battle_id, "m": mode, "t": int(self.clock())}
        body = TOKEN_VERSION + "." + _b64(json.dumps(claims, separators=(",", ":")).encode())
        return body + "." + _b64(self._sign(body))

    def read(self, token: object, mode: BattleMode) -> TokenClaims | None:
        """The claims of a valid, unexpired token of ``mode``; None for anything else (logged)."""
        if token is None or token == "":
            return None
        claims = self._verified(token)
        if claims is None:
            log.warning("a battle token failed its check; starting afresh")
            return None
        if claims.mode != mode:
            return None
        age = self.clock() - claims.issued_at
        if age > self.ttl_s or age < -300:
            log.info("an expired battle token (%.0f s old); starting afresh", age)
            return None
        return claims

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()

    def _verified(self, token: object) -> TokenClaims | None:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            return None
        version, payload, signature = token.split(".")
        body = f"{version}.{payload}"
        try:
            if version != TOKEN_VERSION or not hmac.compare_digest(_unb64(signature), self._sign(body)):
                return None
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError, UnicodeError):
            return None
        if not isinstance(claims, dict):
            return None
        session, battle, mode, issued = (claims.get(k) for k in ("s", "b", "m", "t"))
        valid = (
            isinstance(session, str)
            and (battle is None or isinstance(battle, str))
            and mode in BATTLE_MODES
            and isinstance(issued, int)
        )
        if not valid:
            return None
        return TokenClaims(cast(str, session), battle, cast(BattleMode, mode), float(cast(int, issued)))


@dataclass(frozen=True)
class Resumed:
    """A voter's state rebuilt from the database, with what the page needs to show it."""

    state: BattleSession
    #: each turn's image files, for the chat windows (copies the web server may serve)
    image_paths: list[list[str]]
    #: True when the stored battle could not be taken up again (its answers were cut off, or a model
    #: left the arena); the state is then a fresh round for the same voter
    interrupted: bool = False


def resume(service: BattleService, tokens: BattleTokens, token: Any, mode: BattleMode) -> Resumed | None:
    """The voter's state behind ``token`` in a tab of ``mode``, rebuilt from the database; None if the
    token resumes nothing (missing, invalid, expired, or its voter is unknown)."""
    claims = tokens.read(token, mode)
    if claims is None:
        return None
    with service.sessions() as db:
        voter = load_voter(db, claims.session_id)
        battle = load_battle(db, claims.battle_id) if voter is not None and claims.battle_id else None
    if voter is None:
        return None
    fresh = BattleSession(
        session_id=voter.session_id,
        user_agent=voter.user_agent,
        ip_hash=voter.ip_hash,
        terms_version=voter.terms_version,
    )
    if battle is None:
        return Resumed(fresh, [])
    if battle.session_id != voter.session_id or battle.mode != mode:
        log.warning("battle token for %s names battle %s of another voter or mode", voter.session_id, battle.id)
        return Resumed(fresh, [])
    models = [battle.model_a, battle.model_b]
    cut_off = battle.state == GENERATING or battle.invalid_reason == ABANDONED_REASON
    if cut_off or not battle.turns or any(name not in service.specs for name in models):
        # Cut off mid-answer (the stream ended with the page), or a model this process does not serve.
        return Resumed(fresh, [], interrupted=True)
    return _rebuilt(service, fresh, battle)


def in_sync(service: BattleService, state: BattleSession) -> bool:
    """Whether the battle this process holds is the battle as stored: no other process has since
    added a turn, regenerated answers, taken the vote, or finished the answers. A state without a
    battle is always in sync. One small query."""
    if state.battle_id is None:
        return True
    with service.sessions() as db:
        progress = battle_progress(db, state.battle_id)
    return progress == (state.status, len(state.turns), state.superseded)


def current_state(
    service: BattleService, tokens: BattleTokens, held: BattleSession | None, token: Any, mode: BattleMode
) -> BattleSession | None:
    """The voter's state for a request: what this process holds if it is still in step with the
    database, else the state the browser's token rebuilds (a reload, a restart, another process having
    served the voter meanwhile). None when there is neither."""
    if held is not None and in_sync(service, held):
        return held
    resumed = resume(service, tokens, token, mode)
    if resumed is None:
        return held
    return resumed.state


def _rebuilt(service: BattleService, state: BattleSession, battle: StoredBattle) -> Resumed:
    assert battle.model_b is not None, "only two-model battles are resumed"
    state.battle_id = battle.id
    state.mode = cast(BattleMode, battle.mode)
    state.models = {"a": battle.model_a, "b": battle.model_b}
    state.status = cast(Status, battle.state)
    state.winner = battle.winner
    state.vote_token = secrets.token_hex(16)
    if battle.identity_leak_term and battle.identity_leak_side in SIDES:
        state.leak = (battle.identity_leak_term, "a" if battle.identity_leak_side == "a" else "b")
    paths: list[list[str]] = []
    for turn in battle.turns:
        stored = [(sha, service.images.read(sha)) for sha in turn.image_hashes]
        found = [(sha, data) for sha, data in stored if data is not None]
        record = TurnRecord(prompt=turn.prompt, images=[_decoded(data) for _, data in found], turn_id=turn.id)
        record.answers = {side: turn.answers.get(side, "") for side in SIDES}
        state.turns.append(record)
        paths.append([str(_servable_copy(sha, data)) for sha, data in found])
    state.turn_id = battle.turns[-1].id
    state.attempt = battle.turns[-1].regenerations
    state.superseded = 2 * sum(turn.regenerations for turn in battle.turns)
    return Resumed(state, paths)


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


#: Where resumed images are copied for the page: Gradio serves files under the temporary folder.
_SERVED = Path(tempfile.gettempdir()) / "vlm-arena-resumed"


def _servable_copy(sha256: str, data: bytes) -> Path:
    """A copy of a stored image under the temporary folder (content-addressed: written once), which
    works whether the image store is a directory or a remote fsspec URL."""
    target = _SERVED / f"{sha256}{suffix_of(data)}"
    if not target.exists():
        _SERVED.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        staging.write_bytes(data)
        staging.replace(target)
    return target


__all__ = ["BattleTokens", "Resumed", "TokenClaims", "current_state", "in_sync", "resume"]
