"""Smoke benchmark of the ``hf`` backend on a GPU: load the demo architectures on cuda and stream.

For a lent GPU machine (no hub access): builds each tiny demo architecture locally, loads it through
the normal roster → registry → ``HFBackend`` path with the requested device and dtype, then streams
one request and a burst of concurrent requests, printing load time, time to first token and
throughput. Runs on CPU too (``--device cpu``), which is how it is checked without a GPU.

    python benchmarks/gpu_smoke.py --device cuda --dtype auto --concurrency 8 [--out result.json]
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
from models.tiny import ARCHITECTURES  # noqa: E402


def picture() -> Image.Image:
    img = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 20, 150, 200), fill="red")
    draw.ellipse((160, 40, 300, 200), fill="blue")
    return img


async def one_request(backend, params: GenerationParams) -> dict[str, float]:  # type: ignore[no-untyped-def]
    messages = [Message.user("Describe this picture in detail.", [picture()])]
    start = time.perf_counter()
    first = None
    chunks = 0
    async for delta in backend.stream(messages, params):
        if first is None:
            first = time.perf_counter() - start
        chunks += bool(delta)
    total = time.perf_counter() - start
    tokens = getattr(backend, "last_new_tokens", None) or chunks
    return {"ttft_s": first if first is not None else float("nan"), "total_s": total, "tokens": tokens}


async def measure(arch: str, args: argparse.Namespace, cache: Path) -> dict[str, object]:
    spec = ModelSpec(
        name=f"smoke-{arch}",
        backend="hf",
        params={"tiny_demo": arch, "device": args.device, "dtype": args.dtype},
    )
    start = time.perf_counter()
    backend = create_backend(spec, BackendContext(cache_dir=cache))
    load_s = time.perf_counter() - start
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    await one_request(backend, params)  # warm-up (CUDA context, kernels)
    single = await one_request(backend, params)
    start = time.perf_counter()
    burst = await asyncio.gather(*(one_request(backend, params) for _ in range(args.concurrency)))
    burst_s = time.perf_counter() - start
    await backend.aclose()
    return {
        "arch": arch,
        "device": getattr(backend, "device", args.device),
        "dtype": str(getattr(backend, "dtype", args.dtype)),
        "load_s": round(load_s, 3),
        "ttft_ms_1": round(single["ttft_s"] * 1000, 1),
        "tok_s_1": round(single["tokens"] / single["total_s"], 1),
        f"ttft_ms_p50_{args.concurrency}": round(statistics.median(r["ttft_s"] for r in burst) * 1000, 1),
        f"tok_s_total_{args.concurrency}": round(sum(r["tokens"] for r in burst) / burst_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--archs", nargs="*", default=list(ARCHITECTURES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}", flush=True)
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for arch in args.archs:
            try:
                row = asyncio.run(measure(arch, args, Path(cache)))
            except Exception as exc:  # report every architecture, even when one fails
                row = {"arch": arch, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
