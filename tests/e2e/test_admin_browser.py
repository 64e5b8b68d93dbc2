"""The admin page in Chromium: sign-in (right and wrong), the page under /admin, and the export download.

``test_sign_in_and_export`` runs the arena as a user starts it (``python launch.py``, no password
set, so one is generated into the data folder) over a database holding three imported votes.
``test_admin_queue_round_trip`` uses the arena's server in-process with a probe admin page, to check
that an event on a page mounted under /admin goes through Gradio's queue and back.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from arena.auth import PASSWORD_FILE
from storage.db import make_engine, upgrade
from storage.transfer.importer import import_battles
from tests.arena.admin_server import IMPORTED, PASSWORD, ROSTER, VOTE_MARKER, battle_records, running_server
from tests.e2e.harness import ArenaServer, start_arena, stop_arena

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    tmp = tmp_path_factory.mktemp("admin-arena")
    (tmp / "roster.yaml").write_text(ROSTER)
    db_url = f"sqlite:///{tmp / 'arena.db'}"  # where start_arena points launch.py
    upgrade(db_url)
    (tmp / "battles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in battle_records()))
    engine = make_engine(db_url)
    import_battles(engine, tmp / "battles.jsonl", progress=False)
    engine.dispose()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("ARENA_ADMIN_PASSWORD", raising=False)
        server = start_arena(tmp, "--config", str(tmp / "roster.yaml"))
    yield server
    stop_arena(server)


def sign_in(page, password: str) -> None:
    page.fill("#login-user", "admin")
    page.fill("#login-password", password)
    page.click("#login-submit")


def test_sign_in_and_export(arena: ArenaServer, browser, tmp_path: Path) -> None:
    base = arena.url.rstrip("/")
    password_file = arena.db_path.parent / "data" / PASSWORD_FILE
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    log = arena.log.read_text()
    assert str(password_file) in log, "start-up says where the password is"
    assert password not in log, "and never what it is"

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(base + "/admin/")
    assert page.url == base + "/admin/login", "no session: sent to the sign-in page"
    for name in IMPORTED:
        assert name not in page.content()

    sign_in(page, password + "-wrong")
    page.wait_for_selector("#login-error")
    assert "Wrong user name or password" in page.inner_text("#login-error")
    assert page.url == base + "/admin/login"
    assert not [c for c in context.cookies() if c["name"] == "arena_admin_session"]

    sign_in(page, password)
    page.wait_for_url(base + "/admin/")
    page.wait_for_selector(".gradio-container", timeout=60_000)
    page.wait_for_function("() => document.body.innerText.toLowerCase().includes('admin')", timeout=60_000)
    cookie = next(c for c in context.cookies() if c["name"] == "arena_admin_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert page.evaluate("() => document.cookie") == "", "the session cookie is not readable by scripts"

    # The page's load event went through the admin queue: the Models tab lists the roster.
    page.click("#admin-tab-models-button")
    page.wait_for_function("() => document.body.innerText.includes('alpha-scripted')", timeout=60_000)

    page.click("#admin-tab-data-button")
    with page.expect_download(timeout=60_000) as download_info:
        page.click("#admin-export-jsonl")
    download = download_info.value
    assert download.suggested_filename.startswith("arena-battles-") and download.suggested_filename.endswith(
        ".jsonl"
    )
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == ["imported-0", "imported-1", "imported-2"]
    assert [r["winner"] for r in rows] == ["model_a", "tie", "model_b"]

    page.goto(base + "/admin/logout")
    assert page.url == base + "/admin/login"
    page.goto(base + "/admin/")
    assert page.url == base + "/admin/login", "signed out"
    context.close()


def test_admin_queue_round_trip(browser, tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        page = browser.new_page()
        page.goto(server.url + "/admin/login")
        sign_in(page, PASSWORD)
        page.wait_for_url(server.url + "/admin/")
        page.click("#probe-button", timeout=60_000)
        page.wait_for_function(
            f"() => document.querySelector('#probe-out textarea').value === {json.dumps(VOTE_MARKER + ' for admin')}",
            timeout=60_000,
        )
        page.close()
