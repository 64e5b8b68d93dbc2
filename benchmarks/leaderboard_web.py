"""Leaderboard benchmarks of the live arena at a million votes: snapshot refresh, tab open, server memory.

The parts ``refresh``, ``tab`` and ``rss`` of ``benchmarks/leaderboard_bench.py`` (registered there
from ``WEB_PARTS``). Each runs on SQLite and on PostgreSQL, on a scratch copy of the shared data set of
``benchmarks/million.py`` (a copy of the SQLite file; ``CREATE DATABASE … TEMPLATE arena_bench_1m`` on
PostgreSQL, dropped afterwards), a fresh copy for each of ``--repeat`` runs. The cached data is never
written to.

``refresh``  In a fresh interpreter: ``SnapshotService.refresh_once(force=True)`` with the arena's
             default settings; every view's ``leaderboard_snapshots.duration_s`` (the main view ``bt``:
             pair counts in SQL + Bradley–Terry + sandwich intervals; target <= 5 s), split for ``bt``
             into its count query and its fit. Then one vote is added and one ordinary cycle
             (``refresh_once()``) is timed: how long until ``bt`` shows it, once the cycle starts (the
             background task starts one every ``ARENA_LEADERBOARD_REFRESH_S``, default 60 s).
``tab``      The real server (``python launch.py``, demo roster) on the copy. Once ``bt`` is stored,
``rss``      Chromium opens the page 10 times (a new page each) and clicks the Leaderboard tab: the
             time from the click (seen by the page) until ``#leaderboard-table`` shows the top model
             (target <= 1 s); 10 more opens follow once every view is stored. Meanwhile VmRSS of the
             web process and of all its processes (a snapshot worker, if any) is sampled every 0.5 s,
             per phase and per view computed (target: web process <= 700 MB after 10 opens).
             ``tab`` and ``rss`` are the same run.

  python benchmarks/leaderboard_bench.py --part refresh [--repeat 2]
  python benchmarks/leaderboard_bench.py --part tab [--repeat 2]
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.million import CACHE, ENV, PG_ADMIN_URL, postgres_url, sqlite_url  # noqa: E402

MODELS_CACHE = CACHE / "models-cache"
DATABASES: dict[str, Callable[[], str]] = {"SQLite": sqlite_url, "PostgreSQL": postgres_url}
TAB_OPENS = 10
MB = 1024.0


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _runs(values: list[float], fmt: str = "{:.2f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


@contextmanager
def scratch_database(name: str, url: str) -> Iterator[str]:
    """A throw-away copy of the benchmark database at ``url``: its URL, removed on exit."""
    import sqlalchemy as sa

    if name == "SQLite":
        source = Path(sa.engine.make_url(url).database or "")
        tmp = Path(tempfile.mkdtemp(prefix="lb-scratch-", dir=CACHE))
        try:
            for suffix in ("", "-wal"):
                if Path(f"{source}{suffix}").exists():
                    shutil.copyfile(f"{source}{suffix}", tmp / f"arena.db{suffix}")
            yield f"sqlite:///{tmp / 'arena.db'}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    from storage.db import normalize_url

    template = sa.engine.make_url(url).database
    scratch = f"lb_scratch_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{scratch}" TEMPLATE "{template}"')
        try:
            yield sa.engine.make_url(url).set(database=scratch).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    finally:
        admin.dispose()


# --------------------------------------------------------------------------------------------------
# Part: refresh
# --------------------------------------------------------------------------------------------------


def refresh_child(url: str) -> None:
    """Runs in a fresh interpreter: one forced refresh, the bt split, one vote and one cycle (JSON out)."""
    import logging

    import numpy as np
    from sqlalchemy import select

    from analysis.pairs import aggregated_from_counts, leaderboard_from_counts
    from arena.settings import ArenaSettings
    from arena.snapshots import SnapshotService
    from arena.views import rated_group, subset
    from storage import repo
    from storage.counts import VoteFilter, pair_outcome_counts
    from storage.db import make_engine, session_factory
    from storage.schema import LeaderboardSnapshot
    from storage.sql import utc_now

    logging.basicConfig(level=logging.WARNING)
    settings = ArenaSettings(db=url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    service = SnapshotService(
        sessions, refresh_s=settings.leaderboard_refresh_s, min_votes=settings.leaderboard_min_votes
    )
    started = time.perf_counter()
    service.refresh_once(force=True)
    full_s = time.perf_counter() - started
    peak_full = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB
    with sessions() as db:
        stored = db.execute(select(LeaderboardSnapshot.view, LeaderboardSnapshot.duration_s)).all()
    views = {view: float(seconds) for view, seconds in stored}
    bt = service.current("bt")
    assert bt is not None and bt.payload["rows"], "no bt snapshot after a forced refresh"
    total = int(bt.payload["total_votes"])

    # where bt's time goes: the aggregate query, then the fit with sandwich intervals
    with sessions() as db:
        t0 = time.perf_counter()
        rows = pair_outcome_counts(db, VoteFilter())
        t1 = time.perf_counter()
    agg = aggregated_from_counts(rows)
    sub = subset(agg, rated_group(agg, settings.leaderboard_min_votes))
    t2 = time.perf_counter()
    leaderboard_from_counts(sub, method="bt", ci="sandwich")
    t3 = time.perf_counter()

    # one new vote, then one ordinary cycle
    first, second = (r["model"] for r in bt.payload["rows"][:2])
    before = dict(service.computations)
    now = utc_now()
    t4 = time.perf_counter()
    with sessions.begin() as db:
        ids = {m.name: m.id for m in repo.list_models(db)}
        battle_id = f"bench-{uuid.uuid4().hex}"
        repo.create_battle(
            db, battle_id=battle_id, model_a_id=ids[first], model_b_id=ids[second], session_id=None, now=now
        )
        repo.set_battle_state(db, battle_id, "ready", now)
        repo.record_vote(db, battle_id=battle_id, winner="model_b", session_id=None, now=now)
    t5 = time.perf_counter()
    service.refresh_once()
    t6 = time.perf_counter()
    after = service.current("bt")
    assert after is not None
    recomputed = sorted(k for k, n in service.computations.items() if n > before.get(k, 0))
    with sessions() as db:
        bt_incr = db.execute(
            select(LeaderboardSnapshot.duration_s).where(LeaderboardSnapshot.view == "bt")
        ).scalar_one()
    engine.dispose()
    out = {
        "full_s": full_s, "views": views, "order": [v for v, _ in stored], "peak_rss_mb": peak_full,
        "bt_rows": len(bt.payload["rows"]), "bt_not_enough": len(bt.payload["not_enough_votes"]),
        "bt_query_s": t1 - t0, "bt_fit_s": t3 - t2, "pairs": int(np.asarray(sub.a).size),
        "vote_s": t5 - t4, "cycle_s": t6 - t5, "bt_incr_s": float(bt_incr), "recomputed": recomputed,
        "reflected": int(after.payload["total_votes"]) == total + 1, "total_votes": total,
    }  # fmt: skip
    print(json.dumps(out))


def _refresh_run(url: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--refresh-child", url], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"refresh child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def part_refresh(repeat: int) -> None:
    """Forced refresh of every view, bt split, and one incremental cycle, on SQLite and PostgreSQL."""
    results: dict[str, list[dict[str, Any]]] = {}
    copies: dict[str, list[float]] = {}
    for name, base in DATABASES.items():
        url = base()
        results[name], copies[name] = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            with scratch_database(name, url) as scratch:
                copies[name].append(time.perf_counter() - t0)
                results[name].append(_refresh_run(scratch))
    names = list(results)
    print(f"\nSnapshot refresh at 1,000,000 votes, 100 models; medians of {repeat} fresh processes\n")
    print("| view (seconds, `leaderboard_snapshots.duration_s`) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    order = results[names[0]][0]["order"]

    def row(label: str, get: Callable[[dict[str, Any]], float], fmt: str = "{:.2f}") -> None:
        cells = [fmt.format(_med([get(r) for r in results[n]])) for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")

    for view in ["bt", *[v for v in order if v != "bt"]]:
        label = f"**{view}** (target <= 5 s)" if view == "bt" else view
        row(label, lambda r, v=view: r["views"][v])
    row("bt: pair-count query alone", lambda r: r["bt_query_s"])
    row("bt: fit + sandwich alone", lambda r: r["bt_fit_s"])
    row("whole forced refresh (`refresh_once(force=True)`)", lambda r: r["full_s"])
    row("peak RSS of that process (MB)", lambda r: r["peak_rss_mb"], "{:.0f}")
    row("one vote added (transaction)", lambda r: r["vote_s"], "{:.3f}")
    row("next cycle `refresh_once()`, until bt shows the vote", lambda r: r["cycle_s"])
    row("  of which bt's duration_s", lambda r: r["bt_incr_s"])
    print()
    for n in names:
        rs = results[n]
        met = "met" if _med([r["views"]["bt"] for r in rs]) <= 5.0 else "MISSED"
        print(
            f"{n}: bt runs {_runs([r['views']['bt'] for r in rs])} s (target {met}); forced refresh runs "
            f"{_runs([r['full_s'] for r in rs])} s; bt rates {rs[0]['bt_rows']} models "
            f"({rs[0]['bt_not_enough']} listed as not enough votes) over {rs[0]['pairs']} pairs; "
            f"incremental cycle recomputed {', '.join(rs[0]['recomputed'])}; vote reflected: "
            f"{all(r['reflected'] for r in rs)}; scratch copy made in {_runs(copies[n], '{:.1f}')} s"
        )


# --------------------------------------------------------------------------------------------------
# Parts: tab and rss (one run)
# --------------------------------------------------------------------------------------------------


def memory(pid: int) -> dict[str, int]:
    """kB: VmRSS of ``pid`` (the web process) and of it with its descendants (the snapshot worker, …),
    VmHWM of ``pid`` and the sum of its descendants' VmHWM, and the number of processes."""
    pids, todo, out = [], [pid], {"web": 0, "all": 0, "web_hwm": 0, "kids_hwm": 0}
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    for p in pids:
        with suppress(OSError):
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
            fields = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in lines) if k in ("VmRSS", "VmHWM")}  # fmt: skip
            out["all"] += fields.get("VmRSS", 0)
            out["web" if p == pid else "kids_hwm"] += fields.get("VmRSS" if p == pid else "VmHWM", 0)
            out["web_hwm"] = fields.get("VmHWM", 0) if p == pid else out["web_hwm"]
    return {**out, "n": len(pids)}


class RssSampler:
    """Samples the server's memory every 0.5 s in a thread (wall time, phase, web kB, all kB)."""

    def __init__(self, pid: int, phase: str) -> None:
        self.pid, self.phase = pid, phase
        self.samples: list[tuple[float, str, int, int]] = []
        self.marks: list[dict[str, Any]] = []  # ``memory`` at the end of each phase
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> dict[str, int]:
        m = memory(self.pid)
        self.samples.append((time.time(), self.phase, m["web"], m["all"]))
        return m

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.5)

    def end_phase(self, following: str) -> None:
        self.marks.append({**self._sample(), "phase": self.phase})
        self.phase = following

    def peak(self, phase: str, which: int) -> int:
        return max((s[which] for s in self.samples if s[1] == phase), default=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


LOG_LINE = re.compile(
    r"^(\S+ \S+) INFO arena\.snapshots: leaderboard view (\S+) computed in ([\d.]+) s", re.M
)


def view_peaks(log: str, samples: list[tuple[float, str, int, int]]) -> dict[str, tuple[int, int]]:
    """The highest (web, all) RSS sampled while each view was computed (its interval from the log)."""
    out = {}
    for stamp, view, seconds in LOG_LINE.findall(log):
        end = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        inside = [s for s in samples if end - float(seconds) - 0.25 <= s[0] <= end + 0.25]
        out[view] = (max((s[2] for s in inside), default=0), max((s[3] for s in inside), default=0))
    return out


def _stored_views(engine: Any) -> dict[str, float]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text("SELECT view, duration_s FROM leaderboard_snapshots"))
        return {v: float(s) for v, s in rows}


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} (waiting for {what})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.25)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def served(url: str, log_copy: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``python launch.py`` (demo roster) on ``url``: (process, page URL, its log); stopped on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="lb-tab-", dir=CACHE))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {**ENV, "ARENA_ADMIN_PASSWORD": "x", "ARENA_CACHE_DIR": str(MODELS_CACHE)}
    cmd = [sys.executable, "launch.py", "--db", url, "--port", str(port), "--data-dir", str(tmp / "data")]
    with (tmp / "server.log").open("wb") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process, f"http://127.0.0.1:{port}/", tmp / "server.log"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            shutil.copyfile(tmp / "server.log", log_copy)
            shutil.rmtree(tmp, ignore_errors=True)


WATCH_JS = """(name) => {
  const lb = window.__lb = {click: null, rows: null, computing: null};
  document.addEventListener('click', (e) => {
    if (lb.click === null && e.target.closest && e.target.closest('#tab-leaderboard-button'))
      lb.click = performance.now();
  }, true);
  const check = () => {
    const table = document.querySelector('#leaderboard-table');
    const updated = document.querySelector('#leaderboard-updated');
    if (table && table.textContent.includes(name)) { lb.rows = performance.now(); return; }
    if (lb.computing === null && updated && updated.textContent.includes('being computed'))
      lb.computing = performance.now();
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}"""
DONE_JS = "() => window.__lb.rows !== null || window.__lb.computing !== null"
ROWS_JS = "() => document.querySelectorAll('#leaderboard-table [role=row]').length - 1"


def open_tab(context: Any, url: str, top: str) -> dict[str, Any]:
    """One visit: load the page, click the Leaderboard tab, wait for the table (or "being computed").

    ``click_s`` runs from the click event in the page to the first animation frame whose table holds
    the top model (the rows are painted in that frame); ``wall_s`` is the same seen from playwright.
    """
    page = context.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("#tab-leaderboard-button")
        loaded = time.perf_counter() - t0
        page.evaluate(WATCH_JS, top)
        t1 = time.perf_counter()
        page.click("#tab-leaderboard-button")
        page.wait_for_function(DONE_JS, timeout=60_000, polling="raf")
        wall = time.perf_counter() - t1
        lb = page.evaluate("() => window.__lb")
        shown = lb["rows"] is not None
        click_s = ((lb["rows"] if shown else lb["computing"]) - lb["click"]) / 1000.0
        rows = page.evaluate(ROWS_JS)
        return {"load_s": loaded, "shown": shown, "click_s": click_s, "wall_s": wall, "rows": rows}
    finally:
        page.close()


PHASES = (
    "start (until the page answers)",
    "until bt is stored",
    "10 opens during the start-up refresh",
    "rest of the start-up refresh",
    "10 opens after the refresh",
)


def tab_run(name: str, url: str, browser: Any) -> dict[str, Any]:
    """Serve ``url``, wait for bt, open the tab 10 + 10 times, sampling the server's memory throughout."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from arena.views import STANDARD_VIEWS
    from storage.snapshots import load_snapshots

    engine = sa.create_engine(url)
    every = {s.key for s in STANDARD_VIEWS}
    t: dict[str, float] = {}
    try:
        with served(url, CACHE / f"tab-server-{name}.log") as (process, home, log):
            t0 = time.perf_counter()
            sampler = RssSampler(process.pid, PHASES[0])
            try:
                _wait(lambda: _answers(home), process, 300, "the page")
                t["http"] = time.perf_counter() - t0
                sampler.end_phase(PHASES[1])
                _wait(lambda: "bt" in _stored_views(engine), process, 600, "bt")
                t["bt"] = time.perf_counter() - t0
                sampler.end_phase(PHASES[2])
                with Session(engine) as db:
                    top = load_snapshots(db, ["bt"])[0].payload["rows"][0]["display_name"]
                context = browser.new_context()
                during = [open_tab(context, home, top) for _ in range(TAB_OPENS)]
                sampler.end_phase(PHASES[3])
                _wait(lambda: every <= set(_stored_views(engine)), process, 900, "every view")
                t["all"] = time.perf_counter() - t0
                time.sleep(1.0)  # the service loads the stored views into memory after the last one
                sampler.end_phase(PHASES[4])
                idle = [open_tab(context, home, top) for _ in range(TAB_OPENS)]
                sampler.end_phase("end")
                context.close()
            finally:
                sampler.stop()
            text = log.read_text(errors="replace")
        peaks = {p: (sampler.peak(p, 2), sampler.peak(p, 3)) for p in PHASES}
        per_view = view_peaks(text, sampler.samples)
        return {"t": t, "during": during, "idle": idle, "marks": sampler.marks, "peaks": peaks,
                "view_peaks": per_view, "views": _stored_views(engine)}  # fmt: skip
    finally:
        engine.dispose()


def baseline_rss() -> dict[str, int]:
    """``memory`` of the server on an empty database once it answers and has its snapshots."""
    import sqlalchemy as sa

    tmp = Path(tempfile.mkdtemp(prefix="lb-empty-", dir=CACHE))
    url = f"sqlite:///{tmp / 'arena.db'}"
    try:
        with served(url, CACHE / "tab-server-empty.log") as (process, home, _):
            _wait(lambda: _answers(home), process, 300, "the page")
            engine = sa.create_engine(url)
            _wait(lambda: "elo" in _stored_views(engine), process, 120, "every view")
            engine.dispose()
            time.sleep(2.0)
            return memory(process.pid)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_demo_models() -> None:
    """Build the demo roster's tiny models into the shared cache once (not timed)."""
    code = (
        "from pathlib import Path; from models.roster import load_roster; "
        "from arena.settings import ArenaSettings; from models.tiny import ensure_tiny_model\n"
        "for m in load_roster(ArenaSettings().config).models:\n"
        "    arch = (m.params or {}).get('tiny_demo')\n"
        f"    if arch: ensure_tiny_model(arch, Path({str(MODELS_CACHE)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True)


def part_tab(repeat: int) -> None:
    """The Leaderboard tab in Chromium and the server's memory, on SQLite and PostgreSQL."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS

    _build_demo_models()
    empty = baseline_rss()
    runs: dict[str, list[dict[str, Any]]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, base in DATABASES.items():
            url = base()
            runs[name] = []
            for _ in range(repeat):
                with scratch_database(name, url) as scratch:
                    runs[name].append(tab_run(name, scratch, browser))
        browser.close()
    (CACHE / "tab-runs.json").write_text(json.dumps({"runs": runs, "empty": empty}))  # to print again
    print_tab(runs, repeat, empty)


def print_tab(runs: dict[str, list[dict[str, Any]]], repeat: int, empty: dict[str, int]) -> None:
    names = list(runs)

    def line(label: str, cells: list[str]) -> None:
        print(f"| {label} | " + " | ".join(cells) + " |")

    def head(label: str, cells: list[str]) -> None:
        line(label, cells)
        print("|---|" + "---:|" * len(cells))

    def opens(n: str, batch: str, shown: bool = True, key: str = "click_s") -> list[float]:
        return [o[key] for r in runs[n] for o in r[batch] if o["shown"] == shown]

    def mb(values: list[float]) -> str:
        return f"{_med(values) / MB:.0f}"

    print(
        f"\nLeaderboard tab in Chromium, {TAB_OPENS} opens per batch (a new page each), {repeat} server runs\n"
    )
    head("", names)
    for key, label in (("http", "the page answers"), ("bt", "bt stored"), ("all", "every view stored")):
        line(f"{label} (s after the server started)", [f"{_med([r['t'][key] for r in runs[n]]):.1f}" for n in names])  # fmt: skip
    for batch, label in (("idle", "after the start-up refresh"), ("during", "right after bt is stored")):
        line(f"**{label}**: opens that showed the table", [f"{len(opens(n, batch))}/{repeat * TAB_OPENS}" for n in names])  # fmt: skip
        for what, fn, key in (("median", _med, "click_s"), ("max", max, "click_s"), ("median, from playwright", _med, "wall_s")):  # fmt: skip
            line(f"  click → table rows, {what} (s; target <= 1 s)", [f"{fn(opens(n, batch, key=key)):.3f}" if opens(n, batch) else "never" for n in names])  # fmt: skip
        line("  page load (goto → tab button), median (s)", [f"{_med(opens(n, batch, key='load_s')):.2f}" for n in names])  # fmt: skip
        said = [opens(n, batch, shown=False) for n in names]
        if any(said):
            line("  opens that said 'being computed' instead (click → message, median s)", [f"{len(c)} ({_med(c):.3f})" if c else "0" for c in said])  # fmt: skip
    print(f"\nServer memory, MB, medians of {repeat}: VmRSS sampled every 0.5 s of the web process (launch.py) and of all its processes (with the snapshot worker, if any)\n")  # fmt: skip
    print(f"Empty database, started, snapshots stored: web {empty['web'] / MB:.0f}, all {empty['all'] / MB:.0f} ({empty['n']} processes)")  # fmt: skip
    cols = (
        "web: max in phase",
        "web: at end",
        "web: VmHWM",
        "all: max in phase",
        "all: at end",
        "children: VmHWM",
    )
    for n in names:
        print(f"\n{n}\n")
        head("phase", list(cols))
        for i, phase in enumerate(PHASES):
            rs = runs[n]
            line(phase, [mb([r["peaks"][phase][0] for r in rs]), mb([r["marks"][i]["web"] for r in rs]), mb([r["marks"][i]["web_hwm"] for r in rs]), mb([r["peaks"][phase][1] for r in rs]), mb([r["marks"][i]["all"] for r in rs]), mb([r["marks"][i]["kids_hwm"] for r in rs])])  # fmt: skip
    print(
        "\nHighest RSS sampled while each view was computed (MB, medians), and its duration_s in the server\n"
    )
    head("view", [f"{n}: {c}" for n in names for c in ("web", "all", "s")])
    for v in sorted(runs[names[0]][0]["view_peaks"]):
        line(v, [c for n in names for c in (mb([r["view_peaks"].get(v, (0, 0))[0] for r in runs[n]]), mb([r["view_peaks"].get(v, (0, 0))[1] for r in runs[n]]), f"{_med([r['views'].get(v, 0) for r in runs[n]]):.1f}")])  # fmt: skip
    print()
    for n in names:
        for k, r in enumerate(runs[n], 1):
            web10, web20, all10 = (
                r["marks"][2]["web"] / MB,
                r["marks"][4]["web"] / MB,
                r["marks"][2]["all"] / MB,
            )
            print(
                f"{n} run {k}: web process RSS after the first 10 opens {web10:.0f} MB (all processes "
                f"{all10:.0f}), after 20 {web20:.0f} (target <= 700 after 10: {'met' if web10 <= 700 else 'MISSED'}); "
                f"processes {r['marks'][-1]['n']}; click→rows after the refresh "
                f"{_runs([o['click_s'] for o in r['idle'] if o['shown']], '{:.3f}')} s; right after bt "
                f"{_runs([o['click_s'] for o in r['during']], '{:.3f}')} s "
                f"(table shown: {''.join('y' if o['shown'] else 'n' for o in r['during'])}); "
                f"rows rendered {r['idle'][-1]['rows']} (the table is virtualised)"
            )


WEB_PARTS: dict[str, Callable[[int], None]] = {"refresh": part_refresh, "tab": part_tab, "rss": part_tab}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--refresh-child":
        refresh_child(sys.argv[2])
    else:
        sys.exit("run the parts through benchmarks/leaderboard_bench.py --part refresh|tab|rss")
