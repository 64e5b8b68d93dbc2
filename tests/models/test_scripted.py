"""The scripted backend streams deterministic, anonymous answers and simulates delays and failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from models.base import BackendError, GenerationParams, InputRejected, Message, Usage
from models.registry import BackendContext, create_backend
from models.roster import ModelSpec
from models.scripted import WORDS, ScriptedBackend

PARAMS = GenerationParams(max_new_tokens=256, seed=3)
IMAGE = Image.new("RGB", (8, 8), "red")


def collect(
    backend: ScriptedBackend, messages: list[Message], params: GenerationParams = PARAMS
) -> list[str]:
    async def run() -> list[str]:
        items = [item async for item in backend.stream(messages, params)]
        # Every stream ends with one Usage, after the text.
        assert isinstance(items[-1], Usage) and all(isinstance(i, str) for i in items[:-1])
        return items[:-1]

    return asyncio.run(run())


def make(name: str = "alpha", **params: object) -> ScriptedBackend:
    spec = ModelSpec(name=name, display_name=f"{name.title()} Display", backend="scripted", params=params)
    backend = create_backend(spec, BackendContext(cache_dir=Path("unused")))
    assert isinstance(backend, ScriptedBackend)
    return backend


def test_same_input_same_deltas() -> None:
    messages = [Message.user("What is in the picture?", [IMAGE])]
    first = collect(make(), messages)
    assert len(first) > 1 and all(first)
    assert collect(make(), messages) == first


def test_answer_depends_on_model_conversation_images_and_seed() -> None:
    messages = [Message.user("What is in the picture?", [IMAGE])]
    alpha = "".join(collect(make("alpha"), messages))
    assert "".join(collect(make("bravo"), messages)) != alpha
    assert "".join(collect(make("alpha"), [Message.user("What is in the photo?", [IMAGE])])) != alpha
    assert "".join(collect(make("alpha"), [Message.user("What is in the picture?")])) != alpha
    other_seed = GenerationParams(max_new_tokens=256, seed=4)
    assert "".join(collect(make("alpha"), messages, other_seed)) != alpha


def test_multi_turn_uses_the_whole_conversation() -> None:
    first = [Message.user("Describe it.", [IMAGE]), Message.assistant("A red square."), Message.user("Why?")]
    second = [
        Message.user("Describe it.", [IMAGE]),
        Message.assistant("A blue square."),
        Message.user("Why?"),
    ]
    assert collect(make(), first) != collect(make(), second)


@pytest.mark.parametrize("name", ["the", "image", "a", "e", "Red", "shows"])
def test_reply_never_contains_the_name_or_display_name(name: str) -> None:
    backend = make(name)
    for prompt in ["What is this?", "Describe the image in detail.", f"Are you {name}?"]:
        text = "".join(collect(backend, [Message.user(prompt, [IMAGE])])).lower()
        assert name.lower() not in text
        assert f"{name.title()} Display".lower() not in text


def test_fixed_reply_with_placeholders_and_chunks() -> None:
    backend = make(reply="You sent {n_images} image(s) and asked: {prompt}", chunk_words=3)
    deltas = collect(backend, [Message.user("what colour?", [IMAGE, IMAGE])])
    assert "".join(deltas) == "You sent 2 image(s) and asked: what colour?"
    assert deltas[0] == "You sent 2 "
    assert len(deltas) == 3


def test_fixed_reply_is_scrubbed_of_the_name() -> None:
    text = "".join(collect(make(reply="I am alpha, also known as Alpha Display."), [Message.user("hi")]))
    assert "alpha" not in text.lower()


def test_max_new_tokens_caps_the_words() -> None:
    deltas = collect(make(), [Message.user("hi")], GenerationParams(max_new_tokens=5))
    assert len(deltas) == 5


def test_words_come_from_the_word_list() -> None:
    text = "".join(collect(make(), [Message.user("hi")])).lower().rstrip(".")
    assert set(text.split()) <= set(WORDS)


def test_fail_after_raises_backend_error() -> None:
    backend = make(fail_after=2)
    received: list[str] = []

    async def run() -> None:
        async for delta in backend.stream([Message.user("hi")], PARAMS):
            assert isinstance(delta, str)
            received.append(delta)

    with pytest.raises(BackendError, match="alpha"):
        asyncio.run(run())
    assert len(received) == 2
    with pytest.raises(BackendError):
        collect(make(fail_after=0), [Message.user("hi")])


def test_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first-token delay comes once, before any text; the token delay before each later token."""
    events: list[object] = []
    real_sleep = asyncio.sleep

    async def record_sleep(seconds: float) -> None:
        events.append(seconds)
        await real_sleep(0)

    backend = make(first_token_delay_s=0.1, delay_s=0.02)

    async def run() -> None:
        async for item in backend.stream([Message.user("hi")], GenerationParams(max_new_tokens=6)):
            events.append("text" if isinstance(item, str) else "usage")

    monkeypatch.setattr(asyncio, "sleep", record_sleep)
    asyncio.run(run())
    assert events == [0.1, "text", *[0.02, "text"] * 5, "usage"]


def test_closing_the_generator_stops_the_stream() -> None:
    backend = make(delay_s=0.01)

    async def run() -> list[str]:
        stream = backend.stream([Message.user("hi")], PARAMS)
        got = [await anext(stream), await anext(stream)]
        assert backend.active_streams == 1
        await stream.aclose()
        assert backend.active_streams == 0
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        return got

    assert len(asyncio.run(run())) == 2


def test_cancelling_the_consumer_stops_the_stream() -> None:
    backend = make(delay_s=0.05)

    async def run() -> int:
        received: list[str] = []

        async def consume() -> None:
            async for delta in backend.stream([Message.user("hi")], PARAMS):
                received.append(delta)

        task = asyncio.create_task(consume())
        while len(received) < 2:  # the stream is under way: cancel it in the middle
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert backend.active_streams == 0
        return len(received)

    assert 2 <= asyncio.run(run()) < 10


def test_too_many_images_and_closed_backend() -> None:
    backend = ScriptedBackend("alpha", max_images=1)
    with pytest.raises(InputRejected, match="at most 1 image"):
        collect(backend, [Message.user("hi", [IMAGE, IMAGE])])
    asyncio.run(backend.aclose())
    with pytest.raises(BackendError, match="closed"):
        collect(backend, [Message.user("hi")])


def test_usage_counts_words_and_says_why_it_stopped() -> None:
    backend = make(reply="one two three four five")

    async def run(max_new_tokens: int) -> Usage:
        items = [i async for i in backend.stream([Message.user("hi")], GenerationParams(max_new_tokens))]
        return items[-1]

    assert asyncio.run(run(10)) == Usage(output_tokens=5, finish_reason="stop")
    assert asyncio.run(run(3)) == Usage(output_tokens=3, finish_reason="length")
