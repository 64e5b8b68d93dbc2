"""Side-by-side battles with chosen models, and regenerate before a vote, in headless Chromium
against ``python launch.py`` on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.harness import (
    ArenaServer,
    accept_terms,
    ask,
    query,
    roster_arena,
    vote,
)

pytestmark = pytest.mark.e2e

ROSTER = """
models:
  - {name: kilo, display_name: Kilo Display, backend: scripted}
  - {name: lima, display_name: Lima Display, backend: scripted}
  - {name: mike, display_name: Mike Display, backend: scripted}
"""


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    with roster_arena(tmp_path_factory.mktemp("sbs"), ROSTER) as server:
        yield server


def _picture(tmp_path: Path) -> Path:
    picture = tmp_path / "p.png"
    Image.new("RGB", (40, 40), "teal").save(picture)
    return picture


def _choose(page, dropdown: str, display: str, attempts: int = 10) -> None:
    """Pick a model in a dropdown; its choices arrive from the server once the tab opened."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    option = page.locator(f"#{dropdown}").get_by_role("option", name=display, exact=True)
    for attempt in range(1, attempts + 1):
        page.click(f"#{dropdown} input")
        try:
            option.click(timeout=3_000)
        except PlaywrightTimeout:
            if attempt == attempts:
                raise
            page.keyboard.press("Escape")
            continue
        page.wait_for_function(
            f"() => document.querySelector('#{dropdown} input').value === '{display}'", timeout=10_000
        )
        return


def test_side_by_side_with_chosen_models_is_stored_as_named(arena: ArenaServer, browser, tmp_path) -> None:
    page = browser.new_context().new_page()
    page.goto(arena.url)
    # The anonymous tab's page names no model: the lists arrive when the side-by-side tab opens.
    assert "Mike Display" not in page.content()
    page.click("#tab-side-by-side-button")
    page.wait_for_selector("#sbs-terms-accept, #sbs-prompt textarea", state="visible", timeout=60_000)
    if page.is_visible("#sbs-terms-accept"):
        page.click("#sbs-terms-accept")
    _choose(page, "sbs-model-a", "Mike Display")
    _choose(page, "sbs-model-b", "Kilo Display")
    page.set_input_files("#sbs-images input[type=file]", str(_picture(tmp_path)))
    page.wait_for_selector("#sbs-images >> text=p.png", timeout=30_000)
    page.fill("#sbs-prompt textarea", "What colour is this?")
    page.click("#sbs-send")
    page.wait_for_function("() => !document.querySelector('#sbs-vote-a').disabled", timeout=120_000)
    # Named: the names are on show before the vote, and the choice is fixed for the battle.
    assert "Mike Display" in page.inner_text("#sbs-name-a")
    assert "Kilo Display" in page.inner_text("#sbs-name-b")
    assert "What colour is this?" in page.inner_text("#sbs-answer-a")
    page.click("#sbs-vote-b")
    page.wait_for_function("() => document.querySelector('#sbs-vote-a').disabled", timeout=30_000)
    rows = query(
        arena,
        "SELECT b.mode, ma.name, mb.name, v.winner FROM votes v JOIN battles b ON b.id = v.battle_id "
        "JOIN models ma ON ma.id = b.model_a_id JOIN models mb ON mb.id = b.model_b_id",
    )
    assert rows == [("named", "mike", "kilo", "model_b")]
    page.context.close()


def test_regenerate_then_vote_in_the_battle_tab(arena: ArenaServer, browser, tmp_path) -> None:
    before = query(arena, "SELECT count(*) FROM votes")[0][0]
    page = browser.new_context().new_page()
    page.goto(arena.url)
    accept_terms(page)
    assert page.is_disabled("#battle-regenerate"), "nothing to regenerate before a battle"
    ask(page, _picture(tmp_path), "Describe this picture.")
    battle = query(arena, "SELECT id FROM battles WHERE mode = 'anony' ORDER BY created_at DESC LIMIT 1")[0][
        0
    ]
    answers = (
        "SELECT r.side, r.text FROM responses r JOIN turns t ON t.id = r.turn_id "
        f"WHERE t.battle_id = '{battle}' AND r.superseded = "
    )
    first = dict(query(arena, answers + "0"))
    page.click("#battle-regenerate")
    for _ in range(300):  # the new answers are stored when both are complete
        if len(query(arena, answers + "1")) == 2 and len(query(arena, answers + "0")) == 2:
            break
        page.wait_for_timeout(200)
    page.wait_for_function(
        "() => !document.querySelector('#vote-a').disabled && "
        "!document.querySelector('#battle-regenerate').disabled",
        timeout=30_000,
    )
    current = dict(query(arena, answers + "0"))
    assert dict(query(arena, answers + "1")) == first
    assert current != first and set(current) == {"a", "b"}
    pane = page.inner_text("#battle-answer-a")
    assert current["a"].split()[0] in pane and pane.count("Describe this picture.") == 1
    vote(page, "vote-tie")
    assert page.is_disabled("#battle-regenerate"), "no regenerate after the vote"
    assert query(arena, "SELECT count(*) FROM votes")[0][0] == before + 1
    assert query(
        arena,
        "SELECT v.winner, b.state, (SELECT count(*) FROM responses r JOIN turns t ON t.id = r.turn_id "
        f"WHERE t.battle_id = b.id AND r.superseded = 1) FROM votes v JOIN battles b ON b.id = v.battle_id "
        f"WHERE b.id = '{battle}'",
    ) == [("tie", "voted", 2)]
    page.context.close()
