"""The admin page's Duplicates tab: the service over real databases (SQLite and PostgreSQL) and a real
image store, and the tab in headless Chromium on the arena as ``python launch.py`` serves it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from arena.admin import AdminService
from arena.ui.admin_duplicates import duplicates_frame
from storage.db import make_engine, upgrade
from storage.images import ImageStore
from storage.schema import Battle, Image
from storage.transfer.importer import import_battles
from tests.analysis.test_dedup_db import SPAM, fill
from tests.arena.admin_server import ROSTER
from tests.e2e.harness import ArenaServer, start_arena, stop_arena

PASSWORD = "duplicates-admin-password"
HOSTILE = "<img src=x onerror=alert(1)> Same question?"


def test_service_lists_the_largest_groups(sessions, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    fill(sessions, store)
    with sessions.begin() as db:  # an operator-excluded copy no longer counts
        db.execute(sa.update(Battle).where(Battle.id == "s00").values(excluded=True))
    admin = AdminService(sessions, images=store)

    groups = admin.duplicate_groups()
    assert [(g.size, g.prompt) for g in groups] == [(SPAM - 1, "what is in this picture")]
    top = groups[0]
    assert top.battle_ids[0] == "s01" and top.models == {"alpha": SPAM - 1, "bravo": SPAM - 1}
    assert top.outcomes == {"model_a": 24, "model_b": 25}
    with sessions() as db:
        assert None not in db.scalars(sa.select(Image.phash)).all(), "pHashes stored by the first visit"
    assert [g.size for g in admin.duplicate_groups(max_distance=0)] == [39, 10]

    frame = duplicates_frame(groups)
    row = frame.iloc[0]
    assert row["Size"] == SPAM - 1 and row["Prompt (normalised)"] == "what is in this picture"
    assert row["Votes A / B / tie / both bad"] == "24 / 25 / 0 / 0"
    assert row["Models"] == "alpha ×49, bravo ×49" and row["First battle"] == "s01"
    assert len(row["Images (pHash)"]) == 16
    assert duplicates_frame([]).empty
    # without an image store the stored hashes still serve
    assert [g.size for g in AdminService(sessions).duplicate_groups()] == [SPAM - 1]


def records() -> list[dict[str, object]]:
    """Three imported votes of one pasted (hostile-looking) prompt and one other prompt."""
    prompts = [HOSTILE, HOSTILE.upper(), "  " + HOSTILE + "!!", "Something else"]
    return [
        {
            "question_id": f"dup-{i}",
            "model_a": "zeta-vlm",
            "model_b": "omega-vlm",
            "winner": "model_a",
            "judge": f"voter-{i}",
            "anony": True,
            "tstamp": 1_700_000_000.0 + i,
            "conversation_a": [{"role": "user", "content": p}, {"role": "assistant", "content": "A"}],
            "conversation_b": [{"role": "user", "content": p}, {"role": "assistant", "content": "B"}],
        }
        for i, p in enumerate(prompts)
    ]


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArenaServer]:
    tmp = tmp_path_factory.mktemp("duplicates-arena")
    (tmp / "roster.yaml").write_text(ROSTER)
    db_url = f"sqlite:///{tmp / 'arena.db'}"
    upgrade(db_url)
    (tmp / "battles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records()))
    engine = make_engine(db_url)
    import_battles(engine, tmp / "battles.jsonl", progress=False)
    engine.dispose()
    server = start_arena(tmp, "--config", str(tmp / "roster.yaml"), env={"ARENA_ADMIN_PASSWORD": PASSWORD})
    yield server
    stop_arena(server)


@pytest.mark.e2e
def test_duplicates_tab_in_the_browser(arena: ArenaServer, browser) -> None:
    base = arena.url.rstrip("/")
    page = browser.new_page()
    page.goto(base + "/admin/login")
    page.fill("#login-user", "admin")
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(base + "/admin/")
    page.click("#admin-tab-duplicates-button", timeout=60_000)
    page.wait_for_function(
        "() => (document.querySelector('#admin-duplicates-table')?.innerText ?? '').includes('same question')",
        timeout=60_000,
    )
    text = page.inner_text("#admin-duplicates-table")
    assert "<img src=x onerror=alert(1)> same question" in text, "the prompt is shown as text"
    assert page.locator("#admin-duplicates-table img").count() == 0, "and never as markup"
    assert "dup-0" in text and "zeta-vlm ×3" in text and "3 / 0 / 0 / 0" in text
    assert "something else" not in text, "a prompt asked once is no group"
    page.close()
