"""Settings that matter once several arena processes share one database: the IP-hash salt (a warning
when it is generated locally on PostgreSQL) and the shared image store (ARENA_IMAGE_STORE)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
import pytest
from PIL import Image
from pydantic import SecretStr

from arena.app import Services, build_services, ip_salt
from arena.settings import ArenaSettings
from tests.helpers import image_bytes

ROSTER = """
models:
  - {name: alpha, backend: scripted}
  - {name: bravo, backend: scripted}
"""
SALT_WARNING = "set ARENA_IP_SALT"


@pytest.fixture(autouse=True)
def _no_operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARENA_IP_SALT", "ARENA_IMAGE_STORE", "ARENA_DB", "ARENA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def _settings(tmp_path: Path, db: str, **values: object) -> ArenaSettings:
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    return ArenaSettings(
        config=roster,
        db=db,
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        leaderboard_worker=False,
        health_interval_s=0,
        **values,  # type: ignore[arg-type]
    )


@contextmanager
def _services(settings: ArenaSettings) -> Iterator[Services]:
    services = build_services(settings)
    try:
        yield services
    finally:
        services.snapshots.stop()
        services.engine.dispose()


def _salt_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and SALT_WARNING in r.getMessage()]


def test_a_generated_salt_on_postgresql_is_warned_about_once_at_start_up(
    empty_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, empty_db_url)
    with caplog.at_level(logging.WARNING, logger="arena.app"), _services(settings) as services:
        assert services.battle is not None
    warnings = _salt_warnings(caplog)
    if empty_db_url.startswith("postgresql"):
        assert len(warnings) == 1
        message = warnings[0].getMessage()
        assert "\n" not in message and "more than one arena process" in message
        assert str(tmp_path / "data" / "ip_salt") in message
    else:
        assert warnings == []  # one SQLite file means one machine: a salt on its disk is shared
    assert (tmp_path / "data" / "ip_salt").exists()


def test_a_set_salt_is_used_and_not_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path, "postgresql://arena@db.example/arena", ip_salt=SecretStr("shared-salt"))
    with caplog.at_level(logging.WARNING, logger="arena.app"):
        assert ip_salt(settings) == b"shared-salt"
    assert _salt_warnings(caplog) == []
    assert not (tmp_path / "data" / "ip_salt").exists()


def test_the_generated_salt_is_the_same_for_processes_on_one_data_folder(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "postgresql://arena@db.example/arena")
    first = ip_salt(settings)
    assert ip_salt(_settings(tmp_path, "postgres://arena@db.example/arena")) == first and len(first) == 64


def test_uploads_go_to_the_configured_image_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"memory://arena-test-{secrets.token_hex(6)}/images"
    monkeypatch.setenv("ARENA_IMAGE_STORE", url)
    db = f"sqlite:///{tmp_path / 'arena.db'}"
    fs, root = fsspec.core.url_to_fs(url)
    try:
        with _services(_settings(tmp_path, db)) as services:
            assert services.settings.image_store == url
            stored = services.battle.images.put(image_bytes(Image.new("RGB", (4, 4), "navy")))
            assert services.admin.images is services.battle.images
        assert fs.cat_file(f"{root}/{stored.sha256[:2]}/{stored.sha256}.png") is not None
        assert not (tmp_path / "data" / "images").exists()  # nothing on the local disk
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)


def test_the_image_store_defaults_to_the_data_folder(tmp_path: Path) -> None:
    with _services(_settings(tmp_path, f"sqlite:///{tmp_path / 'arena.db'}")) as services:
        assert services.settings.image_store is None
        stored = services.battle.images.put(image_bytes(Image.new("RGB", (4, 4), "olive")))
    assert stored.path is not None and stored.path.parent.parent == tmp_path / "data" / "images"
    assert stored.path.read_bytes() == services.battle.images.read(stored.sha256)
