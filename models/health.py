"""Which models can take part in battles right now.

A model is taken out of sampling when

* its health check fails (at start-up, or in the periodic checks), or
* ``failure_threshold`` requests in a row fail for reasons that are the model's (not bad input);

and it comes back when a later health check passes. The periodic checks probe only models that are
unhealthy or have not answered anything since the previous round, so a busy model is not disturbed
(its real traffic proves it works). Backends define the probe in :meth:`ModelBackend.check`.

The monitor is thread-safe: requests report outcomes from the web server's event loop while the
periodic checks run in their own thread and loop (:meth:`HealthMonitor.start`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from models.base import BackendError

log = logging.getLogger(__name__)


class Checkable(Protocol):
    async def check(self) -> None: ...


@dataclass(frozen=True)
class ModelHealth:
    """One model's health as operators see it."""

    healthy: bool = True
    consecutive_failures: int = 0
    #: The last failure's description (for operators' logs and the admin page, never for voters).
    last_error: str | None = None
    #: Monotonic time of the last answer or passing check, and of the last probe.
    last_success: float | None = None
    last_check: float | None = None


class HealthMonitor:
    """Tracks each model's health from request outcomes and health checks."""

    def __init__(
        self,
        backends: Mapping[str, Checkable],
        *,
        failure_threshold: int = 3,
        check_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backends = dict(backends)
        self.failure_threshold = failure_threshold
        self.check_timeout_s = check_timeout_s
        self.clock = clock
        self._state = {name: ModelHealth() for name in self.backends}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- reading ---------------------------------------------------------------------------------

    def status(self, name: str) -> ModelHealth:
        with self._lock:
            return self._state[name]

    def snapshot(self) -> dict[str, ModelHealth]:
        with self._lock:
            return dict(self._state)

    def is_healthy(self, name: str) -> bool:
        """True for a healthy model (and for a name the monitor does not watch)."""
        with self._lock:
            state = self._state.get(name)
        return state is None or state.healthy

    # -- outcomes --------------------------------------------------------------------------------

    def record_success(self, name: str) -> None:
        self._update(name, ok=True, error=None, probe=False)

    def record_failure(self, name: str, error: BaseException) -> None:
        self._update(name, ok=False, error=error, probe=False)

    def _update(self, name: str, *, ok: bool, error: BaseException | None, probe: bool) -> None:
        now = self.clock()
        with self._lock:
            before = self._state.get(name)
            if before is None:
                return
            if ok:
                after = replace(before, healthy=True, consecutive_failures=0, last_success=now)
            else:
                failures = before.consecutive_failures + 1
                # A failed probe is decisive; failed requests count up to the threshold.
                healthy = before.healthy and not probe and failures < self.failure_threshold
                description = f"{type(error).__name__}: {error}" if error is not None else "failed"
                after = replace(
                    before, healthy=healthy, consecutive_failures=failures, last_error=description
                )
            if probe:
                after = replace(after, last_check=now)
            self._state[name] = after
        if before.healthy and not after.healthy:
            log.warning("model %s taken out of battles: %s", name, after.last_error)
        elif after.healthy and not before.healthy:
            log.info("model %s healthy again; back in battles", name)

    # -- checks ----------------------------------------------------------------------------------

    async def check(self, name: str) -> bool:
        """Probe one model now; record and return whether it passed."""
        try:
            async with asyncio.timeout(self.check_timeout_s):
                await self.backends[name].check()
        except TimeoutError:
            error: BaseException = BackendError(f"health check timed out after {self.check_timeout_s:g}s")
        except Exception as exc:  # any failure of the probe means "not healthy now"
            error = exc
        else:
            self._update(name, ok=True, error=None, probe=True)
            return True
        self._update(name, ok=False, error=error, probe=True)
        return False

    async def check_all(self, names: list[str] | None = None) -> dict[str, bool]:
        """Probe the given models (default: all) at the same time."""
        names = list(self.backends) if names is None else names
        results = await asyncio.gather(*(self.check(name) for name in names))
        return dict(zip(names, results, strict=True))

    def due(self, interval_s: float) -> list[str]:
        """Models to probe this round: unhealthy ones, and ones with no success in the last interval."""
        now = self.clock()
        with self._lock:
            return [
                name
                for name, state in self._state.items()
                if not state.healthy or state.last_success is None or now - state.last_success >= interval_s
            ]

    async def run(self, interval_s: float) -> None:
        """Check the models that are due every ``interval_s`` seconds until :meth:`stop`."""
        while not self._stop.is_set():
            await asyncio.to_thread(self._stop.wait, interval_s)
            if self._stop.is_set():
                return
            due = self.due(interval_s)
            if due:
                await self.check_all(due)

    def start(self, interval_s: float) -> None:
        """Run the periodic checks in a background thread with its own event loop."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self.run(interval_s),), name="model-health", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
