"""No callback ends in Gradio's bare "Error": the guard on every event handler of both apps."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import gradio as gr
import pytest

from arena.app import build_app, build_services
from arena.settings import ArenaSettings
from arena.ui.admin import build_admin_app
from arena.ui.errors import guarded, is_guarded

ROSTER = """
models:
  - {name: alpha, backend: scripted}
  - {name: bravo, backend: scripted}
"""


def _boom(*_: object) -> None:
    raise RuntimeError("database on fire")


def test_every_callback_of_both_apps_is_guarded(tmp_path: Path) -> None:
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    settings = ArenaSettings(
        config=roster,
        db=f"sqlite:///{tmp_path / 'arena.db'}",
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        leaderboard_worker=False,
        health_interval_s=0,
    )
    services = build_services(settings)
    try:
        for app in (build_app(services), build_admin_app(services)):
            handlers = [fn.fn for fn in app.fns.values() if fn.fn is not None]
            assert len(handlers) > 5
            assert [h for h in handlers if not is_guarded(h)] == []
    finally:
        services.snapshots.stop()
        services.engine.dispose()


def test_an_unexpected_error_is_logged_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="arena.ui.errors"):
        assert guarded(_boom)("x") == gr.skip()
    assert "database on fire" in caplog.text and "Traceback" in caplog.text


def test_every_kind_of_callback_is_guarded() -> None:
    async def coroutine() -> None:
        raise ValueError("late")

    def generator():
        yield 1
        raise KeyError("mid-stream")

    async def async_generator():
        yield 1
        raise OSError("mid-stream")

    assert asyncio.run(guarded(coroutine)()) == gr.skip()
    assert list(guarded(generator)()) == [1, gr.skip()]

    async def drain():
        return [item async for item in guarded(async_generator)()]

    assert asyncio.run(drain()) == [1, gr.skip()]


def test_a_message_meant_for_the_person_passes_through() -> None:
    def refuse() -> None:
        raise gr.Error("Please sign in again.")

    with pytest.raises(gr.Error, match="sign in again"):
        guarded(refuse)()
