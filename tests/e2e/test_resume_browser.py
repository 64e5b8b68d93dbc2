"""A battle that survives a page reload, in a real browser against ``python launch.py`` on SQLite.

The browser keeps only the signed battle token; after each reload the arena rebuilds the battle from
the database. Before the vote, nothing the browser receives after the reload names a model; the
battle goes on (a follow-up turn) and takes exactly one vote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.harness import (
    RECORD_PAYLOADS,
    ArenaServer,
    accept_terms,
    ask,
    query,
    roster_arena,
    upload,
    vote,
)

pytestmark = pytest.mark.e2e

ROSTER = """
models:
  - {name: quebec-model, display_name: Quebec Display, backend: scripted}
  - {name: romeo-model, display_name: Romeo Display, backend: scripted}
"""
NAMES = ("quebec-model", "quebec display", "romeo-model", "romeo display")


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    with roster_arena(tmp_path_factory.mktemp("resume"), ROSTER) as server:
        yield server


def _wait_resumed(page, text: str) -> None:
    """Wait until both chat windows show ``text`` again after a (re)load."""
    page.wait_for_function(
        "(text) => ['#battle-answer-a', '#battle-answer-b'].every("
        "(id) => document.querySelector(id)?.innerText.includes(text))",
        arg=text,
        timeout=60_000,
    )


def _leaked(page, documents: list[str]) -> list[str]:
    received = page.evaluate("() => window.__arenaReceived.join('\\n')")
    everything = "\n".join([page.content(), received, *documents]).lower()
    return [name for name in NAMES if name in everything]


def test_a_reload_mid_battle_resumes_it_and_it_takes_exactly_one_vote(
    arena: ArenaServer, browser, tmp_path: Path
) -> None:
    documents: list[str] = []
    context = browser.new_context()
    context.add_init_script(RECORD_PAYLOADS)  # runs again on every load: records from the reload on
    page = context.new_page()
    page.on(
        "response", lambda r: documents.append(r.text()) if r.request.resource_type == "document" else None
    )
    page.goto(arena.url)
    picture = tmp_path / "teal.png"
    Image.new("RGB", (48, 32), "teal").save(picture)
    ask(page, picture, "What colour is this picture?")
    before = {side: page.inner_text(f"#battle-answer-{side}") for side in "ab"}

    documents.clear()
    page.reload()
    _wait_resumed(page, "What colour is this picture?")
    page.wait_for_function("() => !document.querySelector('#vote-a').disabled", timeout=30_000)
    after = {side: page.inner_text(f"#battle-answer-{side}") for side in "ab"}
    assert after == before, "each side shows its own answers again"
    assert page.locator("#battle-answer-a img").count() >= 1, "the uploaded picture is shown again"
    assert page.inner_text("#battle-name-a").strip() == "" and page.inner_text("#battle-name-b").strip() == ""
    assert not page.is_visible("#terms-accept"), "the voter accepted the terms before the reload"
    received = page.evaluate("() => window.__arenaReceived.join('\\n')")
    assert "What colour is this picture?" in received, "the recorder saw the resumed battle arrive"
    assert not _leaked(page, documents), "no model name reaches the browser after a reload either"

    # The battle goes on where it was: a follow-up turn, answered with the whole conversation.
    page.fill("#battle-prompt textarea", "And what shape is it?")
    page.click("#battle-send")
    page.wait_for_function(
        "() => !document.querySelector('#vote-a').disabled"
        " && document.querySelector('#battle-answer-a').innerText.includes('what shape')",
        timeout=60_000,
    )
    assert not _leaked(page, documents)
    shown_a, shown_b = vote(page, "vote-b")
    assert {shown_a, shown_b} == {"Quebec Display", "Romeo Display"}

    # After the vote a reload shows the names and no open vote; a second tab resumes the same battle.
    page.reload()
    page.wait_for_function(
        "() => document.querySelector('#battle-name-a')?.innerText?.includes('Model A:')", timeout=60_000
    )
    second = context.new_page()
    second.goto(arena.url)
    _wait_resumed(second, "And what shape is it?")
    for tab in (page, second):
        assert tab.is_disabled("#vote-a") and tab.is_disabled("#vote-b"), "a battle takes one vote"
        tab.click("#battle-status")
        tab.keyboard.press("1")
    page.wait_for_timeout(800)

    battles = query(arena, "SELECT id, state FROM battles")
    assert len(battles) == 1 and battles[0][1] == "voted"
    assert query(arena, "SELECT winner FROM votes") == [("model_b",)]
    assert query(arena, "SELECT count(*) FROM turns") == [(2,)]
    context.close()


def test_a_fresh_browser_starts_afresh(arena: ArenaServer, browser) -> None:
    """Another browser (no token) is a new voter: terms first, then an empty battle."""
    page = browser.new_context().new_page()
    page.goto(arena.url)
    page.wait_for_selector("#terms-accept", state="visible", timeout=60_000)
    accept_terms(page)
    page.wait_for_timeout(1000)
    assert "colour" not in page.inner_text("#battle-answer-a")
    assert page.is_disabled("#vote-a")
    # The terms are accepted once for the whole page: the other tabs open at once, and after a reload.
    for tab, prompt in (
        ("#tab-side-by-side-button", "#sbs-prompt"),
        ("#tab-direct-button", "#direct-prompt"),
    ):
        page.click(tab)
        page.wait_for_selector(f"{prompt} textarea", state="visible", timeout=30_000)
    page.reload()
    page.click("#tab-direct-button")
    page.wait_for_selector("#direct-prompt textarea", state="visible", timeout=60_000)
    assert not page.is_visible("#direct-terms-accept")
    # ...and every tab is the same voter: a direct chat and a battle share one voter session.
    page.fill("#direct-prompt textarea", "Hello there.")
    page.click("#direct-send")
    page.wait_for_function(
        "() => (document.querySelector('#direct-status')?.innerText || '').includes('Rate the answer')",
        timeout=60_000,
    )
    page.click("#tab-battle-button")
    page.fill("#battle-prompt textarea", "And hello to you two.")
    page.click("#battle-send")
    page.wait_for_function("() => !document.querySelector('#vote-a').disabled", timeout=60_000)
    modes = query(
        arena,
        "SELECT mode, session_id FROM battles WHERE session_id IN "
        "(SELECT session_id FROM battles WHERE mode = 'direct')",
    )
    assert sorted(mode for mode, _ in modes) == ["anony", "direct"] and len({s for _, s in modes}) == 1


SLOW_ROSTER = """
models:
  - {name: sierra-model, display_name: Sierra Display, backend: scripted, params: {delay_s: 0.3}}
  - {name: tango-model, display_name: Tango Display, backend: scripted, params: {delay_s: 0.3}}
"""


def test_a_reload_mid_answer_voids_that_battle_and_the_next_one_counts(
    browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("resume-slow")
    with roster_arena(tmp, SLOW_ROSTER) as arena:
        page = browser.new_context().new_page()
        page.goto(arena.url)
        picture = tmp / "olive.png"
        Image.new("RGB", (40, 40), "olive").save(picture)
        upload(page, picture)
        page.fill("#battle-prompt textarea", "Tell me a long story about this picture.")
        page.click("#battle-send")
        page.wait_for_function(
            "() => document.querySelector('#battle-answer-a')?.innerText.includes('Tell me a long story')",
            timeout=30_000,
        )
        page.reload()  # while both answers are still streaming
        page.wait_for_function(
            "() => document.querySelector('#battle-status')?.innerText.includes('cut off')", timeout=60_000
        )
        assert page.is_disabled("#vote-a")
        assert query(arena, "SELECT state, invalid_reason FROM battles") == [
            ("invalid", "abandoned before the answers finished")
        ]
        # The same voter goes on at once with a new battle, which takes the one vote.
        ask(page, picture, "What colour is it?")
        vote(page, "vote-a")
        assert sorted(query(arena, "SELECT state FROM battles")) == [("invalid",), ("voted",)]
        assert query(arena, "SELECT count(*) FROM votes") == [(1,)]
        assert len(query(arena, "SELECT DISTINCT session_id FROM battles")) == 1
