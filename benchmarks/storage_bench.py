"""Vote-recording throughput and latency on SQLite and PostgreSQL, plus the import benchmark.

For each database (a temporary SQLite file; a temporary PostgreSQL database created and dropped
through the admin database) it creates ~20,000 ready battles, then records votes through
``storage.repo.record_vote`` (one transaction each, via ``storage.db.run_in_transaction``) with 1 and
8 concurrent writers: threads sharing one engine, and processes with an engine each (threads share
one GIL). Latency is one vote's transaction, from ``begin`` to commit. If
``benchmarks/storage_import_bench.py`` provides ``run(db_url, n) -> dict`` it is run for 500,000
battles on a fresh migrated database of each kind. Everything is printed as one markdown table.

    python benchmarks/storage_bench.py [--pg-admin URL] [--battles 20000] [--import-battles 500000]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from storage import repo  # noqa: E402
from storage.db import (  # noqa: E402
    make_engine,
    run_in_transaction,
    session_factory,
    upgrade,
)
from storage.schema import WINNERS  # noqa: E402
from tests.helpers import scratch_postgres_database  # noqa: E402
from tests.storage.vote_writers import NOW, ready_id, seed_battles  # noqa: E402

PG_ADMIN_URL = os.environ.get("ARENA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IMPORT_BENCH = Path(__file__).with_name("storage_import_bench.py")
#: (writer kind, writers, votes in all) for each vote run; each run votes on battles of its own.
RUNS = (("thread", 1, 2000), ("thread", 8, 4000), ("process", 2, 4000), ("process", 8, 4000))


@dataclass
class WriterResult:
    latencies_s: list[float]
    started: float
    finished: float
    retries: int


@dataclass
class Row:
    database: str
    workload: str
    writers: str
    count: int
    per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    retries: int | None = None


def vote_loop(factory: Any, battle_ids: Sequence[str], start: Any) -> WriterResult:
    """Record one vote per battle, timing each transaction; ``start`` lines the writers up."""
    retries = [0]

    def count(_exc: BaseException, _attempt: int) -> None:
        retries[0] += 1

    # Each vote its own transaction, the way the arena records them (autocommit on PostgreSQL).
    target = repo.vote_target(factory.kw["bind"])
    latencies = []
    start.wait()
    started = time.monotonic()
    for i, battle_id in enumerate(battle_ids):
        t0 = time.perf_counter()
        run_in_transaction(
            target,
            lambda s, b=battle_id, i=i: repo.record_vote(
                s, battle_id=b, winner=WINNERS[i % 4], session_id=None, now=NOW, client_token=f"bench-{b}"
            ),
            on_retry=count,
        )
        latencies.append(time.perf_counter() - t0)
    return WriterResult(latencies, started, time.monotonic(), retries[0])


def process_writer(url: str, battle_ids: Sequence[str], start: Any, results: Any) -> None:
    """A writer process: its own engine, connected before the start line."""
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    try:
        results.put(vote_loop(session_factory(engine), battle_ids, start))
    finally:
        engine.dispose()


def run_threads(url: str, slices: list[list[str]]) -> list[WriterResult]:
    engine = make_engine(url, pool_size=len(slices))
    with engine.connect() as c1:  # open the pool's connections before timing
        extra = [engine.connect() for _ in slices[1:]]
        for conn in [c1, *extra]:
            conn.execute(sa.text("SELECT 1"))
        for conn in extra:
            conn.close()
    factory = session_factory(engine)
    start = threading.Barrier(len(slices))
    results: list[WriterResult] = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(vote_loop(factory, s, start))) for s in slices
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert len(results) == len(slices), "a writer thread failed"
    return results


def run_processes(url: str, slices: list[list[str]]) -> list[WriterResult]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(slices))
    queue = ctx.Queue()
    procs = [ctx.Process(target=process_writer, args=(url, s, start, queue)) for s in slices]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return results


def vote_rows(database: str, url: str, first: int) -> list[Row]:
    rows = []
    for kind, writers, total in RUNS:
        ids = [ready_id(i) for i in range(first, first + total)]
        first += total
        slices = [ids[w::writers] for w in range(writers)]
        runner = run_threads if kind == "thread" else run_processes
        results = runner(url, slices)
        latencies = sorted(x for r in results for x in r.latencies_s)
        wall = max(r.finished for r in results) - min(r.started for r in results)
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        rows.append(
            Row(
                database,
                "record_vote",
                f"{writers} {kind}{'es' if kind == 'process' and writers > 1 else 's' if writers > 1 else ''}",
                len(latencies),
                len(latencies) / wall,
                q[49] * 1000,
                q[98] * 1000,
                sum(r.retries for r in results),
            )
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    engine = make_engine(url)
    with engine.connect() as conn:
        votes = conn.execute(sa.text("SELECT count(*) FROM votes")).scalar()
    engine.dispose()
    assert votes == sum(total for _, _, total in RUNS), votes
    return rows


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="arena-bench-") as tmp:
        yield f"sqlite:///{tmp}/arena.db"


def postgres_database(admin_url: str) -> AbstractContextManager[str]:
    return scratch_postgres_database(admin_url, "arena_bench")


def import_bench() -> Callable[[str, int], dict[str, Any]] | None:
    """``run`` from benchmarks/storage_import_bench.py, when that file exists and has it."""
    if not IMPORT_BENCH.exists():
        return None
    spec = importlib.util.spec_from_file_location("storage_import_bench", IMPORT_BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "run", None)


def import_row(database: str, run: Callable[[str, int], dict[str, Any]], url: str, n: int) -> Row:
    """Run the import benchmark on a fresh migrated database; find its battles/s in the result."""
    upgrade(url)
    started = time.perf_counter()
    result = run(url, n)
    elapsed = time.perf_counter() - started
    print(f"  import result: {result}", file=sys.stderr, flush=True)
    rate = next((float(v) for k, v in result.items() if "per_s" in k or "per_sec" in k), n / elapsed)
    return Row(database, "import (storage_import_bench.run)", "—", n, rate)


def table(rows: list[Row]) -> str:
    def ms(x: float | None) -> str:
        return "—" if x is None else f"{x:.1f}"

    lines = [
        "| database | workload | writers | count | per second | p50 ms | p99 ms | retries |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        retries = "—" if r.retries is None else str(r.retries)
        lines.append(
            f"| {r.database} | {r.workload} | {r.writers} | {r.count:,} | {r.per_s:,.0f} "
            f"| {ms(r.p50_ms)} | {ms(r.p99_ms)} | {retries} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg-admin", default=PG_ADMIN_URL, help="admin database URL (default %(default)s)")
    parser.add_argument("--battles", type=int, default=20_000, help="ready battles created per database")
    parser.add_argument("--import-battles", type=int, default=500_000)
    parser.add_argument("--skip-import", action="store_true")
    args = parser.parse_args()
    needed = sum(total for _, _, total in RUNS)
    if args.battles < needed:
        parser.error(f"--battles must be at least {needed}")

    rows: list[Row] = []
    databases = {"SQLite": sqlite_database, "PostgreSQL": lambda: postgres_database(args.pg_admin)}
    for name, database in databases.items():
        print(f"{name}: votes", file=sys.stderr, flush=True)
        with database() as url:
            upgrade(url)
            engine = make_engine(url)
            seed_battles(engine, [ready_id(i) for i in range(args.battles)])
            engine.dispose()
            rows.extend(vote_rows(name, url, first=0))

    run = None if args.skip_import else import_bench()
    notes = []
    if run is None:
        notes.append(
            "import benchmark not available (benchmarks/storage_import_bench.py with run(db_url, n) is missing)"
            if not args.skip_import
            else "import benchmark skipped (--skip-import)"
        )
    else:
        for name, database in databases.items():
            print(f"{name}: import of {args.import_battles:,} battles", file=sys.stderr, flush=True)
            with database() as url:
                rows.append(import_row(name, run, url, args.import_battles))

    print(table(rows))
    for note in notes:
        print(f"\n{note}")
    eight = [r for r in rows if r.workload == "record_vote" and r.writers.startswith("8 ")]
    print(
        "\ntargets (8 writers: >= 1,000 votes/s, p99 <= 20 ms): "
        + "; ".join(
            f"{r.database} {r.writers}: {'met' if r.per_s >= 1000 and (r.p99_ms or 0) <= 20 else 'MISSED'}"
            for r in eight
        )
    )
    print(f"cores: {os.cpu_count()}, Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}")


if __name__ == "__main__":
    main()
