"""The page's first paint, in a real browser against ``python launch.py`` on SQLite (issue 15).

- The first control a person uses shows without waiting for the page-load request: the terms for a new
  browser, the Send button for one whose voter accepted them (no flash of the terms). The test holds
  the page-load request unanswered to prove it; once it answers, the server's record decides.
- The other tabs' component kinds (dropdowns, the leaderboard's table and plot) are not in the first
  paint; they show when their tab is first opened, and work as before.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e.harness import ArenaServer, roster_arena

pytestmark = pytest.mark.e2e

ROSTER = """
models:
  - {name: uniform-model, display_name: Uniform Display, backend: scripted}
  - {name: victor-model, display_name: Victor Display, backend: scripted}
"""
#: Gradio's direct (unqueued) event route: the page-load request and the tabs' reveal go through it.
DIRECT_EVENTS = "**/gradio_api/run/predict"


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    with roster_arena(tmp_path_factory.mktemp("first-paint"), ROSTER) as server:
        yield server


class HeldRequests:
    """Holds every direct event request of a page unanswered until :meth:`release`."""

    def __init__(self, page) -> None:
        self.held: list = []
        page.route(DIRECT_EVENTS, self._hold)

    def _hold(self, route) -> None:
        self.held.append(route)

    def release(self, page) -> None:
        """Let the held requests go on, and wait until the page has their answers."""
        with page.expect_response(lambda response: "/run/predict" in response.url, timeout=30_000):
            for route in self.held:
                route.continue_()
        self.held.clear()
        page.wait_for_timeout(300)  # the answer applied to the page


def _shown(page, selector: str) -> bool:
    return bool(page.is_visible(selector))


def _first_paint(context, url: str, shown: str, absent: str):
    """Open ``url`` with its page-load request held: ``shown`` shows and ``absent`` is not even in the
    page; then let the request answer. Returns the page."""
    page = context.new_page()
    held = HeldRequests(page)
    page.goto(url)
    page.wait_for_selector(shown, state="visible", timeout=60_000)
    assert held.held, "the page-load request is being held"
    assert page.query_selector(absent) is None, f"{absent} is in the first paint"
    held.release(page)
    return page


def test_the_first_control_shows_before_the_page_load_answers(arena: ArenaServer, browser) -> None:
    context = browser.new_context()
    page = _first_paint(context, arena.url, shown="#terms-accept", absent="#battle-send")
    assert _shown(page, "#terms-accept") and not _shown(page, "#battle-send")
    page.unroute(DIRECT_EVENTS)
    page.click("#terms-accept")
    page.wait_for_selector("#battle-send", state="visible", timeout=30_000)
    storage = context.storage_state()
    context.close()

    # The same browser again: its voter accepted, so Send shows at once and the terms never do.
    context = browser.new_context(storage_state=storage)
    context.add_init_script(
        "window.__termsSeen = false; new MutationObserver(() => {"
        " const t = document.querySelector('#terms-accept');"
        " if (t && t.getBoundingClientRect().height > 0) window.__termsSeen = true;"
        "}).observe(document, {subtree: true, childList: true, attributes: true});"
    )
    page = _first_paint(context, arena.url, shown="#battle-send", absent="#terms-accept")
    assert _shown(page, "#battle-send")
    assert page.evaluate("() => window.__termsSeen") is False, "the terms flashed for a returning voter"
    context.close()


def test_a_new_voter_who_accepts_before_the_page_load_answers_gets_the_battle(
    arena: ArenaServer, browser
) -> None:
    """Accepting while the page-load request is still on its way (held here) opens the battle, and its
    late answer, read before the acceptance, does not send the voter back to the terms."""
    context = browser.new_context()
    page = context.new_page()
    held = HeldRequests(page)
    page.goto(arena.url)
    page.click("#terms-accept", timeout=60_000)  # a queued event: not held
    assert held.held, "the page-load request has not answered yet"
    page.wait_for_selector("#battle-send", state="visible", timeout=30_000)
    assert not _shown(page, "#terms-accept")
    held.release(page)
    assert _shown(page, "#battle-send") and not _shown(page, "#terms-accept")
    context.close()


def _config(arena: ArenaServer) -> dict[str, dict]:
    with urllib.request.urlopen(arena.url + "config", timeout=30) as response:
        config = json.load(response)
    return {c["props"]["elem_id"]: c for c in config["components"] if c["props"].get("elem_id")}


LAZY = {  # tab button -> components of kinds only that tab (or another unopened one) has
    "#tab-side-by-side-button": ["sbs-model-a", "sbs-model-b"],
    "#tab-direct-button": ["direct-model"],
    "#tab-leaderboard-button": ["leaderboard-category", "leaderboard-style", "leaderboard-table"],
}


def test_the_other_tabs_kinds_wait_for_their_tab(arena: ArenaServer, browser) -> None:
    components = _config(arena)
    for ids in LAZY.values():
        for elem_id in ids:
            assert components[elem_id]["props"]["visible"] is False, f"{elem_id} is in the first paint"
    # Kinds the Battle tab shows anyway stay as they were: the other tabs' chat windows and prompts.
    for elem_id in ("sbs-answer-a", "sbs-prompt", "direct-chat", "direct-prompt"):
        assert components[elem_id]["props"]["visible"] is True, elem_id

    page = browser.new_context().new_page()
    page.goto(arena.url)
    page.click("#terms-accept", timeout=60_000)
    page.wait_for_selector("#battle-send", state="visible", timeout=30_000)
    for button, ids in LAZY.items():
        page.click(button)
        for elem_id in ids:
            page.wait_for_selector(f"#{elem_id}", state="visible", timeout=30_000)
    # Opened: the side-by-side dropdowns list the roster, and the leaderboard fills its table.
    page.click("#tab-side-by-side-button")
    page.click("#sbs-model-a input")
    page.wait_for_selector("text=Uniform Display", state="visible", timeout=30_000)
    page.context.close()
