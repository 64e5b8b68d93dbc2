"""What every backend gets once, whatever its kind: time limits, retries, timing and token accounting.

The arena never calls :meth:`ModelBackend.stream` directly; it asks a :class:`ManagedBackend` for a
:class:`Generation`, iterates its text deltas and reads :attr:`Generation.stats` afterwards::

    managed = ManagedBackend.for_spec(spec, backend, health=monitor)
    generation = managed.generate(messages, params)
    async for delta in generation:
        ...
    generation.stats.first_token_s, generation.stats.output_tokens

Rules:

* A request that fails before its first token with a retryable error (connection refused, HTTP 5xx,
  no first token in time) is tried again, up to ``retries`` more times with a short back-off. Once
  text has been yielded, nothing is retried: the voter has already seen part of that answer.
* ``first_token_s`` bounds the wait for the first text of each attempt; ``total_s`` bounds the whole
  request, retries included. Exceeding either raises :class:`BackendTimeout` and closes the stream,
  which stops the upstream request.
* Every failure leaves as a :class:`BackendError` subclass; exceptions of any other type from a
  backend are wrapped, so callers need to handle one family.
* Outcomes feed an optional :class:`models.health.HealthMonitor` (bad input does not count).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Literal

from models.base import (
    BackendError,
    BackendTimeout,
    GenerationParams,
    Message,
    ModelBackend,
    Usage,
)

if TYPE_CHECKING:
    from models.health import HealthMonitor
    from models.roster import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class GenerationStats:
    """How one request went. Times are seconds from the start of the request (first attempt)."""

    attempts: int = 0
    first_token_s: float | None = None
    total_s: float | None = None
    #: Text deltas received (not tokens: servers may pack several tokens into one delta).
    chunks: int = 0
    input_tokens: int | None = None
    #: Tokens of the answer as the backend counted them; None if it did not say.
    output_tokens: int | None = None
    #: ``stop``, ``length``, or None when the request failed or was cancelled.
    finish_reason: str | None = None
    error: BackendError | None = None


class Generation:
    """One request to a model: iterate it for the text deltas, then read :attr:`stats`."""

    def __init__(self, managed: ManagedBackend, messages: Sequence[Message], params: GenerationParams):
        self.stats = GenerationStats()
        self._iterator = managed._run(messages, params, self.stats)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterator

    async def aclose(self) -> None:
        """Stop the request early (the backend's stream is closed, which stops generation upstream)."""
        await self._iterator.aclose()


@dataclass(eq=False)
class ManagedBackend:
    """A backend with the arena's time limits, retry rule, accounting and health reporting."""

    backend: ModelBackend
    _: KW_ONLY
    first_token_timeout_s: float = 60.0
    total_timeout_s: float = 300.0
    retries: int = 1
    retry_backoff_s: float = 0.25
    health: HealthMonitor | None = None
    clock: Callable[[], float] = time.perf_counter
    #: The backend's name (the roster name).
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.backend.name

    @classmethod
    def for_spec(
        cls, spec: ModelSpec, backend: ModelBackend, *, health: HealthMonitor | None = None
    ) -> ManagedBackend:
        """The wrapper configured from a roster entry's ``timeouts`` and ``retries``."""
        return cls(
            backend,
            first_token_timeout_s=spec.timeouts.first_token_s,
            total_timeout_s=spec.timeouts.total_s,
            retries=spec.retries,
            health=health,
        )

    def generate(self, messages: Sequence[Message], params: GenerationParams) -> Generation:
        """Start a request; nothing is sent until the generation is iterated."""
        return Generation(self, messages, params)

    async def check(self) -> None:
        """The backend's own health check."""
        await self.backend.check()

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def _run(
        self, messages: Sequence[Message], params: GenerationParams, stats: GenerationStats
    ) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        started = self.clock()
        total_deadline = loop.time() + self.total_timeout_s
        deadline = _Deadline(loop)
        try:
            while True:
                stats.attempts += 1
                got_text = False
                source = self.backend.stream(messages, params)
                deadline.arm(min(loop.time() + self.first_token_timeout_s, total_deadline), "first_token")
                try:
                    while True:
                        # What asyncio.timeout does, inline: one timer per phase, not one per chunk.
                        if deadline.fired:
                            raise self._timeout(deadline.phase)
                        deadline.task = task = asyncio.current_task()
                        try:
                            item = await anext(source)
                        except StopAsyncIteration:
                            break
                        except asyncio.CancelledError:
                            if deadline.fired and task is not None and task.uncancel() == 0:
                                raise self._timeout(deadline.phase) from None
                            raise
                        finally:
                            deadline.task = None
                        if isinstance(item, Usage):
                            stats.input_tokens = item.input_tokens
                            stats.output_tokens = item.output_tokens
                            stats.finish_reason = item.finish_reason
                            continue
                        if not item:
                            continue
                        if not got_text:
                            got_text = True
                            stats.first_token_s = self.clock() - started
                            deadline.arm(total_deadline, "total")
                        stats.chunks += 1
                        yield item
                except BackendError as exc:
                    if self._retry(exc, got_text, stats.attempts, loop.time(), total_deadline):
                        log.warning(
                            "model %s: attempt %d failed before its first token (%s); retrying",
                            self.name,
                            stats.attempts,
                            exc,
                        )
                        await asyncio.sleep(self.retry_backoff_s * 2 ** (stats.attempts - 1))
                        continue
                    self._failed(stats, exc, started)
                    raise
                except Exception as exc:  # a backend bug: still one error family for callers
                    error = BackendError(f"model {self.name!r}: {type(exc).__name__}: {exc}")
                    self._failed(stats, error, started)
                    raise error from exc
                finally:
                    await source.aclose()
                stats.total_s = self.clock() - started
                stats.finish_reason = stats.finish_reason or "stop"
                if self.health is not None:
                    self.health.record_success(self.name)
                return
        finally:
            deadline.disarm()

    def _timeout(self, phase: str) -> BackendTimeout:
        if phase == "total":
            return BackendTimeout(
                f"model {self.name!r}: no complete answer within {self.total_timeout_s:g}s", phase="total"
            )
        return BackendTimeout(
            f"model {self.name!r}: no first token within {self.first_token_timeout_s:g}s", phase="first_token"
        )

    def _retry(self, exc: BackendError, got_text: bool, attempts: int, now: float, deadline: float) -> bool:
        """Whether to ask again: retryable, nothing shown yet, attempts left, and time left for it."""
        backoff = self.retry_backoff_s * 2 ** (attempts - 1)
        return exc.retryable and not got_text and attempts <= self.retries and now + backoff < deadline

    def _failed(self, stats: GenerationStats, error: BackendError, started: float) -> None:
        stats.error = error
        stats.total_s = self.clock() - started
        stats.finish_reason = None
        if self.health is not None and error.counts_against_health:
            self.health.record_failure(self.name, error)


class _Deadline:
    """One timer per request phase, instead of one per streamed chunk.

    ``asyncio.timeout`` around every ``anext`` would schedule and cancel a timer for each token,
    which costs measurable throughput at thousands of tokens per second. This timer is armed once
    for the first token and once for the rest. When it fires it cancels ``task``, the task waiting on
    the backend (set only while it waits, as ``asyncio.timeout`` would); if no task is waiting, the
    next wait fails at once through ``fired``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.phase: Literal["first_token", "total"] = "first_token"
        self.task: asyncio.Task[object] | None = None
        self.fired = False
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, when: float, phase: Literal["first_token", "total"]) -> None:
        self.disarm()
        self.phase = phase
        self.fired = False
        self._handle = self.loop.call_at(when, self._fire)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self.fired = True
        if self.task is not None:
            self.task.cancel()
