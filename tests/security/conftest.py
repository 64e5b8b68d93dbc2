"""One running arena per test module (``python launch.py`` through the e2e harness).

A module may set ``ROSTER`` (roster YAML text), ``ARENA_ENV`` (extra ``ARENA_*`` variables) and
``DATABASE = "postgresql"`` (a scratch database on the PostgreSQL of ``ARENA_TEST_PG_URL`` instead of
SQLite). Gradio's upload folder is put inside the module's folder (``GRADIO_TEMP_DIR``), so the
tests can see every file a request leaves behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.e2e.harness import start_arena, stop_arena
from tests.security.running import BASE_ENV, DEFAULT_ROSTER, PG_ADMIN_URL, Arena, scratch_postgres


@pytest.fixture(scope="module")
def arena(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    tmp = tmp_path_factory.mktemp("security")
    roster = tmp / "roster.yaml"
    roster.write_text(getattr(request.module, "ROSTER", DEFAULT_ROSTER), encoding="utf-8")
    env = {**BASE_ENV, "GRADIO_TEMP_DIR": str(tmp / "gradio"), **getattr(request.module, "ARENA_ENV", {})}
    with ExitStack() as stack:
        db_url = f"sqlite:///{tmp / 'arena.db'}"  # where start_arena points launch.py
        args = ["--config", str(roster)]
        if getattr(request.module, "DATABASE", "sqlite") == "postgresql":
            db_url = stack.enter_context(scratch_postgres(PG_ADMIN_URL))
            args += ["--db", db_url]  # the last --db wins
        server = start_arena(tmp, *args, env=env)
        stack.callback(stop_arena, server)
        yield Arena(server, tmp, db_url)
