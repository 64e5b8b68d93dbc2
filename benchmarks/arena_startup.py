"""Start-up time and peak memory of the arena on the offline demo roster.

Runs ``python launch.py`` as a user would: first with an empty model cache (the demo models are
built, as on a fresh machine), then again with the cache filled; then plays battles in headless
Chromium and reads the server's peak resident memory (VmHWM) from /proc.

    python benchmarks/arena_startup.py [--battles 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw  # noqa: E402

from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, accept_terms, ask, start_arena, stop_arena, vote  # noqa: E402


def proc_memory_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def timed_start(tmp: Path, cache: Path) -> tuple[float, object]:
    import os

    os.environ["ARENA_TEST_CACHE_DIR"] = str(cache)
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server = start_arena(tmp, "--seed", "1")
    return time.perf_counter() - started, server


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--battles", type=int, default=5)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        cache = work_dir / "cache"
        cold_s, server = timed_start(work_dir / "cold", cache)
        idle = proc_memory_mib(server.process.pid)
        stop_arena(server)
        warm_s, server = timed_start(work_dir / "warm", cache)
        picture = work_dir / "picture.png"
        img = Image.new("RGB", (640, 480), "white")
        ImageDraw.Draw(img).ellipse((100, 100, 500, 400), fill="orange")
        img.save(picture)
        battle_s = []
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(server.url)
                accept_terms(page)
                for i in range(args.battles):
                    started = time.perf_counter()
                    ask(page, picture, f"Battle {i}: what is in this picture?")
                    battle_s.append(time.perf_counter() - started)
                    vote(page, ("vote-a", "vote-b", "vote-tie", "vote-bothbad")[i % 4])
                    page.click("#battle-new-round")
                    page.wait_for_function("() => document.querySelector('#battle-name-a').innerText === ''")
                browser.close()
            busy = proc_memory_mib(server.process.pid)
        finally:
            stop_arena(server)

    print("| measurement | value |")
    print("|---|---|")
    print(f"| start-up, empty model cache (builds 3 demo models) | {cold_s:.1f} s |")
    print(f"| start-up, models already built | {warm_s:.1f} s |")
    print(f"| server memory after start-up (RSS) | {idle['VmRSS']:.0f} MiB |")
    print(
        f"| both answers complete, median of {len(battle_s)} battles | {sorted(battle_s)[len(battle_s) // 2]:.2f} s |"
    )
    print(f"| server peak memory after {len(battle_s)} battles (VmHWM) | {busy['VmHWM']:.0f} MiB |")


if __name__ == "__main__":
    main()
