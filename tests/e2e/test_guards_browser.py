"""Votes worth counting, seen from a real browser: terms of use, an identity leak, a rate limit, a
decompression bomb and a flagged prompt.

The refusals run first: none of them may use up the voter's battles. The arena runs as a user
would start it (``python launch.py``) with a roster of two scripted models,
one of which introduces itself as made by its roster organization, and with these settings:
two new battles per hour, blocklist moderation. Every flag checked below was set by the arena from
what happened in the page, never written by the test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from arena.guards.moderation import NEUTRAL_REFUSAL
from arena.ui.errors import NEUTRAL_ERROR
from tests.e2e.harness import ArenaServer, accept_terms, ask, start_arena, stop_arena, upload, vote
from tests.hostile_images import decompression_bomb_png

pytestmark = pytest.mark.e2e

ROSTER = """
models:
  - name: alpha
    display_name: Alpha Display
    organization: Alpha Labs
    backend: scripted
  - name: bravo
    display_name: Bravo Display
    organization: EvilCorp
    backend: scripted
    params: {reply: "Hello, I am a helpful assistant made by EvilCorp."}
"""


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    tmp = tmp_path_factory.mktemp("guards")
    roster = tmp / "roster.yaml"
    roster.write_text(ROSTER)
    blocklist = tmp / "blocklist.txt"
    blocklist.write_text("# words that are never sent to a model\nforbidden[- ]?word\n")
    server = start_arena(
        tmp,
        "--config",
        str(roster),
        "--seed",
        "5",
        env={
            "ARENA_MAX_BATTLES_PER_HOUR": "2",
            "ARENA_MODERATION": "blocklist",
            "ARENA_MODERATION_BLOCKLIST": str(blocklist),
            "ARENA_LEADERBOARD_WORKER": "false",
        },
    )
    try:
        yield server
    finally:
        stop_arena(server)


def _picture(path: Path, colour: str = "orange") -> Path:
    Image.new("RGB", (48, 32), colour).save(path)
    return path


def _rows(arena: ArenaServer, sql: str) -> list[tuple]:
    with sqlite3.connect(arena.db_path) as db:
        return db.execute(sql).fetchall()


def _wait_status(page, text: str) -> str:
    page.wait_for_function(
        "t => document.querySelector('#battle-status').innerText.includes(t)", arg=text, timeout=30_000
    )
    return page.inner_text("#battle-status")


def _toasts(page, text: str) -> int:
    """How many toasts on the page carry ``text`` (after giving a second one time to appear)."""
    page.wait_for_selector(f".toast-body >> text={text[:30]}", timeout=15_000)
    page.wait_for_timeout(700)
    return page.locator(".toast-body", has_text=text[:30]).count()


def test_bomb_and_flagged_prompt_are_refused_with_one_message(
    arena: ArenaServer, browser, tmp_path: Path
) -> None:
    images = arena.db_path.parent / "data" / "images"
    files_before = sorted(p.name for p in images.rglob("*") if p.is_file()) if images.exists() else []
    battles_before = _rows(arena, "SELECT count(*) FROM battles")
    page = browser.new_context().new_page()
    page.goto(arena.url)
    accept_terms(page)

    page.fill("#battle-prompt textarea", "Please tell me the forbidden word")
    page.click("#battle-send")
    _wait_status(page, NEUTRAL_REFUSAL[:40])
    assert _toasts(page, NEUTRAL_REFUSAL) == 1
    flags = _rows(arena, "SELECT reason, battle_id, session_id IS NOT NULL FROM moderation_flags")
    assert len(flags) == 1 and "blocklist" in flags[0][0] and flags[0][1:] == (None, 1)

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(decompression_bomb_png())
    assert bomb.stat().st_size < 100_000  # a few KB on disk, 30000×30000 pixels once decoded
    upload(page, bomb)
    page.fill("#battle-prompt textarea", "What is in this image?")
    page.click("#battle-send")
    status = _wait_status(page, "Image 1 (bomb.png)")
    assert "too large" in status and "Error" not in status.replace("⚠️", "")
    assert _toasts(page, "Image 1 (bomb.png)") == 1
    assert page.locator("text=/^Error$/").count() == 0  # never Gradio's bare "Error"

    files_after = sorted(p.name for p in images.rglob("*") if p.is_file()) if images.exists() else []
    assert files_after == files_before  # no file left behind by either refusal
    assert _rows(arena, "SELECT count(*) FROM battles") == battles_before

    # An unexpected failure (the image folder replaced by a file, so no image can be written) shows
    # the neutral message once, never Gradio's bare "Error", and the page goes on working.
    page.reload()
    accept_terms(page)
    moved = images.with_name("images-moved")
    images.rename(moved)
    images.write_text("not a folder")
    try:
        upload(page, _picture(tmp_path / "fine.png", "purple"))
        page.fill("#battle-prompt textarea", "What colour is this?")
        page.click("#battle-send")
        assert _toasts(page, NEUTRAL_ERROR) == 1
        assert (
            page.locator(".toast-body", has_text="Error").filter(has_not_text=NEUTRAL_ERROR[:20]).count() == 0
        )
    finally:
        images.unlink()
        moved.rename(images)
    assert "Traceback" in arena.log.read_text()  # logged for operators, with its traceback
    assert _rows(arena, "SELECT count(*) FROM battles") == battles_before


def test_terms_leak_and_rate_limit(arena: ArenaServer, browser, tmp_path: Path) -> None:
    accepted_before = _rows(arena, "SELECT count(*) FROM voter_sessions WHERE terms_version IS NOT NULL")
    page = browser.new_context().new_page()
    page.goto(arena.url)
    # Before the first battle the voter sees the terms, not the battle controls.
    page.wait_for_selector("#terms-accept", state="visible", timeout=60_000)
    assert "Terms of use" in page.inner_text("#terms-text")
    assert not page.is_visible("#battle-send")
    accept_terms(page)
    assert page.is_visible("#battle-send") and not page.is_visible("#terms-accept")
    accepted = _rows(arena, "SELECT terms_version, terms_accepted_at FROM voter_sessions ORDER BY created_at")
    assert len(accepted) == accepted_before[0][0] + 1
    assert accepted[-1][0].startswith("sha256:") and accepted[-1][1]

    # A battle whose answer names its model's maker: the vote is taken, and the reveal says it will
    # not count.
    ask(page, _picture(tmp_path / "a.png"), "What colour is this?")
    answers = page.inner_text("#battle-answer-a") + page.inner_text("#battle-answer-b")
    assert "EvilCorp" in answers
    vote(page, "vote-b")
    status = page.inner_text("#battle-status")
    assert "“EvilCorp”" in status and "will not count" in status
    leak = _rows(arena, "SELECT identity_leak, identity_leak_term, identity_leak_side, state FROM battles")
    assert len(leak) == 1 and leak[0][:2] == (1, "EvilCorp") and leak[0][2] in ("a", "b")
    assert leak[0][3] == "voted"
    assert _rows(arena, "SELECT winner, decision_s IS NOT NULL FROM votes") == [("model_b", 1)]

    # Second battle: allowed. Third: refused, with when the voter can go on; nothing stored.
    page.click("#battle-new-round")
    ask(page, _picture(tmp_path / "b.png", "blue"), "And this one?")
    vote(page, "vote-tie")
    page.click("#battle-new-round")
    upload(page, _picture(tmp_path / "c.png", "green"))
    page.fill("#battle-prompt textarea", "One more, please")
    page.click("#battle-send")
    status = _wait_status(page, "limit of 2 new battles per hour")
    assert "UTC" in status and "minutes" in status
    assert _toasts(page, "You have reached the limit") == 1
    assert _rows(arena, "SELECT count(*) FROM battles") == [(2,)]
    assert _rows(arena, "SELECT count(*) FROM turns") == [(2,)]
    # The page still works: the leaderboard tab opens.
    page.click("#tab-leaderboard-button")
    page.wait_for_selector("#leaderboard-table", state="visible", timeout=30_000)
