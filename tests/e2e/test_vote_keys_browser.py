"""Keyboard voting and the optional vote reason, in a real browser against ``python launch.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.harness import ArenaServer, accept_terms, ask, query, roster_arena

pytestmark = pytest.mark.e2e

ROSTER = """
models:
  - {name: kilo, display_name: Kilo Display, backend: scripted}
  - {name: lima, display_name: Lima Display, backend: scripted}
"""


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    with roster_arena(tmp_path_factory.mktemp("keys"), ROSTER) as server:
        yield server


def _votes(arena: ArenaServer) -> list[tuple]:
    return query(arena, "SELECT winner, reason FROM votes ORDER BY id")


def test_keys_vote_once_outside_the_prompt_and_a_reason_is_stored(
    arena: ArenaServer, browser, tmp_path: Path
) -> None:
    page = browser.new_context().new_page()
    page.goto(arena.url)
    picture = tmp_path / "p.png"
    Image.new("RGB", (40, 40), "navy").save(picture)
    ask(page, picture, "What colour is this?")

    page.focus("#battle-prompt textarea")  # typing a digit in the prompt box is typing, not voting
    page.keyboard.press("1")
    page.wait_for_timeout(800)
    assert _votes(arena) == [] and not page.is_disabled("#vote-a")
    assert page.input_value("#battle-prompt textarea") == "1"

    page.click("#battle-status")  # focus outside any text field
    page.keyboard.press("2")
    page.wait_for_function(
        "() => document.querySelector('#battle-name-b').innerText.includes('Model B:')", timeout=30_000
    )
    page.keyboard.press("1")  # the vote is closed now: nothing more is recorded
    page.wait_for_timeout(800)
    assert _votes(arena) == [("model_b", None)]

    # After the vote: an optional reason, at most 500 characters, stored with the vote.
    page.wait_for_selector("#vote-reason textarea", state="visible")
    assert page.get_attribute("#vote-reason textarea", "maxlength") == "500"
    page.fill("#vote-reason textarea", "B read the colour correctly.")
    page.click("#vote-reason-send")
    page.wait_for_function(
        "() => document.querySelector('#battle-status').innerText.includes('reason was saved')",
        timeout=30_000,
    )
    assert _votes(arena) == [("model_b", "B read the colour correctly.")]
    assert not page.is_visible("#vote-reason textarea")
    page.click("#battle-new-round")
    page.wait_for_function("() => document.querySelector('#battle-name-a').innerText === ''")
    assert not page.is_visible("#vote-reason textarea")


def test_an_example_fills_the_inputs_and_tags_its_battle(arena: ArenaServer, browser) -> None:
    from arena.examples import examples

    prompts = {e.prompt: e for e in examples()}
    page = browser.new_context().new_page()
    page.goto(arena.url)
    accept_terms(page)
    page.click("#battle-example")
    page.wait_for_function("() => document.querySelector('#battle-prompt textarea').value.length > 0")
    chosen = prompts[page.input_value("#battle-prompt textarea")]
    for index in range(1, len(chosen.images) + 1):
        page.wait_for_selector(f"#battle-images >> text={chosen.key}-{index}", timeout=15_000)
    page.click("#battle-send")
    page.wait_for_function("() => !document.querySelector('#vote-a').disabled", timeout=60_000, polling=200)
    page.click("#vote-tie")
    page.wait_for_function(
        "() => document.querySelector('#battle-name-a').innerText.includes('Model A:')", timeout=30_000
    )
    with sqlite3.connect(arena.db_path) as db:
        tagged = db.execute(
            "SELECT t.tag, (SELECT count(*) FROM turn_images ti JOIN turns u ON u.id = ti.turn_id "
            "WHERE u.battle_id = b.id) FROM battles b JOIN battle_tags t ON t.battle_id = b.id "
            "JOIN votes v ON v.battle_id = b.id WHERE v.winner = 'tie'"
        ).fetchall()
    assert tagged == [("example", len(chosen.images))]
    # The next round is not an example unless the button is pressed again.
    page.click("#battle-new-round")
    page.wait_for_function("() => document.querySelector('#battle-name-a').innerText === ''")
    page.fill("#battle-prompt textarea", "Just text this time.")
    page.click("#battle-send")
    page.wait_for_function("() => !document.querySelector('#vote-a').disabled", timeout=60_000, polling=200)
    with sqlite3.connect(arena.db_path) as db:
        assert db.execute("SELECT count(*) FROM battle_tags WHERE tag = 'example'").fetchone() == (1,)
