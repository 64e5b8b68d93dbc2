"""Smoke benchmark of the ``hf`` backend on a GPU: load random VLMs on cuda and stream through the arena path.

For a lent GPU machine (no hub access): builds each architecture locally (``--size tiny``: the demo
models; ``--size 100m``: a ~100M-parameter LLaVA), loads it through the normal roster → registry →
``HFBackend`` path with the requested device, dtype and ``max_concurrency``, then streams one request
and a burst of concurrent requests through the same wrapper a battle uses, printing load time, time to
first token and throughput (tokens as counted by the backend). Runs on CPU too (``--device cpu``),
which is how it is checked without a GPU.

``--batching`` instead compares batched generation (``max_batch_size``, default 8) with one
``generate`` per request (``max_batch_size: 1``) at 1, 4, 8 and 16 concurrent requests (``--levels``):
total tokens/s of the burst and the median time to first token, one JSON row per architecture, mode
and level, then a table.

    python benchmarks/gpu_smoke.py --device cuda --dtype auto --size 100m --concurrency 8 \
        --max-concurrency 1 4 [--out result.json]
    python benchmarks/gpu_smoke.py --device cpu --batching --archs llava --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw  # noqa: E402

from models.base import GenerationParams, Message  # noqa: E402
from models.registry import BackendContext, create_backend  # noqa: E402
from models.roster import ModelSpec  # noqa: E402
from models.tiny import ARCHITECTURES, build_tiny_model  # noqa: E402
from models.wrapper import ManagedBackend  # noqa: E402


def picture() -> Image.Image:
    img = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 20, 150, 200), fill="red")
    draw.ellipse((160, 40, 300, 200), fill="blue")
    return img


async def one_request(
    backend: ManagedBackend, params: GenerationParams, variant: int = 0
) -> dict[str, float]:
    """Stream one answer; ``variant`` lengthens the prompt (bursts mix prompt lengths)."""
    messages = [Message.user("Describe this picture in detail." + " Please." * (variant % 4), [picture()])]
    generation = backend.generate(messages, params)
    async for _ in generation:
        pass
    stats = generation.stats
    return {
        "ttft_s": stats.first_token_s if stats.first_token_s is not None else float("nan"),
        "total_s": stats.total_s or float("nan"),
        "tokens": stats.output_tokens or stats.chunks,
    }


def load(
    arch: str, args: argparse.Namespace, cache: Path, max_concurrency: int, max_batch_size: int, queue: int
) -> tuple[ManagedBackend, float]:
    """Build (once) and load ``arch`` through roster → registry → wrapper; returns it and its load time."""
    model_dir = cache / f"{arch}-{args.size}"
    if not model_dir.is_dir():
        build_tiny_model(arch, model_dir, size=args.size)
    spec = ModelSpec(
        name=f"smoke-{arch}",
        backend="hf",
        params={
            "model": str(model_dir),
            "device": args.device,
            "dtype": args.dtype,
            "max_concurrency": max_concurrency,
            "max_queue": queue,
            "max_batch_size": max_batch_size,
            "batch_window_ms": args.batch_window_ms,
        },
    )
    start = time.perf_counter()
    backend = ManagedBackend.for_spec(spec, create_backend(spec, BackendContext(cache_dir=cache)))
    return backend, time.perf_counter() - start


async def measure(
    arch: str, args: argparse.Namespace, cache: Path, max_concurrency: int
) -> dict[str, object]:
    backend, load_s = load(arch, args, cache, max_concurrency, args.max_batch_size, args.concurrency)
    params_count = sum(p.numel() for p in backend.backend.model.parameters())  # type: ignore[attr-defined]
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    await one_request(backend, params)  # warm-up (CUDA context, kernels)
    single = await one_request(backend, params)
    start = time.perf_counter()
    burst = await asyncio.gather(*(one_request(backend, params) for _ in range(args.concurrency)))
    burst_s = time.perf_counter() - start
    await backend.aclose()
    inner = backend.backend
    return {
        "arch": arch,
        "size": args.size,
        "params_m": round(params_count / 1e6, 1),
        "max_concurrency": max_concurrency,
        "max_batch_size": args.max_batch_size,
        "device": getattr(inner, "device", args.device),
        "dtype": str(getattr(inner, "dtype", args.dtype)),
        "load_s": round(load_s, 3),
        "ttft_ms_1": round(single["ttft_s"] * 1000, 1),
        "tok_s_1": round(single["tokens"] / single["total_s"], 1),
        f"ttft_ms_p50_{args.concurrency}": round(statistics.median(r["ttft_s"] for r in burst) * 1000, 1),
        f"tok_s_total_{args.concurrency}": round(sum(r["tokens"] for r in burst) / burst_s, 1),
    }


async def burst(backend: ManagedBackend, params: GenerationParams, level: int) -> tuple[float, float]:
    """``level`` concurrent requests: (total tokens/s of the burst, median time to first token in s)."""
    start = time.perf_counter()
    runs = await asyncio.gather(*(one_request(backend, params, i) for i in range(level)))
    wall = time.perf_counter() - start
    return sum(r["tokens"] for r in runs) / wall, statistics.median(r["ttft_s"] for r in runs)


async def compare_batching(arch: str, args: argparse.Namespace, cache: Path) -> list[dict[str, object]]:
    """Batched vs unbatched bursts at each level, alternating burst by burst (so that a busy machine
    slows both alike); each figure is the median of ``--repeats`` bursts."""
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    modes = {"batched": args.max_batch_size, "unbatched": 1}
    backends = {mode: load(arch, args, cache, 1, size, max(args.levels))[0] for mode, size in modes.items()}
    for backend in backends.values():
        await one_request(backend, params)  # warm-up
    rows: list[dict[str, object]] = []
    for level in args.levels:
        bursts: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
        for _ in range(args.repeats):
            for mode, backend in backends.items():
                bursts[mode].append(await burst(backend, params, level))
        for mode, runs in bursts.items():
            rows.append(
                {
                    "arch": arch,
                    "mode": mode,
                    "max_batch_size": modes[mode],
                    "concurrent": level,
                    "tok_s": round(statistics.median(b[0] for b in runs), 1),
                    "ttft_ms_p50": round(statistics.median(b[1] for b in runs) * 1000, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    for backend in backends.values():
        await backend.aclose()
    return rows


def batching_table(rows: list[dict[str, object]]) -> str:
    """A Markdown table: per architecture and level, tokens/s and median TTFT both ways, and the ratio."""
    lines = [
        "| model | concurrent | tok/s batched | tok/s unbatched | speed-up | TTFT p50 batched | TTFT p50 unbatched |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["arch"], r["mode"], r["concurrent"]): r for r in rows if "mode" in r}
    for arch, mode, level in by_key:
        if mode != "batched" or (arch, "unbatched", level) not in by_key:
            continue
        b, u = by_key[(arch, mode, level)], by_key[(arch, "unbatched", level)]
        ratio = float(b["tok_s"]) / float(u["tok_s"])  # type: ignore[arg-type]
        lines.append(
            f"| {arch} | {level} | {b['tok_s']} | {u['tok_s']} | {ratio:.1f}x | "
            f"{b['ttft_ms_p50']} ms | {u['ttft_ms_p50']} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--archs", nargs="*", default=None, help="default: all (tiny) or llava (100m)")
    parser.add_argument("--size", choices=["tiny", "100m"], default="tiny")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        nargs="*",
        default=[1],
        help="the hf backend's max_concurrency values to try",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=8, help="the hf backend's max_batch_size (1: unbatched)"
    )
    parser.add_argument("--batch-window-ms", type=float, default=10, help="the hf backend's batch window")
    parser.add_argument(
        "--batching", action="store_true", help="compare batched and unbatched bursts at --levels"
    )
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 4, 8, 16], help="concurrent requests")
    parser.add_argument("--repeats", type=int, default=3, help="bursts per level (the median is reported)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}", flush=True)
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}", flush=True)
    archs = args.archs or (list(ARCHITECTURES) if args.size == "tiny" else ["llava"])
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for arch in archs:
            if args.batching:
                rows.extend(asyncio.run(compare_batching(arch, args, Path(cache))))
                continue
            for max_concurrency in args.max_concurrency:
                try:
                    row = asyncio.run(measure(arch, args, Path(cache), max_concurrency))
                except Exception as exc:  # report every architecture, even when one fails
                    row = {"arch": arch, "error": f"{type(exc).__name__}: {exc}"}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.batching:
        print(batching_table(rows), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
