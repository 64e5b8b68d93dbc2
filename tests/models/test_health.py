"""Health checks take failing models out of sampling and bring them back when they recover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.base import BackendError
from models.health import HealthMonitor
from models.registry import BackendContext, create_backend
from models.roster import ModelSpec
from tests.models.openai_server import Behaviour, FakeOpenAIServer


class Probe:
    def __init__(self) -> None:
        self.ok = True
        self.hang = False  # never answer
        self.calls = 0

    async def check(self) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if not self.ok:
            raise BackendError("probe failed")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_check_takes_a_model_out_and_a_passing_one_brings_it_back() -> None:
    probe = Probe()
    monitor = HealthMonitor({"m": probe, "n": Probe()})
    assert asyncio.run(monitor.check_all()) == {"m": True, "n": True}
    probe.ok = False
    assert asyncio.run(monitor.check("m")) is False
    assert not monitor.is_healthy("m") and monitor.is_healthy("n")
    assert monitor.status("m").last_error == "BackendError: probe failed"
    probe.ok = True
    assert asyncio.run(monitor.check("m")) is True and monitor.is_healthy("m")
    assert monitor.is_healthy("not-watched")


def test_request_failures_count_up_to_the_threshold_and_a_success_resets() -> None:
    monitor = HealthMonitor({"m": Probe()}, failure_threshold=3)
    for _ in range(2):
        monitor.record_failure("m", BackendError("boom"))
    monitor.record_success("m")
    assert monitor.status("m").consecutive_failures == 0
    for _ in range(3):
        monitor.record_failure("m", BackendError("boom"))
    assert not monitor.is_healthy("m")


def test_a_hung_check_times_out() -> None:
    probe = Probe()
    probe.hang = True  # only the monitor's timeout can end this check
    monitor = HealthMonitor({"m": probe}, check_timeout_s=0.1)
    assert asyncio.run(monitor.check("m")) is False
    assert "timed out" in (monitor.status("m").last_error or "") and not monitor.is_healthy("m")


def test_periodic_checks_probe_only_idle_or_unhealthy_models() -> None:
    clock = Clock()
    monitor = HealthMonitor({"busy": Probe(), "idle": Probe(), "sick": Probe()}, clock=clock)
    asyncio.run(monitor.check_all())
    monitor.record_failure("sick", BackendError("x"))
    monitor._update("sick", ok=False, error=BackendError("x"), probe=True)
    clock.now += 30
    monitor.record_success("busy")  # real traffic proves it works
    clock.now += 40
    assert sorted(monitor.due(60)) == ["idle", "sick"]


def test_background_thread_restores_a_recovered_model() -> None:
    probe = Probe()
    probe.ok = False
    monitor = HealthMonitor({"m": probe})
    asyncio.run(monitor.check_all())
    assert not monitor.is_healthy("m")
    probe.ok = True
    monitor.start(interval_s=0.05)
    try:
        deadline = time.monotonic() + 5
        while not monitor.is_healthy("m") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert monitor.is_healthy("m")
    finally:
        monitor.stop()
    calls = probe.calls
    time.sleep(0.2)
    assert probe.calls == calls  # stopped


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def test_openai_server_going_down_and_coming_back(server: FakeOpenAIServer) -> None:
    spec = ModelSpec(
        name="remote", backend="openai", params={"base_url": server.base_url, "model": "fake-vlm"}
    )
    monitor = HealthMonitor({"remote": create_backend(spec, BackendContext(cache_dir=Path("unused")))})
    assert asyncio.run(monitor.check_all()) == {"remote": True}
    server.behaviour = Behaviour(models_status=503)
    assert asyncio.run(monitor.check_all()) == {"remote": False}
    assert "503" in (monitor.status("remote").last_error or "")
    server.behaviour = Behaviour()
    assert asyncio.run(monitor.check_all()) == {"remote": True}
