"""Batched generation in the ``hf`` backend, on real tiny models of every demo architecture (CPU).

The reference for "alone" is the same model loaded with ``max_batch_size: 1``: one ``generate`` per
request, the unbatched path.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from models.base import BackendError, BackendUnavailable, GenerationParams, Message, Usage
from models.registry import BackendContext, create_backend
from models.roster import ModelSpec
from models.tiny import ARCHITECTURES, ensure_tiny_model

pytestmark = pytest.mark.slow

Answer = tuple[list[str], Usage]


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding every tiny architecture, built once per test session."""
    cache = tmp_path_factory.mktemp("tiny-models-batch")
    for arch in ARCHITECTURES:
        ensure_tiny_model(arch, cache)
    return cache


def drawing(colour: str, size: tuple[int, int] = (96, 64)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, size[0] // 2, size[1] // 2), fill=colour, outline="black")
    draw.rectangle((size[0] // 2, size[1] // 3, size[0] - 4, size[1] - 4), fill="blue")
    return image


def backend_for(cache: Path, arch: str, **params: object):
    spec = ModelSpec(
        name=f"tiny-{arch}",
        backend="hf",
        params={"tiny_demo": arch, "device": "cpu", "dtype": "float32", **params},
    )
    return create_backend(spec, BackendContext(cache_dir=cache))


def greedy(max_new_tokens: int) -> GenerationParams:
    return GenerationParams(max_new_tokens=max_new_tokens, temperature=0)


async def answer(backend, messages: list[Message], params: GenerationParams) -> Answer:
    """One request's text deltas and its final Usage."""
    items = [item async for item in backend.stream(messages, params)]
    assert isinstance(items[-1], Usage) and all(isinstance(i, str) for i in items[:-1])
    return items[:-1], items[-1]  # type: ignore[return-value]


def together(backend, requests: list[tuple[list[Message], GenerationParams]]) -> list[Answer]:
    """All requests started at the same moment (so they arrive within one batch window)."""

    async def run() -> list[Answer]:
        return list(await asyncio.gather(*(answer(backend, m, p) for m, p in requests)))

    return asyncio.run(run())


def one_by_one(backend, requests: list[tuple[list[Message], GenerationParams]]) -> list[Answer]:
    return [asyncio.run(answer(backend, m, p)) for m, p in requests]


def mixed_requests(arch: str) -> list[tuple[list[Message], GenerationParams]]:
    """Prompts of different lengths, 0/1/2 images (PaliGemma needs at least one), a multi-turn chat,
    and different answer lengths."""
    counts = [1, 2, 1, 1] if arch == "paligemma" else [0, 1, 2, 1]
    pictures = [drawing("red"), drawing("yellow", (40, 80)), drawing("green", (64, 64))]
    return [
        ([Message.user("Hi", pictures[: counts[0]])], greedy(6)),
        (
            [
                Message.user(
                    "What colour is the circle in this picture, and the rectangle?", pictures[: counts[1]]
                ),
                Message.assistant("The circle is red and the rectangle is blue."),
                Message.user("And what else can you see near the harbour, in the morning light?"),
            ],
            greedy(14),
        ),
        (
            [
                Message.user(
                    "Compare the pictures carefully, then count the shapes.", pictures[1 : 1 + counts[2]]
                )
            ],
            greedy(10),
        ),
        ([Message.user("Describe it.", pictures[2 : 2 + counts[3]])], greedy(16)),
    ]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_answers_equal_answers_alone(tiny_cache: Path, arch: str) -> None:
    requests = mixed_requests(arch)
    alone_backend = backend_for(tiny_cache, arch, max_batch_size=1)
    alone = one_by_one(alone_backend, requests)
    asyncio.run(alone_backend.aclose())

    batched_backend = backend_for(tiny_cache, arch, max_batch_size=8, batch_window_ms=500)
    batched = together(batched_backend, requests)
    assert list(batched_backend.batch_sizes) == [len(requests)]  # one generate call for all of them
    asyncio.run(batched_backend.aclose())

    for (_, params), (alone_deltas, alone_usage), (deltas, usage) in zip(
        requests, alone, batched, strict=True
    ):
        assert "".join(alone_deltas)  # an answer (random weights: possibly only newlines)
        assert deltas == alone_deltas  # token for token, and even the same text pieces
        assert usage == alone_usage
        assert usage.output_tokens == params.max_new_tokens and usage.finish_reason == "length"
    # the prompts really differ in length, so some rows were padded
    assert len({usage.input_tokens for _, usage in batched}) == len(requests)


def test_stopping_one_stream_leaves_the_others_complete(tiny_cache: Path) -> None:
    arch = "llava"
    pictures = [drawing("red"), drawing("yellow", (40, 80))]
    others = [
        ([Message.user("Tell me about the harbour.", pictures[:1])], greedy(40)),
        ([Message.user("What is this?", pictures)], greedy(30)),
    ]
    alone_backend = backend_for(tiny_cache, arch, max_batch_size=1)
    alone = one_by_one(alone_backend, others)
    asyncio.run(alone_backend.aclose())

    backend = backend_for(tiny_cache, arch, batch_window_ms=500)
    endless = greedy(2000)

    async def run() -> list[Answer]:
        leaving = backend.stream([Message.user("Go on forever.", pictures[1:])], endless)
        first = asyncio.ensure_future(anext(leaving))
        rest = asyncio.gather(*(answer(backend, m, p) for m, p in others))
        assert isinstance(await first, str)
        await leaving.aclose()  # the voter leaves: returns once that sequence has stopped
        assert backend.last_usage is not None and backend.last_usage.output_tokens < 40
        return list(await rest)

    results = asyncio.run(run())
    assert list(backend.batch_sizes) == [3]
    assert results == alone  # the others ran to their own ends, unchanged
    assert backend.active_generations == 0
    asyncio.run(backend.aclose())


def test_a_request_leaving_the_queue_is_dropped(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "gemma3", batch_window_ms=0)
    messages = [Message.user("Go on.", [drawing("red")])]

    async def run() -> None:
        running = backend.stream(messages, greedy(2000))
        await anext(running)  # the only worker is busy with this batch
        waiting = asyncio.create_task(anext(backend.stream(messages, greedy(5))))
        await asyncio.sleep(0.2)
        assert backend.active_generations == 2 and not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await running.aclose()
        assert backend.active_generations == 0

    asyncio.run(run())
    assert list(backend.batch_sizes) == [1]  # the withdrawn request never reached a generate call
    asyncio.run(backend.aclose())


def test_window_and_max_batch_size_group_requests(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "idefics3", max_batch_size=3, batch_window_ms=300)
    messages = [Message.user("Hello there.", [drawing("red")])]
    answers = together(backend, [(messages, greedy(4 + i)) for i in range(7)])
    assert list(backend.batch_sizes) == [3, 3, 1]
    assert [usage.output_tokens for _, usage in answers] == [4, 5, 6, 7, 8, 9, 10]

    # A request arriving after the window has closed waits for the next generate call.
    async def staggered() -> None:
        first = asyncio.ensure_future(answer(backend, messages, greedy(3)))
        await asyncio.sleep(0.6)
        await asyncio.gather(first, answer(backend, messages, greedy(3)))

    asyncio.run(staggered())
    assert list(backend.batch_sizes)[3:] == [1, 1]
    asyncio.run(backend.aclose())


def test_only_compatible_sampling_settings_share_a_batch(tiny_cache: Path) -> None:
    """Greedy with greedy, the same temperature/top-p together; seeded sampling always runs alone."""
    backend = backend_for(tiny_cache, "gemma3", batch_window_ms=300)
    messages = [Message.user("Say something.", [drawing("red")])]
    warm = GenerationParams(max_new_tokens=6, temperature=0.8, top_p=0.9)
    seeded = GenerationParams(max_new_tokens=6, temperature=0.8, top_p=0.9, seed=7)
    answers = together(
        backend,
        [(messages, greedy(6)), (messages, warm), (messages, greedy(8)), (messages, warm)]
        + [(messages, seeded), (messages, seeded)],
    )
    assert sorted(backend.batch_sizes) == [1, 1, 2, 2]
    assert all(usage.output_tokens == p for (_, usage), p in zip(answers, [6, 6, 8, 6, 6, 6], strict=True))
    # Seeded answers are reproducible: the same as each other and as the unbatched backend's.
    alone_backend = backend_for(tiny_cache, "gemma3", max_batch_size=1)
    (reference,) = one_by_one(alone_backend, [(messages, seeded)])
    assert answers[4] == answers[5] == reference
    asyncio.run(alone_backend.aclose())
    asyncio.run(backend.aclose())


def test_a_generate_failure_reaches_every_request_of_the_batch(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "llava", batch_window_ms=300)
    messages = [Message.user("Hi", [drawing("red")])]
    invalid = GenerationParams(max_new_tokens=5, temperature=0.7, top_p=-0.5)  # generate rejects it

    async def run() -> list[object]:
        return await asyncio.gather(
            *(answer(backend, messages, invalid) for _ in range(3)), return_exceptions=True
        )

    errors = asyncio.run(run())
    assert list(backend.batch_sizes) == [3]
    assert all(isinstance(e, BackendError) and "top_p" in str(e) for e in errors), errors
    assert backend.active_generations == 0
    # The worker survives: the next batch is served.
    assert together(backend, [(messages, greedy(3))])[0][1].output_tokens == 3
    asyncio.run(backend.aclose())


def test_a_request_that_cannot_be_prepared_fails_alone(tiny_cache: Path) -> None:
    """PaliGemma's processor rejects a prompt without an image: that request fails, the rest run."""
    backend = backend_for(tiny_cache, "paligemma", batch_window_ms=300)
    good = [([Message.user("What is it?", [drawing("red")])], greedy(5))] * 2
    alone = one_by_one(backend, good[:1])

    async def run() -> list[object]:
        requests = [good[0], ([Message.user("No picture at all.")], greedy(5)), good[1]]
        return await asyncio.gather(*(answer(backend, m, p) for m, p in requests), return_exceptions=True)

    first, failed, second = asyncio.run(run())
    assert isinstance(failed, BackendError) and "tiny-paligemma" in str(failed)
    assert first == second == alone[0]
    assert list(backend.batch_sizes) == [1, 2]  # the reference alone, then the two good requests together
    asyncio.run(backend.aclose())


def test_batched_queue_limit_and_close(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "llava", max_batch_size=2, max_queue=1, batch_window_ms=200)
    messages = [Message.user("Go on.", [drawing("red")])]

    async def run() -> None:
        streams = [backend.stream(messages, greedy(2000)) for _ in range(2)]
        await asyncio.gather(*(anext(s) for s in streams))  # one batch of two is generating
        queued = backend.stream(messages, greedy(5))
        waiting = asyncio.create_task(anext(queued))
        await asyncio.sleep(0.1)
        assert backend.active_generations == 3
        with pytest.raises(BackendUnavailable, match="max_concurrency 1 x max_batch_size 2 \\+ max_queue 1"):
            await anext(backend.stream(messages, greedy(5)))
        await backend.aclose()  # stops the running batch; the queued request fails as unavailable
        with pytest.raises(BackendUnavailable, match="closed"):
            await waiting
        for stream in streams:
            await stream.aclose()
        assert backend.active_generations == 0

    asyncio.run(run())
    assert list(backend.batch_sizes) == [2]


def test_batch_params_are_validated(tiny_cache: Path) -> None:
    context = BackendContext(cache_dir=tiny_cache)
    for bad in ({"max_batch_size": 0}, {"batch_window_ms": -1}):
        spec = ModelSpec(name="x", backend="hf", params={"tiny_demo": "llava", **bad})
        with pytest.raises(ValueError, match=next(iter(bad))):
            create_backend(spec, context)
