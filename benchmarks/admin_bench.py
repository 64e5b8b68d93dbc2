"""How long the admin page's reads take on a million-vote arena: ``AdminService.models_overview()``
(votes per model in total and in the last 24 h, time to first token, tokens/s, error rate; its first
call counts every vote, later calls only the new ones) and the battle / voter lists.

The shared million-battle file (``benchmarks/million.py``: 1,000,000 battles, 100 models, 1.6M turns)
is imported into a fresh SQLite file and a fresh PostgreSQL database (dropped afterwards); then every
turn gets both models' responses with timings (3.2M rows, 2% of them failed), inserted in SQL, so the
timing figures have a live arena's volume to read. Each read runs ``--repeat`` times; the median and
the worst are printed, with the process's peak RSS.

  python benchmarks/admin_bench.py [--db sqlite|postgresql ...] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from arena.admin import AdminService  # noqa: E402
from arena.admin_stats import MIN_SAMPLES  # noqa: E402
from benchmarks.million import jsonl_path  # noqa: E402
from storage.db import make_engine, session_factory, upgrade  # noqa: E402
from storage.transfer.importer import import_battles  # noqa: E402
from tests.helpers import scratch_postgres_database  # noqa: E402

PG_ADMIN_URL = os.environ.get("ARENA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# Both sides of every turn: start at the turn's time, first token after 0.2-2.2 s, then 1-9 s of
# generation, 50-450 tokens; one response in 50 failed. Deterministic in the turn id.
_SQLITE_RESPONSES = """
INSERT INTO responses (turn_id, side, model_id, text, started_at, first_token_at, finished_at,
                       output_chunks, output_tokens, finish_reason, error)
SELECT t.id, s.side, CASE s.side WHEN 'a' THEN b.model_a_id ELSE b.model_b_id END, '',
       t.created_at,
       strftime('%Y-%m-%d %H:%M:%f', t.created_at, '+' || (0.2 + (t.id * 7 % 2000) / 1000.0) || ' seconds'),
       strftime('%Y-%m-%d %H:%M:%f', t.created_at,
                '+' || (0.2 + (t.id * 7 % 2000) / 1000.0 + 1 + (t.id * 13 % 8000) / 1000.0) || ' seconds'),
       50 + t.id % 400, 50 + t.id % 400,
       CASE WHEN t.id % 50 = 0 THEN NULL ELSE 'stop' END,
       CASE WHEN t.id % 50 = 0 THEN 'BackendError: HTTP 502' ELSE NULL END
FROM turns t JOIN battles b ON b.id = t.battle_id CROSS JOIN (SELECT 'a' AS side UNION ALL SELECT 'b') s
"""
_PG_RESPONSES = """
INSERT INTO responses (turn_id, side, model_id, text, started_at, first_token_at, finished_at,
                       output_chunks, output_tokens, finish_reason, error)
SELECT t.id, s.side, CASE s.side WHEN 'a' THEN b.model_a_id ELSE b.model_b_id END, '',
       t.created_at,
       t.created_at + make_interval(secs => 0.2 + mod(t.id * 7, 2000) / 1000.0),
       t.created_at + make_interval(secs => 1.2 + mod(t.id * 7, 2000) / 1000.0 + mod(t.id * 13, 8000) / 1000.0),
       50 + mod(t.id, 400), 50 + mod(t.id, 400),
       CASE WHEN mod(t.id, 50) = 0 THEN NULL ELSE 'stop' END,
       CASE WHEN mod(t.id, 50) = 0 THEN 'BackendError: HTTP 502' ELSE NULL END
FROM turns t JOIN battles b ON b.id = t.battle_id CROSS JOIN (VALUES ('a'), ('b')) AS s(side)
"""


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database of ``kind``, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="admin-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'arena.db'}"
            upgrade(url)
            yield url
    else:
        with scratch_postgres_database(PG_ADMIN_URL, "admin_bench") as url:
            upgrade(url)
            yield url


def fill(url: str) -> dict[str, Any]:
    """Import the million battles and add both responses of every turn; return counts and times."""
    engine = make_engine(url)
    try:
        started = time.perf_counter()
        import_battles(engine, jsonl_path(), progress=False)
        imported = time.perf_counter() - started
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql(_PG_RESPONSES if engine.dialect.name == "postgresql" else _SQLITE_RESPONSES)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        with engine.connect() as conn:
            votes = conn.execute(sa.text("SELECT count(*) FROM votes")).scalar_one()
            responses = conn.execute(sa.text("SELECT count(*) FROM responses")).scalar_one()
        return {
            "votes": votes,
            "responses": responses,
            "import_s": imported,
            "responses_s": time.perf_counter() - started,
        }
    finally:
        engine.dispose()


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, worst) seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times)


def run(kind: str, repeat: int) -> None:
    with database(kind) as url:
        counts = fill(url)
        print(
            f"{kind}: {counts['votes']:,} votes, {counts['responses']:,} responses "
            f"(import {counts['import_s']:.1f} s, responses {counts['responses_s']:.1f} s)",
            flush=True,
        )
        engine = make_engine(url)
        admin = AdminService(session_factory(engine))
        started = time.perf_counter()
        rows = admin.models_overview()  # the first call counts every vote; later ones only new votes
        print(f"  models_overview  first call {time.perf_counter() - started:.3f} s", flush=True)
        assert len(rows) == 100 and sum(r.votes_total for r in rows) == 2 * counts["votes"]
        assert all(r.ttft_median_s is not None and r.responses >= MIN_SAMPLES for r in rows)
        for name, fn in (
            ("models_overview", admin.models_overview),
            ("problem_battles", admin.problem_battles),
            ("flagged_voters", admin.flagged_voters),
            ("audit_log", admin.audit_log),
        ):
            median, worst = timed(fn, repeat)
            print(f"  {name:<16} median {median:.3f} s   worst {worst:.3f} s", flush=True)
        engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of this process so far: {peak:.0f} MB", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--db",
        action="append",
        choices=("sqlite", "postgresql"),
        help="database kinds to measure (default: both)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="calls of each read (default: 5)")
    args = parser.parse_args(argv)
    for kind in args.db or ["sqlite", "postgresql"]:
        run(kind, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
