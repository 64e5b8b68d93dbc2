"""How fast ``storage.transfer.import_battles`` loads a FastChat battle file, per database.

Generates N synthetic FastChat battles (100 models, 35% ties, short one-turn conversations) into a
JSONL file, imports it into a freshly migrated database and reports battles/s (the time includes
reading and validating the file). Without ``--db`` it runs on a temporary SQLite file and on a
temporary PostgreSQL database created (and dropped) through the admin URL in ``ARENA_TEST_PG_URL``
(default: the ``test`` database on 127.0.0.1:5432). ``--repeat R`` imports R times per database, each
time into a fresh one, and reports every run and the median.

  python benchmarks/storage_import_bench.py [--db URL ...] [--battles N] [--repeat R]

``run(db_url, n)`` is the entry point other benchmarks call.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from storage.db import make_engine, normalize_url, upgrade  # noqa: E402
from storage.transfer.importer import import_battles  # noqa: E402
from tests.helpers import scratch_postgres_database  # noqa: E402

PG_ADMIN_URL = os.environ.get("ARENA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MODELS = [f"bench-model-{i:03d}" for i in range(100)]
TIE_SHARE = 0.35


def write_battles(path: Path, n: int, seed: int = 0) -> None:
    """Write ``n`` synthetic FastChat clean-battle records as JSON Lines."""
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            model_a, model_b = rng.sample(MODELS, 2)
            draw = rng.random()
            if draw < TIE_SHARE:
                winner = "tie" if draw < TIE_SHARE / 2 else "tie (bothbad)"
            else:
                winner = "model_a" if draw < (1 + TIE_SHARE) / 2 else "model_b"
            prompt = f"What is in picture {i}?"
            record = {
                "question_id": f"{rng.getrandbits(128):032x}",
                "model_a": model_a,
                "model_b": model_b,
                "winner": winner,
                "judge": f"arena_user_{rng.randrange(20_000)}",
                "turn": 1,
                "anony": True,
                "language": "English",
                "tstamp": round(t0 + i * 0.5, 3),
                "conversation_a": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"A cat, says {model_a}."},
                ],
                "conversation_b": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"A dog, says {model_b}."},
                ],
            }
            fh.write(json.dumps(record) + "\n")


def run(db_url: str, n: int, battles_file: Path | None = None) -> dict[str, object]:
    """Import ``n`` synthetic battles into ``db_url`` (migrated first); return the timing.

    The database should be empty: the battle ids are random, but the same ``n`` always gives the
    same file, so a second run into the same database is refused as a re-import. ``battles_file``
    is that file when the caller wrote it already (``write_battles``).
    """
    upgrade(db_url)
    with tempfile.TemporaryDirectory(prefix="arena-import-bench-") as tmp:
        path = battles_file
        if path is None:
            path = Path(tmp) / "battles.jsonl"
            write_battles(path, n)
        engine = make_engine(db_url)
        try:
            report = import_battles(engine, path, progress=False)
        finally:
            engine.dispose()
    return {
        "database": sa.engine.make_url(normalize_url(db_url)).get_backend_name(),
        "url": normalize_url(db_url).split("@")[-1],
        "battles": report.battles,
        "seconds": round(report.seconds, 3),
        "battles_per_s": round(report.battles_per_second),
    }


def temporary_postgres() -> AbstractContextManager[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    return scratch_postgres_database(PG_ADMIN_URL, "arena_bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--db", action="append", metavar="URL", help="database to import into (repeatable; should be empty)"
    )
    parser.add_argument("--battles", type=int, default=500_000, metavar="N", help="battles to generate")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="R", help="imports per database, each into a fresh one"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or (args.db and args.repeat > 1):
        parser.error("--repeat needs temporary databases (no --db) and must be at least 1")

    results: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="arena-import-bench-") as tmp:
        battles_file = Path(tmp) / "battles.jsonl"
        write_battles(battles_file, args.battles)
        for _ in range(args.repeat):
            with ExitStack() as stack:
                urls = args.db or [
                    f"sqlite:///{Path(stack.enter_context(tempfile.TemporaryDirectory())) / 'bench.db'}",
                    stack.enter_context(temporary_postgres()),
                ]
                for url in urls:
                    result = run(url, args.battles, battles_file)
                    results.setdefault(str(result["database"]), []).append(result)

    print(f"\nimport of {args.battles:,} synthetic FastChat battles (JSONL, read + validate + write)\n")
    print("| database | battles | seconds | battles/s |" + (" runs (battles/s) |" if args.repeat > 1 else ""))
    print("|---|---:|---:|---:|" + ("---|" if args.repeat > 1 else ""))
    for database, runs in results.items():
        seconds = statistics.median(float(r["seconds"]) for r in runs)  # type: ignore[arg-type]
        line = f"| {database} | {args.battles:,} | {seconds:.2f} | {round(args.battles / seconds):,} |"
        if args.repeat > 1:
            line += " " + ", ".join(f"{r['battles_per_s']:,}" for r in runs) + " |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
