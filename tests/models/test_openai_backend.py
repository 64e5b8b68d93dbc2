"""The openai backend against a real local HTTP server speaking the OpenAI streaming protocol.

Each injected fault (HTTP 500, a dropped connection, a slow first token, a malformed chunk, a hung
server, a refused connection) must end in its documented, structured outcome, through the same
wrapper the arena uses.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from models.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    GenerationParams,
    InputRejected,
    Message,
    ProtocolViolation,
    StreamInterrupted,
)
from models.openai_compat import OpenAIBackend, _EventReader
from models.registry import BackendContext, create_backend
from models.roster import ModelSpec, Timeouts
from models.wrapper import GenerationStats, ManagedBackend
from tests.models.openai_server import Behaviour, FakeOpenAIServer, split_reply

PARAMS = GenerationParams(max_new_tokens=64, temperature=0.2, top_p=0.9, seed=11)
REPLY = Behaviour().reply
WORDS = split_reply(REPLY, 1)  # the content chunks the server sends, in order


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key="sk-test-123") as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLM_KEY", "sk-test-123")


def spec_for(
    base_url: str, *, retries: int = 1, first_token_s: float = 5, total_s: float = 10, **params: Any
):
    return ModelSpec(
        name="gpt-fake",
        backend="openai",
        params={"base_url": base_url, "model": "fake-vlm", "api_key_env": "FAKE_VLM_KEY", **params},
        timeouts=Timeouts(first_token_s=first_token_s, total_s=total_s),
        retries=retries,
        max_images=2,
    )


def managed(base_url: str, **kwargs: Any) -> ManagedBackend:
    spec = spec_for(base_url, **kwargs)
    wrapper = ManagedBackend.for_spec(spec, create_backend(spec, BackendContext(cache_dir=Path("unused"))))
    wrapper.retry_backoff_s = 0.01
    return wrapper


def ask(
    backend: ManagedBackend, messages: list[Message] | None = None, params: GenerationParams = PARAMS
) -> tuple[str, GenerationStats]:
    """Run one request to the end: the answer and its stats (raises what the wrapper raises)."""
    messages = messages or [Message.user("What is in the picture?")]

    async def run() -> tuple[str, GenerationStats]:
        generation = backend.generate(messages, params)
        text = "".join([delta async for delta in generation])
        return text, generation.stats

    return asyncio.run(run())


def partial(
    backend: ManagedBackend, messages: list[Message] | None = None
) -> tuple[list[str], BaseException]:
    """The deltas received before the request failed, and the error."""
    received: list[str] = []

    async def run() -> None:
        async for delta in backend.generate(messages or [Message.user("Hi")], PARAMS):
            received.append(delta)

    with pytest.raises(BackendError) as info:
        asyncio.run(run())
    return received, info.value


def paced(
    backend: ManagedBackend, pace: threading.Semaphore, chunks: int | None = None
) -> tuple[list[str], GenerationStats, BaseException | None]:
    """Consume a stream whose server sends each chunk only after ``pace`` is released (Behaviour.pace).

    The first chunk is released at once and each further one only after the previous delta arrived,
    so no two chunks can ever reach the client in one network read. With ``chunks`` set, no chunk
    after that many is released. Returns the deltas, the stats and the error (or None).
    """
    received: list[str] = []
    generation = backend.generate([Message.user("Hi")], PARAMS)

    async def run() -> None:
        pace.release()
        async for delta in generation:
            received.append(delta)
            if chunks is None or len(received) < chunks:
                pace.release()

    try:
        asyncio.run(run())
    except BackendError as exc:
        return received, generation.stats, exc
    return received, generation.stats, None


def test_streams_the_answer_with_usage_and_request_fields(server: FakeOpenAIServer) -> None:
    backend = managed(server.base_url, extra_body={"top_k": 40, "repetition_penalty": 1.1})
    text, stats = ask(backend)
    assert text == REPLY
    assert 1 <= stats.chunks <= len(REPLY.split()) and stats.output_tokens == len(REPLY.split())
    assert stats.input_tokens and stats.input_tokens > 0 and stats.finish_reason == "stop"
    assert stats.attempts == 1 and 0 < stats.first_token_s <= stats.total_s
    request = server.requests[-1]
    assert request["headers"]["authorization"] == "Bearer sk-test-123"
    body = request["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (
        "fake-vlm",
        64,
        0.2,
        0.9,
        11,
    )
    assert body["top_k"] == 40 and body["repetition_penalty"] == 1.1
    assert body["messages"] == [{"role": "user", "content": "What is in the picture?"}]


def test_images_arrive_as_decodable_data_uris_scaled_to_the_limit(server: FakeOpenAIServer) -> None:
    wide = Image.new("RGB", (3000, 1000), "red")
    small = Image.new("RGBA", (64, 48), (0, 0, 255, 128))
    backend = managed(server.base_url, max_image_side=1024, image_format="png")
    conversation = [
        Message.user("Compare these.", [wide, small]),
        Message.assistant("The first is red."),
        Message.user("And the second?"),
    ]
    text, _ = ask(backend, conversation)
    assert text == REPLY
    images = server.images()
    assert [im.size for im in images] == [(1024, 341), (64, 48)]  # scaled down, never up
    assert images[0].convert("RGB").getpixel((500, 170)) == (255, 0, 0)
    messages = server.requests[-1]["body"]["messages"]
    assert [part["type"] for part in messages[0]["content"]] == ["image_url", "image_url", "text"]
    assert messages[1] == {"role": "assistant", "content": "The first is red."}
    assert messages[2] == {"role": "user", "content": "And the second?"}
    # JPEG (the default) flattens transparency and still decodes.
    ask(managed(server.base_url), [Message.user("Again.", [small])])
    assert server.images()[0].format == "JPEG" and server.images()[0].mode == "RGB"


def test_too_many_images_is_refused_before_any_request(server: FakeOpenAIServer) -> None:
    image = Image.new("RGB", (8, 8))
    _, error = partial(managed(server.base_url), [Message.user("Three?", [image, image, image])])
    assert isinstance(error, InputRejected) and "at most 2 image" in str(error)
    assert server.requests == []


def test_max_tokens_and_the_newer_field_name(server: FakeOpenAIServer) -> None:
    text, stats = ask(managed(server.base_url), params=GenerationParams(max_new_tokens=3))
    assert text == " ".join(REPLY.split()[:3]) + " " and stats.finish_reason == "length"
    ask(managed(server.base_url, max_tokens_field="max_completion_tokens"))
    body = server.requests[-1]["body"]
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body


def test_without_usage_the_token_count_is_unknown(server: FakeOpenAIServer) -> None:
    text, stats = ask(managed(server.base_url, include_usage=False))
    assert text == REPLY and "stream_options" not in server.requests[-1]["body"]
    assert stats.output_tokens is None and stats.chunks >= 1


def test_at_a_models_pace_every_token_is_passed_on_at_once(server: FakeOpenAIServer) -> None:
    """Coalescing happens only for events that arrived in the same network read: a chunk the server
    sends only after the previous one reached the consumer is passed on by itself, at once."""
    pace = threading.Semaphore(0)
    server.behaviour = Behaviour(pace=pace)
    received, stats, error = paced(managed(server.base_url), pace)
    assert error is None and received == WORDS and stats.chunks == len(WORDS)


def test_events_split_anywhere_across_reads_parse_the_same() -> None:
    events = b"".join(
        b"data: " + json.dumps({"choices": [{"delta": {"content": piece}}]}).encode() + b"\r\n\r\n"
        for piece in ["Grüße ", "aus ", "Zürich ", "🙂"]
    )
    events += b": keep-alive\n\n" + b'data: {"choices": [{"delta": {}, "finish_reason": "length"}]}\n\n'
    events += b'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}\n\ndata: [DONE]'
    for size in (1, 3, 7, len(events)):
        reader = _EventReader("m")
        text = ""
        for start in range(0, len(events), size):
            reader.feed(events[start : start + size])
            text += reader.take_text()
        reader.close()
        assert text == "Grüße aus Zürich 🙂" and reader.done
        assert (reader.finish_reason, reader.usage["completion_tokens"]) == ("length", 4)
    unfinished = _EventReader("m")
    unfinished.feed(events[: events.index(b": keep")])
    with pytest.raises(StreamInterrupted):
        unfinished.close()


def test_http_500_is_retried_before_the_first_token(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(fail_first=1)
    text, stats = ask(managed(server.base_url, retries=1))
    assert text == REPLY and stats.attempts == 2 and len(server.requests) == 2

    server.behaviour = Behaviour(fail_first=2)
    _, error = partial(managed(server.base_url, retries=1))
    assert isinstance(error, BackendUnavailable) and "HTTP 500" in str(error)
    assert len(server.requests) == 4  # two more attempts, then it gave up


def test_client_errors_are_not_retried(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(status=400)
    _, error = partial(managed(server.base_url, retries=3))
    assert isinstance(error, InputRejected) and "HTTP 400" in str(error)
    assert len(server.requests) == 1

    server.api_key = "sk-other"
    _, error = partial(managed(server.base_url, retries=3))
    assert type(error) is BackendError and "HTTP 401" in str(error)
    assert len(server.requests) == 2


def test_connection_dropped_mid_stream_is_interrupted_and_not_retried(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(drop_after=3)
    received, error = partial(managed(server.base_url, retries=3))
    assert "".join(received) == "".join(REPLY.split(" ")[i] + " " for i in range(3))
    assert isinstance(error, StreamInterrupted)
    assert len(server.requests) == 1  # text was shown: never asked again


def test_malformed_chunk_is_a_protocol_violation(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(malformed_after=2)
    received, error = partial(managed(server.base_url))
    assert "".join(received) == "".join(REPLY.split(" ")[i] + " " for i in range(2))  # text before it kept
    assert isinstance(error, ProtocolViolation) and "malformed" in str(error)


def test_slow_first_token_times_out_retries_and_disconnects(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(pace=threading.Semaphore(0))  # the first token never comes
    backend = managed(server.base_url, retries=1, first_token_s=0.3, total_s=30)
    received, error = partial(backend)
    # Both attempts ended on the 0.3 s first-token limit; the server never sends a token.
    assert received == [] and isinstance(error, BackendTimeout) and error.phase == "first_token"
    assert len(server.requests) == 2
    assert server.wait_disconnect(10) and server.disconnects >= 1  # the upstream requests were dropped

    # A first token within the limit is fine.
    server.behaviour = Behaviour(first_token_delay_s=0.3)
    assert ask(managed(server.base_url, retries=0, first_token_s=10, total_s=30))[0] == REPLY


def test_total_time_limit_cuts_a_slow_stream(server: FakeOpenAIServer) -> None:
    pace = threading.Semaphore(0)
    server.behaviour = Behaviour(pace=pace)  # three chunks, then the stream stalls
    received, _, error = paced(managed(server.base_url, first_token_s=3, total_s=3), pace, chunks=3)
    assert isinstance(error, BackendTimeout) and error.phase == "total"
    assert received == WORDS[:3]  # what arrived before the limit is kept
    assert server.wait_disconnect(10)


def test_hung_server_hits_the_first_token_limit(server: FakeOpenAIServer) -> None:
    server.behaviour = Behaviour(hang=True)
    _, error = partial(managed(server.base_url, retries=0, first_token_s=0.3))
    assert isinstance(error, BackendTimeout) and server.wait_disconnect(10)


def test_cancelling_the_consumer_stops_the_upstream_request(server: FakeOpenAIServer) -> None:
    pace = threading.Semaphore(0)
    server.behaviour = Behaviour(pace=pace)  # two chunks, then the server waits mid-stream
    backend = managed(server.base_url)

    async def run() -> list[str]:
        received: list[str] = []
        two = asyncio.Event()

        async def consume() -> None:
            async for delta in backend.generate([Message.user("Hi")], PARAMS):
                received.append(delta)
                if len(received) < 2:
                    pace.release()
                else:
                    two.set()

        pace.release()
        task = asyncio.create_task(consume())
        await asyncio.wait_for(two.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return received

    assert asyncio.run(run()) == WORDS[:2]
    assert server.wait_disconnect(10) and server.disconnects == 1 and server.completed == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_connection_is_unavailable_and_fast() -> None:
    """Refused at once, not after waiting out the first-token limit (that would be a BackendTimeout)."""
    backend = managed(f"http://127.0.0.1:{free_port()}/v1", retries=1, first_token_s=60, total_s=120)
    _, error = partial(backend)
    assert isinstance(error, BackendUnavailable) and "cannot connect" in str(error)


def test_health_check_uses_the_models_endpoint(server: FakeOpenAIServer) -> None:
    backend = managed(server.base_url)
    asyncio.run(backend.check())
    server.behaviour = Behaviour(models_status=503)
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        asyncio.run(backend.check())
    asyncio.run(managed(server.base_url, health_check="none").check())  # not probed
    with pytest.raises(BackendUnavailable, match="unreachable"):
        asyncio.run(managed(f"http://127.0.0.1:{free_port()}/v1").check())


def test_missing_api_key_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_VLM_KEY")
    spec = spec_for("http://127.0.0.1:9/v1")
    with pytest.raises(BackendError, match="FAKE_VLM_KEY is not set") as info:
        create_backend(spec, BackendContext(cache_dir=Path("unused")))
    assert "sk-" not in str(info.value)


def test_backend_serves_requests_from_several_event_loops(server: FakeOpenAIServer) -> None:
    """Gradio's loop, the health monitor's and a test's are different loops; each gets its own pool."""
    backend = managed(server.base_url)
    assert ask(backend)[0] == REPLY
    assert ask(backend)[0] == REPLY  # asyncio.run made a new loop

    async def concurrent() -> list[str]:
        async def one() -> str:
            return "".join([d async for d in backend.generate([Message.user("Hi")], PARAMS)])

        return await asyncio.gather(*(one() for _ in range(8)))

    assert asyncio.run(concurrent()) == [REPLY] * 8
    inner = backend.backend
    assert isinstance(inner, OpenAIBackend)
    asyncio.run(inner.aclose())
