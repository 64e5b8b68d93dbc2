"""The shared million-battle data set of the leaderboard benchmarks, built once and cached.

A seeded file of 1,000,000 battles among 100 models (``benchmarks/ratings_bench.make_battles``:
realistic strength spread, popular models battle more, 35% ties of which a third are "tie (bothbad)",
all anonymous) as FastChat JSONL, and the same battles imported with ``python -m storage import`` into
an SQLite file and a PostgreSQL database. Everything lives under ``/tmp/arena-bench/`` (the PostgreSQL
database is ``arena_bench_1m`` on the server of ``ARENA_TEST_PG_URL``, default the ``test`` database on
127.0.0.1:5432, created when missing). A build takes a file lock, so several benchmark processes may
ask at once; a database counts as built only once its import finished (a marker file for SQLite, a
row count for PostgreSQL), so an interrupted build is redone.

Other benchmarks call ``jsonl_path()``, ``sqlite_url()`` and ``postgres_url()``; each returns at once
when the data is there. Every database URL is migrated to the newest schema before it is returned.

  python benchmarks/million.py            # build (or check) all three and print where they are
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path(os.environ.get("ARENA_BENCH_DIR", "/tmp/arena-bench"))
PG_ADMIN_URL = os.environ.get("ARENA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_DATABASE = "arena_bench_1m"
BATTLES = 1_000_000
MODELS = 100
SEED = 0
#: The environment of every command a leaderboard benchmark runs: offline, quiet, this checkout first.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "PYTHONPATH": str(ROOT),
}


@contextmanager
def _locked() -> Iterator[None]:
    """One builder at a time across processes."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log(message: str) -> None:
    print(f"[million] {message}", file=sys.stderr, flush=True)


def jsonl_path() -> Path:
    """The million-battle FastChat JSONL file (written on first use, ~0.2 GB)."""
    path = CACHE / f"battles-{BATTLES}-{MODELS}-s{SEED}.jsonl"
    if path.exists():
        return path
    with _locked():
        if not path.exists():
            from benchmarks.ratings_bench import make_battles, write_jsonl

            start = time.perf_counter()
            tmp = path.with_suffix(".tmp")
            write_jsonl(make_battles(BATTLES, MODELS, SEED), tmp)
            tmp.replace(path)
            _log(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return path


def _python(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True)


def _import(url: str) -> None:
    start = time.perf_counter()
    _python("-m", "storage", "upgrade", "--db", url)
    _python("-m", "storage", "import", "--db", url, str(jsonl_path()))
    _log(f"imported {BATTLES:,} battles into {url.split('@')[-1]} in {time.perf_counter() - start:.1f} s")


def sqlite_url() -> str:
    """The SQLite file holding the million battles (imported on first use), migrated to the newest schema."""
    db = CACHE / f"arena-{BATTLES}-{MODELS}-s{SEED}.db"
    done = db.with_suffix(".done")
    url = f"sqlite:///{db}"
    source = jsonl_path()  # before the lock: it may take the lock itself
    with _locked():
        if not done.exists():
            for stale in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
                stale.unlink(missing_ok=True)
            _import(url)
            done.write_text(str(source))
        _python("-m", "storage", "upgrade", "--db", url)
    return url


def postgres_url() -> str:
    """The PostgreSQL database holding the million battles (created and imported on first use),
    migrated to the newest schema."""
    import sqlalchemy as sa

    from storage.db import normalize_url

    admin_url = normalize_url(PG_ADMIN_URL)
    url = sa.engine.make_url(admin_url).set(database=PG_DATABASE).render_as_string(hide_password=False)
    jsonl_path()  # before the lock: it may take the lock itself
    with _locked():
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": PG_DATABASE}
                ).first()
            complete = exists is not None and _vote_count(url) == BATTLES
            if not complete:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
                    conn.exec_driver_sql(f'CREATE DATABASE "{PG_DATABASE}"')
                _import(url)
                engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
                engine.dispose()
        finally:
            admin.dispose()
        _python("-m", "storage", "upgrade", "--db", url)
    return url


def _vote_count(url: str) -> int:
    """Votes stored in the database at ``url`` (0 when it has no schema yet)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM votes")).scalar_one())
    except sa.exc.ProgrammingError:
        return 0
    finally:
        engine.dispose()


def main() -> int:
    print(f"jsonl     {jsonl_path()}")
    print(f"sqlite    {sqlite_url()}")
    print(f"postgres  {postgres_url()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
