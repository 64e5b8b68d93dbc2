"""One side of a battle turn as it streams: the answer record and the runner that fills it in.

The battle service streams both sides at once with :func:`run_side` and records each
:class:`Answer` when the turn ends (first answers and regenerated ones alike).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from arena.battle_session import Side
from arena.guards.moderation import ModerationResult
from models.base import BackendError, GenerationParams, Message
from models.wrapper import ManagedBackend
from storage import repo, voter_guards

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """What one model has answered so far, with its timing and how it ended."""

    started_at: datetime
    text: str = ""
    chunks: int = 0
    first_token_at: datetime | None = None
    finished_at: datetime | None = None
    finish_reason: str | None = None
    output_tokens: int | None = None
    error: str | None = None


async def run_side(
    backend: ManagedBackend,
    messages: Sequence[Message],
    params: GenerationParams,
    answer: Answer,
    changed: asyncio.Queue[Side | None],
    *,
    side: Side,
    timeout_s: float,
    now: Callable[[], datetime],
    label: str,
) -> None:
    """Stream one model's answer into ``answer``, putting ``side`` on ``changed`` per chunk and None
    at the end. A failure or timeout is kept in ``answer.error`` (for operators), never raised."""
    generation = backend.generate(list(messages), params)
    try:
        async with asyncio.timeout(timeout_s):
            async for delta in generation:
                if answer.first_token_at is None:
                    answer.first_token_at = now()
                answer.text += delta
                answer.chunks += 1
                changed.put_nowait(side)
        answer.finish_reason = generation.stats.finish_reason
        answer.output_tokens = generation.stats.output_tokens
    except asyncio.CancelledError:
        answer.finish_reason = "cancelled"
        raise
    except TimeoutError:
        answer.error = f"timed out after {timeout_s:g}s (the arena's limit)"
        log.warning("%s: the model hit the arena's time limit", label)
    except BackendError as exc:  # invalidates the battle, never the page; details for operators only
        answer.error = f"{type(exc).__name__}: {exc}"
        log.warning("%s: failed after %d attempt(s): %s", label, generation.stats.attempts, answer.error)
    except Exception as exc:  # a bug outside the backends: same outcome for the voter
        answer.error = f"{type(exc).__name__}: {exc}"
        log.exception("%s: failed", label)
    finally:
        answer.finished_at = now()
        changed.put_nowait(None)


def store_answer(
    db: Session,
    answer: Answer,
    *,
    turn_id: int,
    side: Side,
    model_id: int,
    session_id: str,
    battle_id: str,
    flagged: ModerationResult | None,
    abandoned: bool,
    now: datetime,
    label: str,
) -> None:
    """Record one answer in the caller's transaction; a flagged answer is not kept, its flag says why.

    ``label`` names the answer in the flag for operators (e.g. "answer a", "direct answer").
    """
    if flagged is not None:
        voter_guards.flag(
            db,
            reason=f"{flagged.provider}: {flagged.category or 'flagged'} ({label})",
            detail=flagged.detail,
            session_id=session_id,
            battle_id=battle_id,
            now=now,
        )
    repo.save_response(
        db,
        turn_id=turn_id,
        side=side,
        model_id=model_id,
        text="" if flagged is not None else answer.text,
        started_at=answer.started_at,
        first_token_at=answer.first_token_at,
        finished_at=answer.finished_at or now,
        output_chunks=answer.chunks,
        output_tokens=answer.output_tokens,
        finish_reason=answer.finish_reason or ("cancelled" if abandoned else None),
        error=answer.error,
    )
