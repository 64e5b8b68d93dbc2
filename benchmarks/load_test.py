"""Load test with faults: simulated voters against two arena processes behind nginx on one PostgreSQL.

    python benchmarks/load_test.py [--voters 10 50 100] [--duration-s 60] [--out result.json]

Everything is a real process started here and stopped at the end: a private PostgreSQL cluster (initdb +
pg_ctl into a temp folder, on a free port; the shared server on 5432 is never touched), two stand-in
OpenAI-compatible model servers paced like a real engine (first token after 300 ms, then ~30 words/s),
two ``python launch.py`` arena processes sharing the settings of a scaled-out deployment, and nginx from
``deploy/nginx/arena.conf``. Voters (``benchmarks/load_client.py``) speak the page's own protocol
through nginx: upload, Send, read both streams, vote, reveal, New round, in a loop.

Stages run one after the other with 10, 50 and 100 voters (``--voters``), then a dedicated fault stage
(``--fault-voters``, 50 by default) in which one arena process is killed with SIGKILL (nginx sends its
voters to the other) and, later, PostgreSQL is stopped for about 5 s and started again. A killed arena
is started again before the next stage. At the end every vote acknowledged to a voter (the reveal came
back) is looked up in the database: lost = acknowledged but not stored; duplicates = more than one vote
row for a battle; votes stored for battles whose vote request failed are reported on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_client import PageLayout, StageStats, Voter, make_images  # noqa: E402
from benchmarks.load_stack import (  # noqa: E402
    Child,
    Children,
    Pacing,
    PrivatePostgres,
    children_of,
    cpu_s,
    free_port,
    migrate,
    rss_mb,
    shared_settings,
    start_arena,
    start_engine,
    start_nginx,
    wait_arena,
    write_roster,
)

MODELS = ("load-model-a", "load-model-b")
KILL_AT = 0.3  # fault stage: share of the duration after which one arena process is killed
DB_RESTART_AT = 0.6  # ... and after which PostgreSQL is stopped for DB_DOWN_S
DB_DOWN_S = 5.0
FAULT_WINDOW_S = 10.0  # errors this long after a fault are counted as caused by it


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


@dataclass
class Deployment:
    """The running stack, and what a stage needs to hurt it."""

    children: Children
    postgres: PrivatePostgres
    folder: Path
    settings: dict[str, str]
    ports: list[int]
    arenas: list[Child]
    engines: list[Child]
    engine_urls: list[str]
    nginx: Child
    base: str

    def ensure_arenas(self) -> None:
        """Start again any arena process a fault stage killed."""
        for index, (child, port) in enumerate(zip(self.arenas, self.ports, strict=True)):
            if not child.alive():
                self.arenas[index] = start_arena(
                    self.children, self.folder, f"arena-{index + 1}", port, self.settings
                )
                wait_arena(self.arenas[index], port)

    def processes(self) -> dict[str, list[int]]:
        """Process groups whose CPU and memory are reported."""
        postmaster = self.postgres.postmaster_pid()
        groups = {f"arena-{i + 1}": [child.pid] for i, child in enumerate(self.arenas)}
        groups["engines"] = [child.pid for child in self.engines]
        groups["nginx"] = [self.nginx.pid, *children_of(self.nginx.pid)]
        groups["postgres"] = [postmaster, *children_of(postmaster)] if postmaster else []
        return groups


@dataclass
class Sampler:
    """CPU seconds per process group over a stage, and the arena processes' resident memory."""

    deployment: Deployment
    rss_max: dict[str, float] = field(default_factory=dict)
    rss_last: dict[str, float] = field(default_factory=dict)
    load: list[tuple[float, float, float]] = field(default_factory=list)

    def cpu_now(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far, per process of each group."""
        found: dict[str, dict[int, float]] = {}
        for name, pids in self.deployment.processes().items():
            found[name] = {pid: value for pid in pids if (value := cpu_s(pid)) is not None}
        return found

    def sample(self) -> None:
        for index, child in enumerate(self.deployment.arenas):
            value = rss_mb(child.pid)
            if value is not None:
                name = f"arena-{index + 1}"
                self.rss_max[name] = max(self.rss_max.get(name, 0.0), value)
                self.rss_last[name] = value
        self.load.append(os.getloadavg())

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def probe_engine(url: str, model: str, stop: asyncio.Event, found: list[float]) -> None:
    """The model server's own first-token time, measured directly while the stage runs."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with client.stream("POST", f"{url}/chat/completions", json=body) as stream:
                    async for line in stream.aiter_lines():
                        if '"content": "' in line and '"content": ""' not in line:
                            found.append(time.monotonic() - started)
                            break
            except httpx.HTTPError:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)


async def inject_faults(deployment: Deployment, duration_s: float, faults: dict[str, float]) -> None:
    """kill -9 one arena process, later stop PostgreSQL for DB_DOWN_S and start it again."""
    started = time.monotonic()
    await asyncio.sleep(duration_s * KILL_AT)
    faults["arena_killed_at"] = time.monotonic()
    Children.kill9(deployment.arenas[1])
    await asyncio.sleep(max(0.0, started + duration_s * DB_RESTART_AT - time.monotonic()))
    faults["db_stopped_at"] = time.monotonic()
    await asyncio.to_thread(deployment.postgres.stop, "fast")
    await asyncio.sleep(DB_DOWN_S)
    await asyncio.to_thread(deployment.postgres.start)
    faults["db_started_at"] = time.monotonic()


async def run_stage(
    deployment: Deployment,
    layout: PageLayout,
    images: list[bytes],
    *,
    voters: int,
    duration_s: float,
    think_s: float,
    faults: bool,
    seed: int,
) -> tuple[StageStats, dict[str, Any]]:
    stats = StageStats()
    sampler = Sampler(deployment)
    cpu_before = sampler.cpu_now()
    client_before = resource.getrusage(resource.RUSAGE_SELF)
    stop = asyncio.Event()
    direct: list[float] = []
    background = [
        asyncio.create_task(sampler.run(stop)),
        asyncio.create_task(probe_engine(deployment.engine_urls[0], MODELS[0], stop, direct)),
    ]
    fault_times: dict[str, float] = {}
    started = time.monotonic()
    deadline = started + duration_s
    rng = random.Random(seed)

    async def voter(number: int) -> None:
        await asyncio.sleep(rng.uniform(0, min(5.0, duration_s / 10)))  # people do not click in step
        await Voter(
            deployment.base,
            layout,
            images,
            stats,
            deadline,
            think_s=think_s,
            rng=random.Random(seed + number),
        ).run()

    fault_task = asyncio.create_task(inject_faults(deployment, duration_s, fault_times)) if faults else None
    await asyncio.gather(*(voter(n) for n in range(voters)))
    if fault_task is not None:
        await fault_task
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.gather(*background)
    cpu_after = sampler.cpu_now()
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    extra = {
        "elapsed_s": elapsed,
        "cpu_percent": cpu_percent(cpu_before, cpu_after, elapsed) | {"load-client": round(100 * client_cpu / elapsed, 1)},
        "rss_mb_max": {k: round(v, 1) for k, v in sampler.rss_max.items()},
        "rss_mb_end": {k: round(v, 1) for k, v in sampler.rss_last.items()},
        "load_average": {
            "start": sampler.load[0] if sampler.load else None,
            "max_1min": max((x[0] for x in sampler.load), default=None),
            "end": os.getloadavg(),
        },
        "engine_first_token_ms": {"p50": ms(statistics.median(direct)) if direct else None,
                                  "p95": ms(percentile(direct, 95)), "samples": len(direct)},
        "faults": {k: round(v - started, 1) for k, v in fault_times.items()},
        "deadline": deadline,
        "started": started,
    }  # fmt: skip
    return stats, extra


def cpu_percent(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], elapsed: float
) -> dict[str, float | None]:
    """Share of one core each group used over the stage, from the processes alive at both ends (a
    process killed or started during the stage is left out; a group with none of those: None)."""
    shares: dict[str, float | None] = {}
    for name, now in after.items():
        then = before.get(name, {})
        common = now.keys() & then.keys()
        shares[name] = round(100 * sum(now[p] - then[p] for p in common) / elapsed, 1) if common else None
    return shares


def summarize(
    stats: StageStats, extra: dict[str, Any], *, voters: int, faults: bool, pacing: Pacing
) -> dict[str, Any]:
    """One stage's figures for the report."""
    duration = extra["deadline"] - extra["started"]
    done = [t for t in stats.completed_at if t <= extra["deadline"]]
    attempts = len(stats.completed_at) + sum(stats.errors.values())
    overhead = [t - pacing.first_token_s for t in stats.first_token_s]
    by_window: dict[str, int] = {"arena kill": 0, "db restart": 0, "other": 0}
    fault_at = {k: extra["started"] + v for k, v in extra["faults"].items()}
    killed, stopped = fault_at.get("arena_killed_at"), fault_at.get("db_stopped_at")
    restarted = fault_at.get("db_started_at", float("inf"))
    for when, _ in stats.error_times:
        if killed is not None and killed <= when < (stopped or killed + FAULT_WINDOW_S):
            by_window["arena kill"] += 1
        elif stopped is not None and stopped <= when <= restarted + FAULT_WINDOW_S:
            by_window["db restart"] += 1
        else:
            by_window["other"] += 1
    return {
        "voters": voters,
        "faults": faults,
        "duration_s": round(duration, 1),
        "battles_completed": len(done),
        "battles_per_s": round(len(done) / duration, 2),
        "send_to_first_token_ms": {"p50": ms(percentile(stats.first_token_s, 50)),
                                   "p95": ms(percentile(stats.first_token_s, 95))},
        "over_model_first_token_ms": {"p50": ms(percentile(overhead, 50)), "p95": ms(percentile(overhead, 95))},
        "vote_latency_ms": {"p50": ms(percentile(stats.vote_s, 50)), "p99": ms(percentile(stats.vote_s, 99))},
        "errors": dict(stats.errors.most_common()),
        "errors_by_cause": by_window if faults else None,
        "error_timeline": [[round(when - extra["started"], 1), what] for when, what in stats.error_times][:300],
        "error_rate": round(sum(stats.errors.values()) / attempts, 4) if attempts else 0.0,
        "reloads": stats.reloads,
        **{k: extra[k] for k in ("cpu_percent", "rss_mb_max", "rss_mb_end", "load_average",
                                 "engine_first_token_ms", "faults")},
    }  # fmt: skip


def check_votes(db_url: str, acknowledged: set[str], vote_failed: set[str]) -> dict[str, Any]:
    """Votes acknowledged to voters against the vote rows in the database."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT battle_id, count(*) FROM votes GROUP BY battle_id")).all()
            battles = conn.execute(sa.text("SELECT count(*) FROM battles")).scalar_one()
    finally:
        engine.dispose()
    stored = {str(battle): int(count) for battle, count in rows}
    return {
        "acknowledged": len(acknowledged),
        "stored": sum(stored.values()),
        "battles_in_db": battles,
        "lost": sorted(acknowledged - stored.keys()),
        "counted_twice": sorted(b for b, n in stored.items() if n > 1),
        "stored_after_failed_vote": sorted((vote_failed & stored.keys()) - acknowledged),
        "stored_unknown_to_voters": sorted(stored.keys() - acknowledged - vote_failed),
    }


def deploy(
    folder: Path, children: Children, postgres: PrivatePostgres, pacing: Pacing, concurrency: int
) -> Deployment:
    postgres.init()
    postgres.start()
    migrate(postgres.url, folder)
    engines, urls = [], []
    for model in MODELS:
        child, url = start_engine(children, folder, model, pacing)
        engines.append(child)
        urls.append(url)
    roster = write_roster(folder / "roster.yaml", dict(zip(MODELS, urls, strict=True)))
    settings = shared_settings(postgres.url, folder, roster, {"ARENA_CONCURRENCY": str(concurrency)})
    ports = [free_port(), free_port()]
    arenas = [start_arena(children, folder, f"arena-{i + 1}", port, settings) for i, port in enumerate(ports)]
    for child, port in zip(arenas, ports, strict=True):
        wait_arena(child, port)
    nginx, nginx_port = start_nginx(children, folder / "nginx", ports)
    return Deployment(
        children,
        postgres,
        folder,
        settings,
        ports,
        arenas,
        engines,
        urls,
        nginx,
        f"http://127.0.0.1:{nginx_port}",
    )


def table(report: dict[str, Any]) -> str:
    """The stages as a Markdown table (the README's)."""
    head = (
        "| voters | faults | battles/s | Send→first token p50 / p95 (over model) | vote p99 | errors (rate) "
        "| RSS per arena (MiB) | CPU arena 1 / 2 | load avg (1 min, max) |"
    )
    lines = [head, "|" + "---|" * 9]
    for s in report["stages"]:
        over = s["over_model_first_token_ms"]
        rss = " / ".join(f"{v:.0f}" for v in s["rss_mb_max"].values())
        cpu = s["cpu_percent"]
        errors = sum(s["errors"].values())
        lines.append(
            f"| {s['voters']} | {'kill -9 + DB restart' if s['faults'] else '—'} | {s['battles_per_s']:.2f} "
            f"| {over['p50']} / {over['p95']} ms | {s['vote_latency_ms']['p99']} ms | {errors} ({s['error_rate']:.1%}) "
            f"| {rss} | {_percent(cpu.get('arena-1'))} / {_percent(cpu.get('arena-2'))} "
            f"| {s['load_average']['max_1min']:.1f} |"
        )
    votes = report["votes"]
    lines.append("")
    lines.append(
        f"Votes: {votes['acknowledged']} acknowledged, {votes['stored']} stored, {len(votes['lost'])} lost, "
        f"{len(votes['counted_twice'])} counted twice, {len(votes['stored_after_failed_vote'])} stored after "
        f"a failed vote request, {len(votes['stored_unknown_to_voters'])} unknown to voters."
    )
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--voters", type=int, nargs="*", default=[10, 50, 100], help="voters at once, one stage each"
    )
    parser.add_argument(
        "--fault-voters", type=int, default=50, help="voters of the fault stage (0: no fault stage)"
    )
    parser.add_argument("--duration-s", type=float, default=60.0, help="length of each stage, seconds")
    parser.add_argument(
        "--think-s", type=float, default=1.0, help="a voter's pause before voting and after the reveal"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="ARENA_CONCURRENCY of each arena process")
    parser.add_argument(
        "--first-token-s", type=float, default=0.3, help="model servers' delay to the first token"
    )
    parser.add_argument("--chunk-s", type=float, default=0.033, help="model servers' delay between tokens")
    parser.add_argument("--words", type=int, default=60, help="tokens (words) in each answer")
    parser.add_argument(
        "--chunk-words", type=int, default=1, help="words per streamed chunk (same words/s, fewer chunks)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the voters' choices")
    parser.add_argument("--out", type=Path, help="write the JSON report here (it is also printed)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, nginx config)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on SIGTERM too
    pacing = Pacing(args.first_token_s, args.chunk_s, args.words, args.chunk_words)
    folder = Path(tempfile.mkdtemp(prefix="arena-load-"))
    folder.chmod(0o755)
    children = Children()
    postgres = PrivatePostgres(folder / "pg")
    stages: list[tuple[int, bool]] = [(v, False) for v in args.voters]
    if args.fault_voters:
        stages.append((args.fault_voters, True))
    report: dict[str, Any] = {"stages": []}
    try:
        deployment = deploy(folder, children, postgres, pacing, args.concurrency)
        layout = PageLayout.from_config(httpx.get(deployment.base + "/config", timeout=30).json())
        images = make_images(32, args.seed)
        acknowledged: set[str] = set()
        vote_failed: set[str] = set()
        for number, (voters, faults) in enumerate(stages):
            deployment.ensure_arenas()
            print(f"stage {number + 1}/{len(stages)}: {voters} voters{' with faults' if faults else ''} "
                  f"for {args.duration_s:.0f} s (load average {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
            stats, extra = asyncio.run(
                run_stage(deployment, layout, images, voters=voters, duration_s=args.duration_s,
                          think_s=args.think_s, faults=faults, seed=args.seed + 1000 * number)
            )  # fmt: skip
            acknowledged |= stats.acknowledged
            vote_failed |= stats.vote_failed
            summary = summarize(stats, extra, voters=voters, faults=faults, pacing=pacing)
            report["stages"].append(summary)
            print(json.dumps(summary), flush=True)
        report["votes"] = check_votes(postgres.url, acknowledged, vote_failed)
        report["setup"] = {
            "arena_processes": 2, "arena_concurrency": args.concurrency, "leaderboard_worker": False,
            "think_s": args.think_s, "model_first_token_s": pacing.first_token_s, "model_chunk_s": pacing.chunk_s,
            "answer_words": pacing.words, "chunk_words": pacing.chunk_words, "cpus": os.cpu_count(), "stage_duration_s": args.duration_s,
        }  # fmt: skip
    finally:
        children.close()
        postgres.close()
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(table(report))
    votes = report["votes"]
    return 1 if votes["lost"] or votes["counted_twice"] else 0


if __name__ == "__main__":
    sys.exit(main())
