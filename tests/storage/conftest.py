"""Fixtures of the storage tests: engines on fresh, migrated databases of the kind ``db_url`` gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage.db import make_engine, upgrade
from tests.helpers import scratch_postgres_database
from tests.storage.transfer_cases import PG_ADMIN_URL


@pytest.fixture
def second_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """One more fresh, migrated database of the same kind as ``db_url``."""
    if sa.engine.make_url(db_url).get_backend_name() == "sqlite":
        url = f"sqlite:///{tmp_path / 'second.db'}"
        upgrade(url)
        yield url
        return
    with scratch_postgres_database(PG_ADMIN_URL, "arena_test") as url:
        upgrade(url)
        yield url


@contextmanager
def _engine_at(url: str) -> Iterator[sa.Engine]:
    """An engine on ``url``, disposed when the block ends."""
    eng = make_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    with _engine_at(db_url) as eng:
        yield eng


@pytest.fixture
def second_engine(second_db_url: str) -> Iterator[sa.Engine]:
    with _engine_at(second_db_url) as eng:
        yield eng


@pytest.fixture
def sqlite_engine(sqlite_db_url: str) -> Iterator[sa.Engine]:
    with _engine_at(sqlite_db_url) as eng:
        yield eng


@pytest.fixture
def postgres_engine(postgres_db_url: str) -> Iterator[sa.Engine]:
    with _engine_at(postgres_db_url) as eng:
        yield eng
