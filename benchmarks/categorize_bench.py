"""Labelling throughput: ``categorize`` and ``image-need`` over 1,000 battles at concurrency 1 and 16.

Builds N complete, voted battles with one image each in a fresh SQLite database (through the storage
layer, as the arena writes them), then runs both tasks with a scripted worker that answers after a
fixed delay (standing in for a model server), each run under its own tagger name so it starts from
nothing. ``categorize`` makes one call per battle, ``image-need`` two (the blind answer, then the
judge). Labels and tags are committed to the database as in production.

  python benchmarks/categorize_bench.py [--battles 1000] [--delay-ms 10] [--concurrency 1 16]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.categorize import Categorizer  # noqa: E402
from analysis.image_need import ImageNeedRunner  # noqa: E402
from analysis.model_tasks import LabelRunner  # noqa: E402
from models.base import GenerationParams  # noqa: E402
from models.scripted import ScriptedBackend  # noqa: E402
from models.wrapper import ManagedBackend  # noqa: E402
from storage import repo  # noqa: E402
from storage.db import make_engine, session_factory, upgrade  # noqa: E402
from storage.images import StoredImage  # noqa: E402

PARAMS = GenerationParams(max_new_tokens=64, temperature=0.0)
CATEGORIES = ("ocr", "captioning", "diagram", "humor")


def seed_battles(sessions, n: int) -> None:
    """N anonymous, voted one-turn battles with one image (placeholder rows) each, through storage.repo."""
    now = datetime.now(UTC)
    seeds = [repo.ModelSeed(name=m, display_name=m, organization="bench", backend="scripted") for m in "ab"]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, now)
        repo.ensure_voter_session(db, "bench-voter", None, now, None)
        for i in range(n):
            battle_id = f"battle-{i:06d}"
            sha = hashlib.sha256(str(i).encode()).hexdigest()
            picture = StoredImage(
                sha256=sha, mime="image/png", width=16, height=16, size_bytes=100, path=None
            )
            repo.add_images(db, [picture], now)
            repo.create_battle(
                db,
                battle_id=battle_id,
                model_a_id=ids["a"],
                model_b_id=ids["b"],
                session_id="bench-voter",
                now=now,
            )
            turn = repo.add_turn(
                db,
                battle_id=battle_id,
                index=0,
                prompt=f"Task {i} {CATEGORIES[i % 4]}?",
                image_hashes=[sha],
                now=now,
            )
            for side in "ab":
                repo.save_response(
                    db,
                    turn_id=turn.id,
                    side=side,
                    model_id=ids[side],
                    text=f"Answer {i} from {side}.",
                    started_at=now,
                    first_token_at=now,
                    finished_at=now,
                    output_chunks=1,
                    finish_reason="stop",
                )
            repo.set_battle_state(db, battle_id, "ready", now, None)
            repo.record_vote(db, battle_id=battle_id, winner="model_a", session_id="bench-voter", now=now)


def worker(name: str, delay_s: float) -> ManagedBackend:
    replies = {f"Task \\d+ {c}": f"category: {c}\nlanguage: en\nflags: none" for c in CATEGORIES}
    replies = {r"BLIND-[0-9a-f]{12}>>>": "[[NO]]", **replies}
    return ManagedBackend(
        ScriptedBackend(name, replies=replies, reply="I cannot see it.", first_token_delay_s=delay_s)
    )


async def timed(runner: LabelRunner) -> tuple[float, int, int]:
    pending = runner.pending()
    started = time.perf_counter()
    summary = await runner.run(pending)
    elapsed = time.perf_counter() - started
    assert summary.stored == len(pending) and not summary.errors and not summary.unparseable, (
        summary.to_dict()
    )
    return elapsed, len(pending), summary.calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--battles", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="the scripted worker's time to answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'labels.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        seed_battles(sessions, args.battles)
        print(
            f"{args.battles} battles with one image each; the scripted worker answers after {args.delay_ms:g} ms"
        )
        print(f"{'task':>11}{'concurrency':>12}{'calls':>7}{'seconds':>9}{'battles/s':>11}")
        for concurrency in args.concurrency:
            name = f"bench-c{concurrency}"
            runs: list[tuple[str, LabelRunner]] = [
                (
                    "categorize",
                    Categorizer(
                        sessions,
                        worker(name, delay),
                        tagger_name=name,
                        params=PARAMS,
                        concurrency=concurrency,
                    ),
                ),
                (
                    "image-need",
                    ImageNeedRunner(
                        sessions, worker(name, delay), model_name=name, params=PARAMS, concurrency=concurrency
                    ),
                ),
            ]
            for task, runner in runs:
                elapsed, n, calls = asyncio.run(timed(runner))
                print(f"{task:>11}{concurrency:>12}{calls:>7}{elapsed:>9.2f}{n / elapsed:>11.1f}")
        engine.dispose()


if __name__ == "__main__":
    main()
