"""A model server that fails mid-answer, seen from a real browser: one neutral sentence, nothing else.

The arena runs as a user would start it, with a roster of two `openai` models whose servers are real
local HTTP servers (tests/models/openai_server.py); one of them drops the connection after two
tokens. The page must show the neutral message, refuse the vote, and never carry a model's name, its
provider, its server address or the exception text.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from arena.service import NEUTRAL_FAILURE
from tests.e2e.harness import RECORD_PAYLOADS, start_arena, stop_arena, upload
from tests.models.openai_server import Behaviour, FakeOpenAIServer

pytestmark = pytest.mark.e2e

ROSTER = """
models:
  - name: steady-vlm
    display_name: Steady VLM Display
    organization: Steady Labs
    backend: openai
    params: {{base_url: "{good}", model: fake-vlm}}
  - name: flaky-vlm
    display_name: Flaky VLM Display
    organization: Flaky Labs
    backend: openai
    params: {{base_url: "{bad}", model: fake-vlm}}
    retries: 0
"""


def test_failing_model_shows_only_the_neutral_message(browser, tmp_path: Path) -> None:
    good = FakeOpenAIServer(Behaviour(chunk_delay_s=0.02))
    bad = FakeOpenAIServer(Behaviour(chunk_delay_s=0.02, drop_after=2))
    with good, bad:
        roster = tmp_path / "roster.yaml"
        roster.write_text(ROSTER.format(good=good.base_url, bad=bad.base_url))
        arena = start_arena(tmp_path, "--config", str(roster), "--seed", "3")
        try:
            context = browser.new_context()
            context.add_init_script(RECORD_PAYLOADS)
            page = context.new_page()
            page.goto(arena.url)
            picture = tmp_path / "red.png"
            Image.new("RGB", (40, 30), "red").save(picture)
            upload(page, picture)
            page.fill("#battle-prompt textarea", "What colour is this?")
            page.click("#battle-send")
            page.wait_for_selector(f"text={NEUTRAL_FAILURE[:40]}", timeout=60_000)

            assert page.is_disabled("#vote-a") and page.is_disabled("#vote-tie"), "no vote on a failed battle"
            assert (
                page.inner_text("#battle-name-a").strip() == page.inner_text("#battle-name-b").strip() == ""
            )
            received = page.evaluate("() => window.__arenaReceived.join('\\n')")
            assert "What colour is this?" in received  # the recorder saw the stream
            everything = (page.content() + received).lower()
            servers = [url.split("//")[1].split("/")[0] for url in (good.base_url, bad.base_url)]  # host:port
            forbidden = ["steady", "flaky", "fake-vlm", "streaminterrupted", "http 5", "labs", *servers]
            assert [word for word in forbidden if word in everything] == []
            context.close()
        finally:
            stop_arena(arena)
        assert bad.requests and good.requests  # both servers were really asked
        assert bad.images()[0].size == (40, 30)

    with sqlite3.connect(arena.db_path) as db:
        state, reason = db.execute("SELECT state, invalid_reason FROM battles").fetchone()
        errors = [row[0] for row in db.execute("SELECT error FROM responses WHERE error IS NOT NULL")]
        votes = db.execute("SELECT count(*) FROM votes").fetchone()[0]
    assert (state, reason, votes) == ("invalid", "model failure", 0)
    assert len(errors) == 1 and errors[0].startswith("StreamInterrupted")  # kept for operators
    assert "flaky-vlm" in arena.log.read_text()  # and in the operators' log
