"""The public Leaderboard tab in Chromium, over votes imported before the arena starts.

The arena runs as a user starts it (``python launch.py``) on a database that already holds a few hundred
votes (``python -m storage import`` of a generated FastChat file, some battles tagged "ocr"), with
``ARENA_LEADERBOARD_MIN_VOTES`` small. Its background task computes the snapshots at start-up; the tab
then shows them: the table with links and licences, the category selector, the style toggle, the CSV
download and the interval plot.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.roster import load_roster
from storage import repo
from storage.db import make_engine, session_factory, upgrade
from tests.e2e.harness import ROOT, ArenaServer, accept_terms, start_arena, stop_arena

pytestmark = pytest.mark.e2e

MINUS = "\u2212"
ADMIN_PASSWORD = "board-admin-password"
ROSTER = """
models:
  - name: lb-alpha
    display_name: Alpha Board Display
    organization: Alpha Labs
    license: Apache-2.0
    link: https://example.org/alpha
    backend: scripted
  - name: lb-bravo
    display_name: Bravo Board Display
    organization: Bravo Labs
    license: MIT
    link: https://example.org/bravo
    backend: scripted
  - name: lb-charlie
    display_name: Charlie Board Display
    organization: Charlie Labs
    license: CC-BY-4.0
    link: https://example.org/charlie
    backend: scripted
"""


def _records() -> list[dict[str, object]]:
    """Battles among the roster's models (alpha strongest, longer answers win more), plus a newcomer."""
    plan = [
        ("lb-alpha", "lb-bravo", ["model_a"] * 20 + ["model_b"] * 8 + ["tie"] * 6),
        ("lb-alpha", "lb-charlie", ["model_a"] * 24 + ["model_b"] * 5 + ["tie"] * 5),
        ("lb-bravo", "lb-charlie", ["model_a"] * 18 + ["model_b"] * 10 + ["tie (bothbad)"] * 6),
        ("lb-newcomer", "lb-alpha", ["model_b"] * 2 + ["model_a"]),
    ]
    records = []
    for a, b, winners in plan:
        for k, winner in enumerate(winners):
            i = len(records)
            records.append(
                {
                    "question_id": f"lb-{i}",
                    "model_a": a,
                    "model_b": b,
                    "winner": winner,
                    "judge": f"voter-{i % 7}",
                    "turn": 1,
                    "anony": True,
                    "tstamp": 1_780_000_000.0 + 60 * i,
                    "conversation_a": [
                        {"role": "user", "content": f"question {i}"},
                        {"role": "assistant", "content": "word " * (5 + (k * 7) % 40)},
                    ],
                    "conversation_b": [
                        {"role": "user", "content": f"question {i}"},
                        {"role": "assistant", "content": "word " * (5 + (k * 11) % 30)},
                    ],
                }
            )
    return records


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    tmp = tmp_path_factory.mktemp("leaderboard-arena")
    (tmp / "roster.yaml").write_text(ROSTER)
    db_path = tmp / "arena.db"  # where start_arena points launch.py
    db_url = f"sqlite:///{db_path}"
    upgrade(db_url)
    engine = make_engine(db_url)  # the roster's models first, so the import matches them by name
    with session_factory(engine).begin() as db:
        seeds = [
            repo.ModelSeed(
                s.name, s.display_name or s.name, s.organization, s.backend, license=s.license, link=s.link
            )
            for s in load_roster(tmp / "roster.yaml").models
        ]
        repo.sync_models(db, seeds, datetime.now(UTC))
    engine.dispose()
    battles = tmp / "battles.jsonl"
    battles.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    subprocess.run(
        [sys.executable, "-m", "storage", "import", "--db", db_url, str(battles)],
        cwd=ROOT,
        env=env,
        check=True,
    )
    with sqlite3.connect(db_path) as conn:  # the first two pairs' battles are about reading text
        conn.executemany(
            "INSERT INTO battle_tags (battle_id, tag) VALUES (?, 'ocr')", [(f"lb-{i}",) for i in range(68)]
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARENA_LEADERBOARD_MIN_VOTES", "10")
        patch.setenv("ARENA_LEADERBOARD_REFRESH_S", "5")
        patch.setenv("ARENA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        server = start_arena(tmp, "--config", str(tmp / "roster.yaml"), "--seed", "1")
    yield server
    stop_arena(server)


def _text(page, selector: str) -> str:
    return page.inner_text(selector)


def test_leaderboard_tab_table_category_style_and_csv(arena: ArenaServer, browser, tmp_path: Path) -> None:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(arena.url)
    accept_terms(page)
    page.wait_for_selector("#battle-send")
    assert "Alpha Board Display" not in page.content(), "no model name at page load"

    page.click("#tab-leaderboard-button")
    # The worker process computes the first snapshots after start-up; on a loaded machine that can
    # come after the tab was opened, so Refresh until the table is there (as a visitor would).
    for _ in range(45):
        if "Alpha Board Display" in _text(page, "#leaderboard-table"):
            break
        page.wait_for_timeout(2000)
        page.click("#leaderboard-refresh")
    table = _text(page, "#leaderboard-table")
    assert "Alpha Board Display" in table, arena.log.read_text()[-4000:]
    lines = [line for line in table.splitlines() if "Board Display" in line]
    assert [line.split("Board Display")[0].split()[-1] for line in lines][:1] == ["Alpha"], table
    for licence in ("Apache-2.0", "MIT", "CC-BY-4.0"):
        assert licence in table
    assert f" / {MINUS}" in table and "--" not in table and "+-" not in table
    hrefs = page.eval_on_selector_all("#leaderboard-table a", "links => links.map(a => a.href)")
    assert "https://example.org/alpha" in hrefs
    assert "Last updated" in _text(page, "#leaderboard-updated") and "UTC" in _text(
        page, "#leaderboard-updated"
    )
    pending = _text(page, "#leaderboard-pending")
    assert "Not enough votes yet" in pending and "lb-newcomer (3 votes)" in pending
    page.wait_for_selector("#leaderboard-plot .js-plotly-plot", timeout=30_000)

    with page.expect_download(timeout=30_000) as download_info:
        page.click("#leaderboard-csv")
    saved = tmp_path / "board.csv"
    download_info.value.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:4] == ["Rank (UB)", "Model", "Arena rating", "95% CI"]
    assert [r[1] for r in rows[1:]][0] == "Alpha Board Display" and len(rows) == 4
    assert rows[1][-1] == "https://example.org/alpha"

    # the category selector: the "ocr" battles' own leaderboard
    page.click("#leaderboard-category input")
    page.click("ul[role='listbox'] >> text=ocr")
    page.wait_for_function(
        "() => document.querySelector('#leaderboard-note').innerText.includes('ocr')", timeout=30_000
    )
    assert "Alpha Board Display" in _text(page, "#leaderboard-table")

    # the style toggle (back on all votes): the style-controlled view
    page.click("#leaderboard-category input")
    page.click("ul[role='listbox'] >> text=All")
    page.check("#leaderboard-style input[type=checkbox]")
    page.wait_for_function(
        "() => document.querySelector('#leaderboard-note').innerText.includes('Style-controlled')",
        timeout=30_000,
    )
    assert "Bravo Board Display" in _text(page, "#leaderboard-table")
    context.close()


def test_admin_leaderboard_views_plots_and_recompute(arena: ArenaServer, browser) -> None:
    """The admin page's Leaderboards tab over the same snapshots: every view, its plots, Recompute."""
    base = arena.url.rstrip("/")
    page = browser.new_page()
    page.goto(base + "/admin/login")
    page.fill("#login-user", "admin")
    page.fill("#login-password", ADMIN_PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(base + "/admin/")
    page.wait_for_function(
        "() => (document.querySelector('#admin-lb-table') || {innerText: ''}).innerText"
        ".includes('Alpha Board Display')",
        timeout=60_000,
    )
    assert "Bradley–Terry (anonymous votes)" in _text(page, "#admin-lb-status")
    assert "Computed at" in _text(page, "#admin-lb-status")
    for plot in ("admin-lb-ratings", "admin-lb-winrate", "admin-lb-battles", "admin-lb-votes-per-day"):
        page.wait_for_selector(f"#{plot} .js-plotly-plot", timeout=30_000)

    # an admin-only view: online Elo over the same votes
    page.click("#admin-lb-view input")
    page.click("ul[role='listbox'] >> text=Online Elo")
    page.wait_for_function(
        "() => document.querySelector('#admin-lb-status').innerText.includes('Online Elo')", timeout=30_000
    )
    assert "Alpha Board Display" in _text(page, "#admin-lb-table")

    page.click("#admin-lb-recompute")
    page.wait_for_function(
        "() => document.querySelector('#admin-lb-status').innerText.includes('Recompute requested')",
        timeout=30_000,
    )
    page.close()
