"""Real tiny transformers models of each architecture, loaded and streamed through the registry on CPU."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from models.base import BackendError, BackendUnavailable, GenerationParams, InputRejected, Message, Usage
from models.registry import BackendContext, create_backend
from models.roster import ModelSpec
from models.tiny import ARCHITECTURES, build_tiny_model, ensure_tiny_model, tiny_model_dir

pytestmark = pytest.mark.slow

PARAMS = GenerationParams(max_new_tokens=12, temperature=0.8, top_p=0.95, seed=0)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding every tiny architecture, built once per test session."""
    cache = tmp_path_factory.mktemp("tiny-models")
    for arch in ARCHITECTURES:
        ensure_tiny_model(arch, cache)
    return cache


def drawing(colour: str = "red", size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A small picture with shapes on it."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, 48, 48), fill=colour, outline="black")
    draw.rectangle((56, 20, 90, 60), fill="blue")
    draw.line((0, size[1] - 1, size[0], 0), fill="green", width=3)
    return image


def backend_for(cache: Path, arch: str, **spec_fields: object):
    spec = ModelSpec(
        name=f"tiny-{arch}",
        backend="hf",
        params={"tiny_demo": arch, "device": "cpu", "dtype": "float32"},
        **spec_fields,  # type: ignore[arg-type]
    )
    return create_backend(spec, BackendContext(cache_dir=cache))


async def until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    """Wait (polling) until ``condition()`` holds; fail after a generous deadline."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def collect(backend, messages: list[Message], params: GenerationParams = PARAMS) -> list[str]:
    """The text deltas of one answer (the final Usage is kept in ``backend.test_usage``)."""

    async def run() -> list[str]:
        items = [item async for item in backend.stream(messages, params)]
        assert isinstance(items[-1], Usage) and all(isinstance(i, str) for i in items[:-1])
        backend.test_usage = items[-1]
        return items[:-1]

    return asyncio.run(run())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_streams_an_answer(tiny_cache: Path, arch: str) -> None:
    backend = backend_for(tiny_cache, arch)
    deltas = collect(backend, [Message.user("What is in this picture?", [drawing()])])
    assert deltas and any(d.strip() for d in deltas)
    assert backend.test_usage.output_tokens == PARAMS.max_new_tokens
    assert backend.test_usage.finish_reason == "length" and backend.test_usage.input_tokens > 0
    asyncio.run(backend.aclose())


def test_greedy_decoding_is_deterministic(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "gemma3")
    greedy = GenerationParams(max_new_tokens=8, temperature=0)
    messages = [Message.user("Describe the shapes.", [drawing()])]
    assert collect(backend, messages, greedy) == collect(backend, messages, greedy)


def test_two_images_and_multi_turn(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "idefics3")
    two = [Message.user("Compare these two pictures.", [drawing("red"), drawing("yellow", (40, 80))])]
    assert any(d.strip() for d in collect(backend, two))
    conversation = [
        Message.user("What colour is the circle?", [drawing()]),
        Message.assistant("The circle is red."),
        Message.user("And the rectangle?"),
    ]
    assert any(d.strip() for d in collect(backend, conversation))


def test_control_tokens_typed_by_users_stay_text(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "llava")
    prompt = "Is this <image> or </s> or USER: a trick?"
    assert collect(backend, [Message.user(prompt, [drawing()])])


def test_too_many_images(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "llava", max_images=1)
    with pytest.raises(InputRejected, match="at most 1 image"):
        collect(backend, [Message.user("Two?", [drawing(), drawing()])])


def test_worker_failure_becomes_backend_error(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "paligemma")  # PaliGemma's processor insists on an image
    with pytest.raises(BackendError, match="tiny-paligemma"):
        collect(backend, [Message.user("No picture at all.")])
    assert backend.active_generations == 0


def test_closing_the_stream_stops_generation(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "llava")
    long = GenerationParams(max_new_tokens=2000, temperature=0.8, seed=1)

    async def run() -> None:
        stream = backend.stream([Message.user("Tell me a long story.", [drawing()])], long)
        await anext(stream)
        assert backend.active_generations == 1
        await stream.aclose()  # returns once the generation has stopped
        assert backend.active_generations == 0
        assert backend.last_usage is not None and backend.last_usage.output_tokens < long.max_new_tokens
        # The worker is free again: a short request is served at once.
        short = [d async for d in backend.stream([Message.user("Hi", [drawing()])], PARAMS)]
        assert short[-1] == Usage(backend.last_usage.input_tokens, PARAMS.max_new_tokens, "length")

    asyncio.run(run())


def test_cancelling_the_consumer_stops_generation(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "gemma3")
    long = GenerationParams(max_new_tokens=2000, temperature=0.8, seed=2)

    async def run() -> None:
        got: list[str] = []

        async def consume() -> None:
            async for delta in backend.stream([Message.user("Go on forever.", [drawing()])], long):
                got.append(delta)

        task = asyncio.create_task(consume())
        await until(lambda: bool(got))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert backend.active_generations == 0

    asyncio.run(run())
    assert backend.last_usage is not None and backend.last_usage.output_tokens < long.max_new_tokens


def test_concurrency_limit_and_full_queue(tiny_cache: Path) -> None:
    """Unbatched: max_concurrency generations run together; beyond max_queue waiting ones, a request fails."""
    spec = ModelSpec(
        name="tiny-llava-pool",
        backend="hf",
        params={
            "tiny_demo": "llava",
            "device": "cpu",
            "dtype": "float32",
            "max_concurrency": 2,
            "max_queue": 1,
            "max_batch_size": 1,  # one generate per request (batched limits: test_hf_batch.py)
        },
    )
    backend = create_backend(spec, BackendContext(cache_dir=tiny_cache))
    long = GenerationParams(max_new_tokens=2000, temperature=0.8, seed=5)
    messages = [Message.user("Go on.", [drawing()])]

    async def run() -> None:
        first, second = backend.stream(messages, long), backend.stream(messages, long)
        # Both start generating: two worker threads.
        await asyncio.wait_for(asyncio.gather(anext(first), anext(second)), 60)
        third = backend.stream(messages, PARAMS)
        waiting = asyncio.create_task(anext(third))  # queued behind the two
        await until(lambda: backend.active_generations == 3)
        assert not waiting.done()
        with pytest.raises(BackendUnavailable, match="max_concurrency 2 \\+ max_queue 1"):
            await anext(backend.stream(messages, PARAMS))
        await first.aclose()  # frees a worker: the queued request runs
        assert isinstance(await asyncio.wait_for(waiting, 60), str)
        await third.aclose()
        await second.aclose()
        assert backend.active_generations == 0

    asyncio.run(run())
    asyncio.run(backend.aclose())


def test_health_check_generates_one_token(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "paligemma")  # needs an image even for the probe
    asyncio.run(backend.check())
    assert backend.last_usage is not None and backend.last_usage.output_tokens == 1
    asyncio.run(backend.aclose())
    with pytest.raises(BackendUnavailable, match="closed"):
        asyncio.run(backend.check())


def test_one_generation_at_a_time(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "gemma3")
    messages = [Message.user("Say something.", [drawing()])]

    async def run() -> list[str]:
        async def one() -> str:
            return "".join([d async for d in backend.stream(messages, PARAMS) if isinstance(d, str)])

        return list(await asyncio.gather(one(), one(), one()))

    answers = asyncio.run(run())
    assert answers[0].strip() and len(set(answers)) == 1  # same seed, serialised runs: same answer


def test_queued_request_is_dropped_when_its_consumer_leaves(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "llava")
    long = GenerationParams(max_new_tokens=2000, temperature=0.8, seed=3)
    messages = [Message.user("Go on.", [drawing()])]

    async def run() -> None:
        first = backend.stream(messages, long)
        await anext(first)  # the worker is busy with the first request
        second = backend.stream(messages, PARAMS)
        waiting = asyncio.create_task(anext(second))
        await until(lambda: backend.active_generations == 2)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await second.aclose()
        await first.aclose()
        assert backend.active_generations == 0

    asyncio.run(run())


def test_aclose_stops_a_running_generation(tiny_cache: Path) -> None:
    backend = backend_for(tiny_cache, "idefics3")
    long = GenerationParams(max_new_tokens=2000, temperature=0.8, seed=4)

    async def run() -> None:
        stream = backend.stream([Message.user("Go on.", [drawing()])], long)
        await anext(stream)
        await backend.aclose()  # returns once the worker has stopped
        # the generation was cut short, not run to its 2000 tokens
        assert backend.last_usage is not None and backend.last_usage.output_tokens < long.max_new_tokens
        with pytest.raises(BackendError, match="closed"):
            await anext(backend.stream([Message.user("Hi")], PARAMS))
        await stream.aclose()

    asyncio.run(run())


def test_hf_params_are_validated(tiny_cache: Path) -> None:
    context = BackendContext(cache_dir=tiny_cache)
    both = ModelSpec(name="x", backend="hf", params={"tiny_demo": "llava", "model": "/some/dir"})
    with pytest.raises(ValueError, match="exactly one"):
        create_backend(both, context)
    bad_device = ModelSpec(name="x", backend="hf", params={"tiny_demo": "llava", "device": "tpu"})
    with pytest.raises(ValueError, match="device"):
        create_backend(bad_device, context)
    missing = ModelSpec(name="x", backend="hf", params={"model": str(tiny_cache / "missing")})
    with pytest.raises(BackendError, match="cannot load"):
        create_backend(missing, context)


def test_ensure_tiny_model_is_idempotent(tiny_cache: Path) -> None:
    path = ensure_tiny_model("llava", tiny_cache)
    assert path == tiny_model_dir("llava", tiny_cache)
    stamp = (path / "config.json").stat().st_mtime_ns
    assert ensure_tiny_model("llava", tiny_cache) == path
    assert (path / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in tiny_cache.iterdir() if p.name.startswith(".")]  # no temp builds left


def test_unknown_architecture(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="llava"):
        ensure_tiny_model("qwen2_vl", tmp_path)


def test_larger_sizes_are_llava_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'100m' is not available for 'gemma3'"):
        build_tiny_model("gemma3", tmp_path / "m", size="100m")
    with pytest.raises(ValueError, match="'huge'"):
        build_tiny_model("llava", tmp_path / "m", size="huge")
    assert not (tmp_path / "m").exists()
