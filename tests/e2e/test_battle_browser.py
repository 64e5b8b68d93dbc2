"""One anonymous battle end to end: a real arena process, driven by headless Chromium, voting into SQLite.

Before the vote, neither the page nor anything the browser received may contain a model's name.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from models.roster import load_roster
from tests.e2e.harness import RECORD_PAYLOADS, ROOT, accept_terms, ask, start_arena, stop_arena, vote

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:  # leaderboard snapshots: refreshed each second
        patch.setenv("ARENA_LEADERBOARD_REFRESH_S", "1")
        server = start_arena(tmp_path_factory.mktemp("arena"), "--seed", "7")
    yield server
    stop_arena(server)


def _picture(path: Path) -> Path:
    img = Image.new("RGB", (64, 48), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((8, 8, 40, 40), fill="red")
    draw.ellipse((30, 10, 60, 44), fill="blue")
    img.save(path)
    return path


def _secret_names() -> set[str]:
    roster = load_roster(ROOT / "configs" / "demo.yaml")
    return {n for spec in roster.models for n in (spec.name, spec.display_name or spec.name)}


def test_anonymous_battle_vote_and_reveal(arena, browser, tmp_path: Path) -> None:
    names = _secret_names()
    documents: list[str] = []
    context = browser.new_context()
    context.add_init_script(RECORD_PAYLOADS)
    page = context.new_page()

    def keep_document(response) -> None:
        if response.request.resource_type == "document":
            documents.append(response.text())

    page.on("response", keep_document)
    page.goto(arena.url)
    accept_terms(page)
    page.wait_for_selector("#battle-send")
    assert page.is_disabled("#vote-a") and page.is_disabled("#vote-bothbad"), "no vote before a battle"

    ask(page, _picture(tmp_path / "shapes.png"), "What shapes and colours are in this picture?")
    panes = {"a": page.inner_text("#battle-answer-a"), "b": page.inner_text("#battle-answer-b")}
    assert all("What shapes and colours" in pane for pane in panes.values())
    assert page.inner_text("#battle-name-a").strip() == ""
    assert page.inner_text("#battle-name-b").strip() == ""

    received_before = page.evaluate("() => window.__arenaReceived.join('\\n')")
    # The recorder works: it saw the streamed prompt echo and answers...
    assert "What shapes and colours" in received_before
    # ...and no model name reached the browser before the vote: not the DOM, not any payload.
    everything = "\n".join([page.content(), received_before, *documents]).lower()
    leaked = sorted(n for n in names if n.lower() in everything)
    assert not leaked, f"model names reached the browser before the vote: {leaked}"

    shown_a, shown_b = vote(page, "vote-a")
    assert shown_a in names and shown_b in names and shown_a != shown_b
    assert page.is_disabled("#vote-b"), "a battle takes one vote"
    # The names now travel to the browser: the recorder would have caught a leak.
    assert shown_a.lower() in page.evaluate("() => window.__arenaReceived.join('\\n')").lower()

    with sqlite3.connect(arena.db_path) as db:
        rows = db.execute(
            "SELECT v.winner, b.state, ma.display_name, mb.display_name, "
            "(SELECT count(*) FROM turn_images ti JOIN turns t ON t.id = ti.turn_id WHERE t.battle_id = b.id), "
            "(SELECT count(*) FROM responses r JOIN turns t ON t.id = r.turn_id WHERE t.battle_id = b.id) "
            "FROM votes v JOIN battles b ON b.id = v.battle_id "
            "JOIN models ma ON ma.id = b.model_a_id JOIN models mb ON mb.id = b.model_b_id"
        ).fetchall()
    assert rows == [("model_a", "voted", shown_a, shown_b, 1, 2)]
    with sqlite3.connect(arena.db_path) as db:
        stored = dict(db.execute("SELECT side, text FROM responses").fetchall())
    for side, text in stored.items():
        # Each pane showed its own model's stored answer (allowing for markdown rendering).
        words = [w for w in re.findall(r"[A-Za-z0-9]{4,}", text)]
        assert words, f"model {side} gave no answer"
        shown = sum(w in panes[side] for w in words)
        assert shown >= 0.6 * len(words), (side, text, panes[side])
        # ...and those streamed answers were among the payloads the recorder saw before the vote.
        assert sum(w in received_before for w in words) >= 0.6 * len(words)

    # The leaderboard snapshot, computed in the background from the stored vote, now lists both
    # models (one vote each: as "not enough votes yet"); Refresh reads the latest snapshot.
    page.click("#tab-leaderboard-button")
    for _ in range(60):
        if shown_a in page.inner_text("#leaderboard-pending"):
            break
        page.wait_for_timeout(1000)
        page.click("#leaderboard-refresh")
    board = page.inner_text("#leaderboard-pending")
    assert shown_a in board and shown_b in board and "Not enough votes yet" in board
    context.close()
