"""A model toggled on the admin page takes effect in battles: the real ``python launch.py`` (demo roster,
three tiny models), driven by headless Chromium.

The admin signs in at /admin/login, disables a model that has just taken part in a battle, and from
then on every battle on the public page is between the two other models.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from models.roster import load_roster
from tests.e2e.harness import ROOT, ArenaServer, accept_terms, ask, start_arena, stop_arena, vote

pytestmark = pytest.mark.e2e

PASSWORD = "admin-models-test-password"
REFRESH_S = 0.5
BATTLES_AFTER = 3


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARENA_ADMIN_PASSWORD", PASSWORD)
        patch.setenv("ARENA_MODEL_REFRESH_S", str(REFRESH_S))
        server = start_arena(tmp_path_factory.mktemp("admin-models"), "--seed", "7")
    yield server
    stop_arena(server)


def _picture(path: Path) -> Path:
    Image.new("RGB", (48, 32), "orange").save(path)
    return path


def _play(page, picture: Path, prompt: str) -> tuple[str, str]:
    """One battle on the public page: ask, vote, return the revealed display names; then a new round."""
    ask(page, picture, prompt)
    names = vote(page, "vote-tie")
    page.click("#battle-new-round")
    page.wait_for_function("() => document.querySelector('#vote-a').disabled", timeout=30_000)
    return names


def _wait_text(page, selector: str, text: str, timeout_ms: int = 60_000) -> None:
    """Wait until the element's text contains ``text`` (Gradio tables keep hidden copies of cells)."""
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.innerText ?? '').includes(text)",
        arg=[selector, text],
        timeout=timeout_ms,
        polling=200,
    )


def test_a_model_disabled_on_the_admin_page_leaves_battles(arena, browser, tmp_path: Path) -> None:
    display = {s.display_name or s.name: s.name for s in load_roster(ROOT / "configs" / "demo.yaml").models}
    picture = _picture(tmp_path / "orange.png")
    public = browser.new_context().new_page()
    public.goto(arena.url)
    accept_terms(public)
    public.wait_for_selector("#battle-send")
    first = _play(public, picture, "What colour is this?")
    target = display[first[0]]  # a model that was just drawn
    others = set(display.values()) - {target}

    admin = browser.new_context().new_page()
    base = arena.url.rstrip("/")
    admin.goto(base + "/admin/login")
    admin.fill("#login-user", "admin")
    admin.fill("#login-password", PASSWORD)
    admin.click("#login-submit")
    admin.wait_for_url(base + "/admin/")
    admin.get_by_role("tab", name="Models").click()
    _wait_text(admin, "#admin-models-table", target)
    admin.click("#admin-model-name input")
    admin.get_by_role("option", name=target, exact=True).click()
    checkbox = admin.locator("#admin-model-enabled input[type=checkbox]")
    admin.wait_for_function(
        "() => document.querySelector('#admin-model-enabled input').checked", timeout=30_000
    )
    checkbox.uncheck()
    admin.click("#admin-model-apply")
    _wait_text(admin, "#admin-model-message", f"{target}: enabled=False")
    _wait_text(admin, "#admin-audit-table", "set-model")
    assert "admin:admin" in admin.inner_text("#admin-audit-table")
    with sqlite3.connect(arena.db_path) as db:
        assert db.execute("SELECT enabled FROM models WHERE name = ?", (target,)).fetchone() == (0,)
        before = db.execute("SELECT count(*) FROM battles").fetchone()[0]

    public.wait_for_timeout(3 * REFRESH_S * 1000)  # let the arena's refresh interval pass
    for i in range(BATTLES_AFTER):
        shown = _play(public, picture, f"Describe this picture ({i}).")
        assert {display[n] for n in shown} == others, f"battle {i} drew {shown} after {target} was disabled"
    with sqlite3.connect(arena.db_path) as db:
        drawn = db.execute(
            "SELECT DISTINCT m.name FROM battles b JOIN models m ON m.id IN (b.model_a_id, b.model_b_id) "
            "WHERE b.rowid > ?",
            (before,),
        ).fetchall()
    assert {name for (name,) in drawn} == others
