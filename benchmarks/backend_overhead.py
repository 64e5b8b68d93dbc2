"""What the arena's backend path costs over a bare streaming client, against the same local server.

The server is the tests' OpenAI-compatible streaming server (tests/models/openai_server.py), run in a
separate process so it does not share this process's GIL. Two clients stream from it, alternating
request by request in A-B, B-A order so that drift on a shared machine hits both alike:

* raw: ``httpx.AsyncClient.stream`` + SSE line parsing + ``json.loads``, yielding ``delta.content``
  (the least any Python client must do);
* arena: ``ManagedBackend`` (time limits, retry rule, accounting) over ``OpenAIBackend`` (request
  building, error mapping, usage), exactly as a battle calls it.

Printed: median and p90 time to first token for short answers, and tokens/s for long answers, one
stream and 8 concurrent streams. Targets: the arena path adds ≤ 5 ms to the median time to first
token and loses no throughput.

  python benchmarks/backend_overhead.py [--requests 300] [--long-tokens 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from models.base import GenerationParams, Message  # noqa: E402
from models.openai_compat import OpenAIBackend  # noqa: E402
from models.params import OpenAIParams  # noqa: E402
from models.wrapper import ManagedBackend  # noqa: E402

SERVER = """
import sys, time
from tests.models.openai_server import Behaviour, FakeOpenAIServer
reply = " ".join(f"w{i}" for i in range(int(sys.argv[1])))
with FakeOpenAIServer(Behaviour(reply=reply)) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()
"""

Stream = Callable[[int], AsyncIterable[str]]


def start_server(long_tokens: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(long_tokens)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def raw_stream(client: httpx.AsyncClient, url: str) -> Stream:
    async def stream(max_tokens: int) -> AsyncIterator[str]:
        body = {
            "model": "fake-vlm",
            "messages": [{"role": "user", "content": "Describe the picture."}],
            "stream": True,
            "max_tokens": max_tokens,
            "stream_options": {"include_usage": True},
        }
        async with client.stream("POST", url, json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                for choice in json.loads(data).get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text

    return stream


def arena_stream(managed: ManagedBackend) -> Stream:
    def stream(max_tokens: int) -> AsyncIterable[str]:
        params = GenerationParams(max_new_tokens=max_tokens, temperature=0.0)
        return managed.generate([Message.user("Describe the picture.")], params)  # what a battle iterates

    return stream


async def first_token(stream: Stream, tokens: int) -> float:
    started = time.perf_counter()
    elapsed = None
    async for _ in stream(tokens):
        if elapsed is None:
            elapsed = time.perf_counter() - started
    assert elapsed is not None
    return elapsed


async def tokens_per_second(stream: Stream, tokens: int, concurrency: int) -> tuple[float, float]:
    """Tokens per wall-clock second, and this process's CPU microseconds per token."""

    async def one() -> int:  # the server's tokens are words: count them in the text, not the deltas
        return len("".join([delta async for delta in stream(tokens)]).split())

    started, cpu = time.perf_counter(), time.process_time()
    counts = await asyncio.gather(*(one() for _ in range(concurrency)))
    assert all(c == tokens for c in counts), counts
    total = sum(counts)
    return total / (time.perf_counter() - started), (time.process_time() - cpu) / total * 1e6


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def main(requests: int, long_tokens: int, repeats: int, base_url: str) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None), limits=limits) as client:
        backend = OpenAIBackend("bench", OpenAIParams(base_url=base_url, model="fake-vlm"))
        paths: dict[str, Stream] = {
            "raw httpx client": raw_stream(client, f"{base_url}/chat/completions"),
            "arena wrapper + openai backend": arena_stream(ManagedBackend(backend)),
        }
        for stream in paths.values():  # warm both connection pools
            await first_token(stream, 4)

        def turns(i: int) -> list[tuple[str, Stream]]:
            """Both paths, in A-B then B-A order, so neither always runs second."""
            items = list(paths.items())
            return items if i % 2 == 0 else items[::-1]

        ttft: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(requests):
            for name, stream in turns(i):
                ttft[name].append(await first_token(stream, 8))

        throughput: dict[tuple[str, int], list[float]] = {}
        cpu_per_token: dict[tuple[str, int], list[float]] = {}
        for concurrency in (1, 8):
            for i in range(repeats):
                for name, stream in turns(i):
                    rate, cpu = await tokens_per_second(stream, long_tokens, concurrency)
                    throughput.setdefault((name, concurrency), []).append(rate)
                    cpu_per_token.setdefault((name, concurrency), []).append(cpu)
        await backend.aclose()

    print(f"\nTime to first token, {requests} alternating requests per path (8-token answers):")
    print(f"{'path':<34}{'median ms':>11}{'p90 ms':>9}")
    for name, values in ttft.items():
        print(f"{name:<34}{statistics.median(values) * 1e3:>11.2f}{pct(values, 0.9) * 1e3:>9.2f}")
    raw_name, arena_name = list(paths)
    added = (statistics.median(ttft[arena_name]) - statistics.median(ttft[raw_name])) * 1e3
    print(f"arena path adds {added:+.2f} ms to the median time to first token (target ≤ 5 ms)")

    print(f"\nThroughput, {long_tokens}-token answers, median of {repeats} alternating runs:")
    print("(tokens/s is bounded by the server process sharing the cores; client CPU per token is the")
    print(" client's own cost, the figure that shows overhead)")
    print(f"{'path':<34}{'streams':>8}{'tokens/s':>10}{'client CPU µs/token':>21}")

    def med(table: dict[tuple[str, int], list[float]], name: str, concurrency: int) -> float:
        return statistics.median(table[(name, concurrency)])

    for concurrency in (1, 8):
        for name in paths:
            rate, cpu = med(throughput, name, concurrency), med(cpu_per_token, name, concurrency)
            print(f"{name:<34}{concurrency:>8}{rate:>10,.0f}{cpu:>21.1f}")
        ratio = med(throughput, arena_name, concurrency) / med(throughput, raw_name, concurrency)
        cpu_ratio = med(cpu_per_token, arena_name, concurrency) / med(cpu_per_token, raw_name, concurrency)
        print(f"{'  arena / raw':<34}{concurrency:>8}{ratio:>10.2f}{cpu_ratio:>21.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--long-tokens", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    server, url = start_server(args.long_tokens)
    try:
        asyncio.run(main(args.requests, args.long_tokens, args.repeats, url))
    finally:
        server.communicate("", timeout=10)
