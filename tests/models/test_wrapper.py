"""The wrapper every backend goes through: timing, token counts, retry rule, limits, error types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from models.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    GenerationParams,
    InputRejected,
    Message,
    ModelBackend,
    StreamItem,
    Usage,
)
from models.health import HealthMonitor
from models.scripted import ScriptedBackend
from models.wrapper import GenerationStats, ManagedBackend

PARAMS = GenerationParams(max_new_tokens=100)
HI = [Message.user("hi")]


class Flaky(ModelBackend):
    """Fails its first ``failures`` requests with ``error`` (after ``text_first`` deltas), then answers."""

    def __init__(self, failures: int, error: BackendError | Exception, text_first: int = 0) -> None:
        self.name = "flaky"
        self.failures = failures
        self.error = error
        self.text_first = text_first
        self.calls = 0
        self.closed = 0

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamItem]:
        self.calls += 1
        try:
            if self.calls <= self.failures:
                for i in range(self.text_first):
                    yield f"part{i} "
                raise self.error
            yield "fine "
            yield "answer"
            yield Usage(input_tokens=7, output_tokens=2, finish_reason="stop")
        finally:
            self.closed += 1


class Stalling(ModelBackend):
    """Sends ``text_first`` deltas, then nothing more, ever: only a time limit ends its stream."""

    def __init__(self, text_first: int = 0) -> None:
        self.name = "stalling"
        self.text_first = text_first
        self.calls = 0
        self.open = 0

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamItem]:
        self.calls += 1
        self.open += 1
        try:
            for i in range(self.text_first):
                yield f"part{i} "
            await asyncio.Event().wait()
        finally:
            self.open -= 1


def run(backend: ManagedBackend, messages: list[Message] = HI) -> tuple[list[str], GenerationStats]:
    async def go() -> tuple[list[str], GenerationStats]:
        generation = backend.generate(messages, PARAMS)
        return [d async for d in generation], generation.stats

    return asyncio.run(go())


def failing(backend: ManagedBackend) -> tuple[BaseException, GenerationStats]:
    generation = backend.generate(HI, PARAMS)

    async def go() -> None:
        async for _ in generation:
            pass

    with pytest.raises(BackendError) as info:
        asyncio.run(go())
    return info.value, generation.stats


def test_timing_and_tokens_of_a_scripted_answer() -> None:
    backend = ManagedBackend(
        ScriptedBackend("alpha", reply="a b c d e", first_token_delay_s=0.05, delay_s=0.02)
    )
    deltas, stats = run(backend)
    assert "".join(deltas) == "a b c d e"
    assert stats.chunks == 5 and stats.output_tokens == 5 and stats.finish_reason == "stop"
    assert 0.05 <= stats.first_token_s < stats.total_s and stats.total_s >= 0.05 + 4 * 0.02
    assert stats.attempts == 1 and stats.error is None


def test_usage_from_the_backend_is_recorded() -> None:
    deltas, stats = run(ManagedBackend(Flaky(0, BackendError("x"))))
    assert deltas == ["fine ", "answer"]
    assert (stats.input_tokens, stats.output_tokens, stats.finish_reason) == (7, 2, "stop")


def test_retryable_failure_before_the_first_token_is_retried() -> None:
    flaky = Flaky(2, BackendUnavailable("HTTP 503"))
    deltas, stats = run(ManagedBackend(flaky, retries=2, retry_backoff_s=0.01))
    assert deltas == ["fine ", "answer"] and stats.attempts == 3 and flaky.calls == 3
    assert flaky.closed == 3  # every attempt's stream was closed


def test_retries_run_out() -> None:
    flaky = Flaky(5, BackendUnavailable("HTTP 503"))
    error, stats = failing(ManagedBackend(flaky, retries=2, retry_backoff_s=0.01))
    assert isinstance(error, BackendUnavailable) and stats.attempts == 3 and stats.error is error
    assert stats.finish_reason is None and stats.total_s is not None


def test_no_retry_after_text_was_shown() -> None:
    flaky = Flaky(1, BackendUnavailable("connection reset"), text_first=2)
    received: list[str] = []

    async def go() -> None:
        async for delta in ManagedBackend(flaky, retries=3, retry_backoff_s=0.01).generate(HI, PARAMS):
            received.append(delta)

    with pytest.raises(BackendUnavailable):
        asyncio.run(go())
    assert received == ["part0 ", "part1 "] and flaky.calls == 1


def test_non_retryable_errors_are_not_retried() -> None:
    flaky = Flaky(1, InputRejected("too many images"))
    error, stats = failing(ManagedBackend(flaky, retries=3))
    assert isinstance(error, InputRejected) and stats.attempts == 1


def test_foreign_exceptions_become_backend_errors() -> None:
    error, _ = failing(ManagedBackend(Flaky(1, KeyError("oops"))))
    assert type(error) is BackendError and "KeyError" in str(error) and isinstance(error.__cause__, KeyError)


def test_first_token_limit_with_retry_then_total_limit() -> None:
    no_start = Stalling(text_first=0)
    error, stats = failing(
        ManagedBackend(no_start, first_token_timeout_s=0.1, retries=1, retry_backoff_s=0.01)
    )
    assert isinstance(error, BackendTimeout) and error.phase == "first_token" and stats.attempts == 2
    assert no_start.calls == 2 and no_start.open == 0

    stalled = Stalling(text_first=2)
    error, stats = failing(ManagedBackend(stalled, first_token_timeout_s=5, total_timeout_s=0.35))
    assert isinstance(error, BackendTimeout) and error.phase == "total" and not error.retryable
    assert stats.chunks == 2 and stats.attempts == 1 and stalled.open == 0


def test_closing_the_generation_closes_the_backend_stream() -> None:
    backend = ScriptedBackend("alpha", reply="a b c d e f", delay_s=0.01)

    async def go() -> GenerationStats:
        generation = ManagedBackend(backend).generate(HI, PARAMS)
        iterator = aiter(generation)
        await anext(iterator)
        assert backend.active_streams == 1
        await generation.aclose()
        return generation.stats

    stats = asyncio.run(go())
    assert backend.active_streams == 0 and stats.error is None and stats.chunks == 1


def test_outcomes_feed_the_health_monitor() -> None:
    flaky = Flaky(10, BackendUnavailable("HTTP 502"))
    monitor = HealthMonitor({"flaky": flaky}, failure_threshold=2)
    wrapper = ManagedBackend(flaky, retries=0, health=monitor)
    failing(wrapper)
    assert monitor.is_healthy("flaky") and monitor.status("flaky").consecutive_failures == 1
    failing(wrapper)
    assert not monitor.is_healthy("flaky") and "HTTP 502" in (monitor.status("flaky").last_error or "")
    # Bad input says nothing about the model's health.
    rejecting = Flaky(10, InputRejected("too many images"))
    monitor2 = HealthMonitor({"flaky": rejecting}, failure_threshold=1)
    failing(ManagedBackend(rejecting, health=monitor2))
    assert monitor2.is_healthy("flaky") and monitor2.status("flaky").consecutive_failures == 0
