"""What the vote guards cost per request: rate-limit counts, ban check, voter lock, identity checks.

For each database (a temporary SQLite file; a scratch PostgreSQL database created and dropped through
the admin database) it migrates the schema, then bulk-inserts a populated arena with Core INSERTs in
big batches: 2,000 voter sessions (each with its own IP hash) with 100 voted battles each, spread
over the last 30 days, plus one heavy voter session with 500 voted battles in the last 24 hours, 59
of them in the last hour, so its limit checks count the most rows. Requests then go through the real
:class:`arena.service.BattleService` (scripted backends, an image store in a temp dir):

- ``start_turn`` (text only, a new battle) and ``vote`` (after the battle's answers were streamed,
  untimed), each with the default limits ``RateLimits(60, 500)`` against ``RateLimits(0, 0)``, the
  baseline (limits off: the voter lock and the ban check still run);
- for a fresh voter (a new session and IP hash each request) and for the heavy voter's session and IP
  hash, whose limits are raised to ``RateLimits(10_000, 100_000)`` so it is never refused and every
  check counts all of its rows in the window. Each battle a timed heavy request creates is deleted
  afterwards (untimed), so every heavy request counts exactly 59 battles / 500 votes.

The two settings alternate request by request (in alternating order), over the same database, so
drift (cache warming, the database growing) falls on both alike. The identity checks that run per
answer and per prompt (``IdentityTerms.find``, ``is_identity_question``) are timed in microseconds.

    python benchmarks/guards_bench.py [--requests 200] [--backends sqlite,postgresql] [--pg-admin URL]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from arena.battle_session import BattleSession  # noqa: E402
from arena.guards.identity import IdentityTerms, is_identity_question  # noqa: E402
from arena.guards.limits import RateLimits  # noqa: E402
from arena.guards.policy import GuardPolicy  # noqa: E402
from arena.model_settings import seed_roster  # noqa: E402
from arena.service import BattleService  # noqa: E402
from models.registry import BackendContext, create_backend  # noqa: E402
from models.roster import ModelSpec  # noqa: E402
from models.scripted import WORDS  # noqa: E402
from storage.db import make_engine, session_factory, upgrade  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from storage.schema import Battle, Vote, VoterSession  # noqa: E402
from storage.vocabulary import ANONY, VOTED, WINNERS  # noqa: E402
from tests.helpers import scratch_postgres_database  # noqa: E402

PG_ADMIN_URL = os.environ.get("ARENA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")
DEFAULT_LIMITS = RateLimits(60, 500)
RAISED_LIMITS = RateLimits(10_000, 100_000)
NO_LIMITS = RateLimits(0, 0)
HEAVY_VOTES, HEAVY_RECENT_BATTLES = 500, 59
#: Rows per INSERT batch while populating.
BATCH = 20_000
PROMPT = "Describe this scene in detail: what is in the foreground, and what does the sign say?"
WARMUP = 5


def roster() -> list[ModelSpec]:
    """A few scripted models with names, organizations and aliases, as an operator's roster has them."""
    entries = [
        ("vista-7b", "Vista 7B", "Northwind Labs", ["Vista", "Northwind"]),
        ("lumen-vl", "Lumen VL", "Aurora Research", ["Lumen", "Aurora AI"]),
        ("orchid-2", "Orchid 2", "Bluefield AI", ["Orchid"]),
        ("tessera-13b", "Tessera 13B", "Quarry Systems", ["Tessera"]),
    ]
    return [
        ModelSpec(
            name=name,
            display_name=display,
            organization=org,
            aliases=aliases,
            backend="scripted",
            params={"chunk_words": 8},
        )
        for name, display, org, aliases in entries
    ]


def ip_hash(label: str) -> str:
    return hashlib.sha256(f"bench-ip:{label}".encode()).hexdigest()


# -- the populated database ------------------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    """What was inserted, and who the heavy voter is."""

    voters: int
    battles: int
    heavy_session: str
    heavy_ip_hash: str
    seconds: float


def _battle_rows(
    rng: random.Random, model_ids: list[int], session_id: str, created: list[datetime]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Voted battles (and their votes) of one voter session at the given times."""
    battles, votes = [], []
    for at in created:
        battle_id = f"{rng.getrandbits(128):032x}"
        a, b = rng.sample(model_ids, 2)
        voted_at = at + timedelta(seconds=rng.uniform(5, 60))
        battles.append(
            {
                "id": battle_id,
                "mode": ANONY,
                "model_a_id": a,
                "model_b_id": b,
                "session_id": session_id,
                "state": VOTED,
                "identity_leak": False,
                "excluded": False,
                "source": "arena",
                "created_at": at,
                "updated_at": voted_at,
            }
        )
        votes.append(
            {
                "battle_id": battle_id,
                "winner": rng.choice(WINNERS),
                "session_id": session_id,
                "decision_s": rng.uniform(2, 40),
                "created_at": voted_at,
            }
        )
    return battles, votes


def populate(
    engine: sa.Engine, model_ids: list[int], voters: int, per_voter: int, now: datetime, seed: int
) -> Population:
    """Insert the voter sessions, voted battles and votes of a busy arena, in big Core INSERT batches."""
    started = time.perf_counter()
    rng = random.Random(seed)
    month = timedelta(days=30).total_seconds()
    heavy = f"heavy-{rng.getrandbits(64):016x}"
    sessions: list[dict[str, Any]] = [
        {
            "id": f"voter-{i:05d}-{rng.getrandbits(48):012x}",
            "ip_hash": ip_hash(f"voter-{i}"),
            "user_agent": "Mozilla/5.0 (bench)",
            "banned": False,
            "anomalous": False,
            "created_at": now - timedelta(days=31),
        }
        for i in range(voters)
    ]
    sessions.append({**sessions[0], "id": heavy, "ip_hash": ip_hash("heavy")})
    battles: list[dict[str, Any]] = []
    votes: list[dict[str, Any]] = []
    total = 0
    with engine.begin() as conn:
        conn.execute(sa.insert(VoterSession.__table__), sessions)

    def flush() -> None:
        with engine.begin() as conn:
            conn.execute(sa.insert(Battle.__table__), battles)
            conn.execute(sa.insert(Vote.__table__), votes)
        battles.clear()
        votes.clear()

    for voter in sessions[:-1]:
        created = [now - timedelta(seconds=rng.uniform(180, month)) for _ in range(per_voter)]
        more_battles, more_votes = _battle_rows(rng, model_ids, voter["id"], created)
        battles += more_battles
        votes += more_votes
        total += len(more_battles)
        if len(battles) >= BATCH:
            flush()
    # The heavy voter: 500 votes in the last day, 59 of them on battles started in the last hour (the
    # hour's edge is kept 10 minutes away, so none leaves the window while the benchmark runs).
    recent = [now - timedelta(seconds=rng.uniform(120, 3000)) for _ in range(HEAVY_RECENT_BATTLES)]
    older = [now - timedelta(seconds=rng.uniform(3700, 22 * 3600)) for _ in range(HEAVY_VOTES - len(recent))]
    more_battles, more_votes = _battle_rows(rng, model_ids, heavy, recent + older)
    battles += more_battles
    votes += more_votes
    total += len(more_battles)
    flush()
    if engine.dialect.name == "postgresql":  # what autovacuum would have done on a live arena
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return Population(len(sessions), total, heavy, ip_hash("heavy"), time.perf_counter() - started)


def heavy_window_counts(engine: sa.Engine, population: Population) -> tuple[int, int]:
    """The heavy voter's battles in the last hour and votes in the last day (what its checks count)."""
    now = datetime.now(UTC)
    with engine.connect() as conn:
        battles = conn.execute(
            sa.select(sa.func.count())
            .select_from(Battle)
            .where(
                Battle.session_id == population.heavy_session, Battle.created_at > now - timedelta(hours=1)
            )
        ).scalar_one()
        votes = conn.execute(
            sa.select(sa.func.count())
            .select_from(Vote)
            .where(Vote.session_id == population.heavy_session, Vote.created_at > now - timedelta(days=1))
        ).scalar_one()
    return int(battles), int(votes)


# -- timed requests ------------------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds per request, by setting ("on": limits checked, "off": the baseline)."""

    on: list[float]
    off: list[float]


def quantiles_ms(values: list[float]) -> tuple[float, float]:
    """Median and 95th percentile, in milliseconds."""
    q = statistics.quantiles(values, n=20, method="inclusive")
    return statistics.median(values) * 1000, q[18] * 1000


async def _drain(service: BattleService, state: BattleSession) -> None:
    async for _update in service.stream(state):
        pass


def play(service: BattleService, state: BattleSession) -> None:
    """Start a battle and stream both answers to the end (untimed set-up for a vote)."""
    service.start_turn(state, PROMPT)
    asyncio.run(_drain(service, state))
    assert state.status == "ready", f"battle {state.battle_id} ended {state.status}"


def measure(
    services: dict[str, BattleService],
    engine: sa.Engine,
    make_state: Callable[[BattleService], BattleSession],
    operation: str,
    requests: int,
    cleanup: bool,
) -> Timings:
    """Time ``operation`` ("start_turn" or "vote") ``requests`` times per setting, alternating them."""
    timings = Timings([], [])
    delete = sa.delete(Battle).where(Battle.id == sa.bindparam("battle_id"))
    for i in range(WARMUP + requests):
        order = ("on", "off") if i % 2 == 0 else ("off", "on")
        for setting in order:
            service = services[setting]
            state = make_state(service)
            if operation == "vote":
                play(service, state)
                t0 = time.perf_counter()
                reveal = service.vote(state, WINNERS[i % 2])
                elapsed = time.perf_counter() - t0
                assert reveal.notice is None, reveal.notice
            else:
                t0 = time.perf_counter()
                service.start_turn(state, PROMPT)
                elapsed = time.perf_counter() - t0
            if i >= WARMUP:
                getattr(timings, setting).append(elapsed)
            if cleanup:  # keep the heavy voter's rows in the window as they were
                with engine.begin() as conn:
                    conn.execute(delete, {"battle_id": state.battle_id})
    return timings


def make_services(
    sessions: Any, specs: list[ModelSpec], images: ImageStore, cache: Path, limits_on: RateLimits
) -> dict[str, BattleService]:
    """Two services over one database: the guard limits on, and off (the baseline)."""
    context = BackendContext(cache_dir=cache)
    identity = IdentityTerms.from_specs(specs)
    services = {}
    for setting, limits in (("on", limits_on), ("off", NO_LIMITS)):
        backends = {s.name: create_backend(s, context) for s in specs}
        services[setting] = BattleService(
            specs=specs,
            backends=backends,
            sessions=sessions,
            images=images,
            rng=random.Random(setting),
            guards=GuardPolicy(identity=identity, limits=limits),
        )
    return services


@dataclass
class Row:
    request: str
    voter: str
    limits: RateLimits
    window: str
    timings: Timings


def run_backend(name: str, url: str, args: argparse.Namespace) -> tuple[list[Row], str]:
    """Populate the database at ``url`` and time the requests; return the rows and a note on the data."""
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    specs = roster()
    now = datetime.now(UTC)
    seed_roster(sessions, specs, now)
    with engine.connect() as conn:
        model_ids = list(conn.execute(sa.select(sa.text("id")).select_from(sa.text("models"))).scalars())
    population = populate(engine, model_ids, args.voters, args.battles_per_voter, now, args.seed)
    print(
        f"  {name}: {population.voters:,} voter sessions, {population.battles:,} voted battles "
        f"inserted in {population.seconds:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="arena-guards-") as tmp:
        images = ImageStore(Path(tmp) / "images")
        counter = iter(range(10**9))

        def fresh(service: BattleService) -> BattleSession:
            return service.new_session("Mozilla/5.0 (bench)", ip=f"198.51.{next(counter)}")

        def heavy(_service: BattleService) -> BattleSession:
            return BattleSession(
                session_id=population.heavy_session,
                user_agent="Mozilla/5.0 (bench)",
                ip_hash=population.heavy_ip_hash,
            )

        before = heavy_window_counts(engine, population)
        for voter, make_state, limits, cleanup in (
            ("fresh", fresh, DEFAULT_LIMITS, False),
            ("heavy", heavy, RAISED_LIMITS, True),
        ):
            services = make_services(sessions, specs, images, Path(tmp) / "cache", limits)
            for request in ("start_turn", "vote"):
                started = time.perf_counter()
                timings = measure(services, engine, make_state, request, args.requests, cleanup)
                counts = before if voter == "heavy" else (0, 0)
                window = f"{counts[0]} battles/h" if request == "start_turn" else f"{counts[1]} votes/day"
                rows.append(Row(request, voter, limits, window, timings))
                print(
                    f"  {name}: {request} / {voter} voter: {time.perf_counter() - started:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        after = heavy_window_counts(engine, population)
    engine.dispose()
    assert before == (HEAVY_RECENT_BATTLES, HEAVY_VOTES), before
    assert after == before, f"the heavy voter's rows changed during the run: {before} -> {after}"
    note = (
        f"{population.voters:,} voter sessions, {population.battles:,} voted battles "
        f"(inserted in {population.seconds:.1f} s); heavy voter: {before[0]} battles in the last hour, "
        f"{before[1]} votes in the last day, the same after the run"
    )
    return rows, note


def request_table(rows: list[Row]) -> str:
    lines = [
        "| request | voter | rows counted | limits | median ms | p95 ms | baseline median ms "
        "| baseline p95 ms | × median | × p95 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        on, off = quantiles_ms(r.timings.on), quantiles_ms(r.timings.off)
        limits = f"{r.limits.battles_per_hour:,}/h, {r.limits.votes_per_day:,}/day"
        lines.append(
            f"| {r.request} | {r.voter} | {r.window} | {limits} | {on[0]:.2f} | {on[1]:.2f} "
            f"| {off[0]:.2f} | {off[1]:.2f} | {on[0] / off[0]:.2f} | {on[1] / off[1]:.2f} |"
        )
    return "\n".join(lines)


# -- identity checks -----------------------------------------------------------------------------


def answer_text(rng: random.Random, chars: int) -> str:
    """A plain answer of about ``chars`` characters that names no model (words of the scripted models)."""
    sentences: list[str] = []
    size = 0
    while size < chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
        sentence = " ".join(words).capitalize() + rng.choice([".", ".", ",", ";"]) + " "
        sentences.append(sentence)
        size += len(sentence)
    return "".join(sentences)[:chars]


def per_call_us(fn: Callable[[], object], min_time_s: float = 0.2) -> float:
    """Median of 5 timing runs, in microseconds per call."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * min_time_s / 0.2))
    runs = timer.repeat(repeat=5, number=number)
    return statistics.median(runs) / number * 1e6


def identity_rows(seed: int) -> list[tuple[str, str, float]]:
    """(check, input, µs per call) for the per-answer and per-prompt identity checks."""
    specs = roster()
    rng = random.Random(seed)
    terms = IdentityTerms.from_specs(specs)
    answer = answer_text(rng, 2000)
    leak_at_end = answer[:1960] + " I am Claude, made by Anthropic."
    named_by_voter = answer[:1000] + " Like ChatGPT, " + answer[1000:1985]
    long_prompt = answer_text(rng, 4000)
    assert terms.find(answer) is None and terms.find(leak_at_end) == "Claude"
    assert terms.find(named_by_voter, ["Is this better than ChatGPT?"]) is None
    assert not is_identity_question(PROMPT) and is_identity_question("Who are you? Which model are you?")
    return [
        (
            "IdentityTerms.from_specs (once per process)",
            f"{len(specs)}-model roster + built-in list: {len(terms.terms)} terms",
            per_call_us(lambda: IdentityTerms.from_specs(specs)),
        ),
        (
            "IdentityTerms.find",
            f"{len(answer):,}-char answer, no term",
            per_call_us(lambda: terms.find(answer)),
        ),
        (
            "IdentityTerms.find",
            f"{len(leak_at_end):,}-char answer, a term at the end",
            per_call_us(lambda: terms.find(leak_at_end, [PROMPT])),
        ),
        (
            "IdentityTerms.find",
            f"{len(named_by_voter):,}-char answer, a term the voter wrote",
            per_call_us(lambda: terms.find(named_by_voter, ["Is this better than ChatGPT?"])),
        ),
        (
            "is_identity_question",
            f"typical prompt ({len(PROMPT)} chars)",
            per_call_us(lambda: is_identity_question(PROMPT)),
        ),
        (
            "is_identity_question",
            '"Who are you? Which model are you?"',
            per_call_us(lambda: is_identity_question("Who are you? Which model are you?")),
        ),
        (
            "is_identity_question",
            f"longest prompt ({len(long_prompt):,} chars)",
            per_call_us(lambda: is_identity_question(long_prompt)),
        ),
    ]


def identity_table(rows: list[tuple[str, str, float]], baselines: dict[str, float]) -> str:
    """The identity checks, each also as a share of a baseline start_turn (fresh voter, limits off)."""
    header = "| check | input | µs per call |" + "".join(f" % of {b} start_turn |" for b in baselines)
    lines = [header, "|---|---|---:|" + "---:|" * len(baselines)]
    for check, what, us in rows:
        shares = "".join(f" {us / (ms * 1000) * 100:.2f}% |" for ms in baselines.values())
        lines.append(f"| {check} | {what} | {us:,.1f} |{shares}")
    return "\n".join(lines)


# -- databases and main --------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="arena-bench-guards-") as tmp:
        yield f"sqlite:///{tmp}/arena.db"


def server_version(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="timed requests per setting and row")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated databases (default %(default)s)"
    )
    parser.add_argument("--pg-admin", default=PG_ADMIN_URL, help="admin database URL (default %(default)s)")
    parser.add_argument("--voters", type=int, default=2000, help="voter sessions in the populated database")
    parser.add_argument("--battles-per-voter", type=int, default=100, help="voted battles per voter session")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown or not backends:
        parser.error(f"--backends takes {', '.join(BACKENDS)}; got {args.backends!r}")
    if args.requests < 2:
        parser.error("--requests must be at least 2")

    started = time.perf_counter()
    baselines: dict[str, float] = {}
    versions = [f"SQLite {sqlite3.sqlite_version}"]
    for backend in backends:
        print(f"{backend}:", file=sys.stderr, flush=True)
        if backend == "sqlite":
            database = sqlite_database()
        else:
            database = scratch_postgres_database(args.pg_admin, "arena_bench_guards")
        with database as url:
            if backend == "postgresql":
                versions.append(f"PostgreSQL {server_version(url)}")
            rows, note = run_backend(backend, url, args)
        title = "SQLite (file, WAL)" if backend == "sqlite" else "PostgreSQL"
        print(f"\n### {title}: {args.requests} requests per setting\n\n{note}\n")
        print(request_table(rows))
        baseline = next(r for r in rows if r.request == "start_turn" and r.voter == "fresh")
        baselines[title.split(" ")[0]] = quantiles_ms(baseline.timings.off)[0]
        sys.stdout.flush()

    print("\n### Identity checks (per answer, per prompt)\n")
    print(identity_table(identity_rows(args.seed), baselines))
    print(
        "\nlimits: the default RateLimits(60, 500) for fresh voters, RateLimits(10,000, 100,000) for the "
        "heavy voter (never refused); baseline: RateLimits(0, 0) (voter lock and ban check only). "
        "× = with limits / baseline."
    )
    print(
        f"\ncores: {os.cpu_count()}, Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}, "
        f"{', '.join(versions)}; total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
