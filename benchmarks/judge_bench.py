"""Judge-runner throughput: battles judged per second at concurrency 1, 8 and 32.

Builds N complete battles in a fresh SQLite database (through the storage layer, as the arena writes
them), then judges all of them with a scripted judge that answers after a fixed delay, at each
concurrency level (each level under its own judge name, so every run starts from nothing). Both
answer orders are judged, so one battle is two judge calls; verdicts are committed as the runner
does in production. If the runner serialised requests, battles/s would not grow with concurrency.

  python benchmarks/judge_bench.py [--battles 1000] [--delay-ms 10] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.judge import JudgeRunner  # noqa: E402
from models.base import GenerationParams  # noqa: E402
from models.scripted import ScriptedBackend  # noqa: E402
from models.wrapper import ManagedBackend  # noqa: E402
from storage import repo  # noqa: E402
from storage.db import make_engine, session_factory, upgrade  # noqa: E402


def seed_battles(sessions, n: int) -> None:
    """N anonymous, voted battles of one turn between two models, written through storage.repo."""
    now = datetime.now(UTC)
    seeds = [repo.ModelSeed(name=m, display_name=m, organization="bench", backend="scripted") for m in "ab"]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, now)
        repo.ensure_voter_session(db, "bench-voter", None, now, None)
        for i in range(n):
            battle_id = f"battle-{i:06d}"
            repo.create_battle(
                db,
                battle_id=battle_id,
                model_a_id=ids["a"],
                model_b_id=ids["b"],
                session_id="bench-voter",
                now=now,
            )
            turn = repo.add_turn(
                db, battle_id=battle_id, index=0, prompt=f"Question {i}?", image_hashes=[], now=now
            )
            for side, text in (("a", f"Answer {i} from a."), ("b", f"A longer answer {i} from b.")):
                repo.save_response(
                    db,
                    turn_id=turn.id,
                    side=side,
                    model_id=ids[side],
                    text=text,
                    started_at=now,
                    first_token_at=now,
                    finished_at=now,
                    output_chunks=1,
                    finish_reason="stop",
                )
            repo.set_battle_state(db, battle_id, "ready", now, None)


async def judge_all(sessions, concurrency: int, delay_s: float) -> tuple[float, int]:
    name = f"bench-judge-c{concurrency}"
    backend = ScriptedBackend(name, reply="Assistant B is more complete.\n[[B]]", first_token_delay_s=delay_s)
    runner = JudgeRunner(
        sessions,
        ManagedBackend(backend),
        judge_name=name,
        params=GenerationParams(max_new_tokens=64, temperature=0.0),
        concurrency=concurrency,
    )
    battles = runner.pending()
    started = time.perf_counter()
    summary = await runner.run(battles)
    elapsed = time.perf_counter() - started
    assert summary.calls == 2 * len(battles) and summary.verdicts["B"] == summary.calls, summary
    return elapsed, len(battles)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--battles", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="the scripted judge's time to answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'judge.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        seed_battles(sessions, args.battles)
        print(f"{args.battles} battles, 2 judge calls each, judge answers after {args.delay_ms:g} ms")
        print(f"{'concurrency':>11}{'seconds':>9}{'battles/s':>11}{'speed-up':>10}")
        base = None
        for concurrency in args.concurrency:
            elapsed, n = asyncio.run(judge_all(sessions, concurrency, args.delay_ms / 1000))
            rate = n / elapsed
            base = base or rate
            print(f"{concurrency:>11}{elapsed:>9.2f}{rate:>11.1f}{rate / base:>9.1f}×")
        engine.dispose()


if __name__ == "__main__":
    main()
