"""A running arena for the hostile-input suite, with the checks every case ends with: nothing stored
by a refused request, and the server still serving (GET /, and where asked a whole battle)."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.e2e.harness import ArenaServer
from tests.helpers import scratch_postgres_database
from tests.security.client import PageClient, Snapshot, Voter, snapshot

DEFAULT_ROSTER = """
models:
  - {name: kilo, display_name: Kilo Display, backend: scripted}
  - {name: lima, display_name: Lima Display, backend: scripted}
"""
#: Every client of the suite comes from 127.0.0.1, one IP hash: the per-voter limits are turned off
#: so that they cannot be what refuses a request.
BASE_ENV = {
    "ARENA_LEADERBOARD_WORKER": "false",
    "ARENA_MAX_BATTLES_PER_HOUR": "0",
    "ARENA_MAX_VOTES_PER_DAY": "0",
    "ARENA_HEALTH_INTERVAL_S": "0",
    "ARENA_ADMIN_PASSWORD": "hostile-suite-password-9c1e",
}


def png(colour: str = "navy", size: tuple[int, int] = (24, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


PG_ADMIN_URL = os.environ.get("ARENA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); skipped if the server is unreachable, except
    under CI."""
    try:
        engine = sa.create_engine(admin_url)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI but unreachable at {admin_url}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {admin_url}")
    with scratch_postgres_database(admin_url, "arena_security") as url:
        yield url


def token_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a battle token: ``s`` session, ``b`` battle, ``m`` mode, ``t`` time."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@dataclass
class Arena:
    server: ArenaServer
    tmp: Path
    db_url: str

    @property
    def url(self) -> str:
        return self.server.url.rstrip("/")

    @property
    def uploads_dir(self) -> Path:
        """Gradio's upload folder for this server."""
        return self.tmp / "gradio"

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(sql), params)]
        finally:
            engine.dispose()

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    def snapshot(self) -> Snapshot:
        return snapshot(self.db_url, self.data_dir)

    def page(self, **kwargs: object) -> PageClient:
        return PageClient(self.url, **kwargs)  # type: ignore[arg-type]

    def voter(self) -> Voter:
        voter = Voter(self.page())
        voter.accept_terms()
        return voter

    @contextmanager
    def unchanged(self) -> Iterator[None]:
        """The block may be refused, but must store nothing: same row counts, same image files."""
        before = self.snapshot()
        yield
        after = self.snapshot()
        assert after.rows == before.rows, f"rows changed: {before.rows} -> {after.rows}"
        assert after.image_files == before.image_files, "image files changed"

    def assert_serving(self, *, battle: bool = False) -> None:
        """GET / answers 200; with ``battle``, a whole battle (upload, send, vote) still works."""
        assert self.server.process.poll() is None, "the arena process died"
        response = httpx.get(self.url + "/", timeout=30)
        assert response.status_code == 200
        if battle:
            complete_battle(self)


def complete_battle(arena: Arena, prompt: str = "What colour is this?") -> tuple[Voter, str]:
    """A real battle over the page protocol: terms, upload, send, vote A. Returns the voter and the
    battle's id, checked in the database (one vote row)."""
    voter = arena.voter()
    files = voter.page.uploaded([("ok.png", png("teal"))])
    sent = voter.send(prompt, files)
    assert sent.success, sent.text()
    voted = voter.vote("vote-a")
    assert voted.success and "Model A:" in str(voted.outputs), voted.text()
    assert voter.token is not None
    battle_id = token_claims(voter.token)["b"]
    assert arena.query("SELECT count(*) FROM votes WHERE battle_id = :b", b=battle_id) == [(1,)]
    return voter, battle_id
