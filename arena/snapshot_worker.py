"""The leaderboard worker: a child process of the arena that computes the snapshots.

A fit of every view at a million votes takes seconds of CPU and briefly a few hundred MB (Elo and
style control read every vote). Run in the web process, that work would hold the GIL between the
tokens the process streams to voters, and the memory would stay with the process afterwards. So the
arena starts this worker (``multiprocessing`` with ``spawn``: no Gradio, torch or model in it), which
runs a computing ``SnapshotService`` cycle every ``refresh_s`` seconds and stores what it computes;
the web process's service only reads the stored snapshots (``compute=False``).

The worker holds the ``leaderboard`` lease under a name tied to its parent (``host:PID/leaderboard``),
so a worker restarted after a crash takes the lease over at once instead of waiting for it to expire;
several arena processes each have a worker, and the lease lets one of them compute. A recompute
request is stored in the database (any process's worker that holds the lease takes it) and also wakes
this worker at once. The worker exits when the arena asks it to, or by itself when its parent is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event

log = logging.getLogger(__name__)

#: The longest the worker sleeps before checking that its parent still runs (seconds).
PARENT_CHECK_S = 5.0


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker needs to compute snapshots: plain values, so they pickle across ``spawn``."""

    db: str
    refresh_s: float
    min_votes: int
    holder: str
    seed: int = 0


def run_worker(config: WorkerConfig, wake: Event, stop: Event, parent_pid: int) -> None:
    """The worker's main loop (the child process's target)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from arena.snapshots import SnapshotService
    from storage.db import make_engine, session_factory

    engine = make_engine(config.db)
    service = SnapshotService(
        session_factory(engine),
        refresh_s=config.refresh_s,
        min_votes=config.min_votes,
        holder=config.holder,
        seed=config.seed,
    )
    log.info("leaderboard worker %s started (pid %d)", config.holder, os.getpid())
    try:
        while not stop.is_set():
            try:
                service.refresh_once()
            except Exception:
                log.exception("leaderboard refresh failed; trying again in %.0f s", config.refresh_s)
            deadline = time.monotonic() + config.refresh_s
            while not stop.is_set() and os.getppid() == parent_pid:
                left = deadline - time.monotonic()
                if left <= 0 or wake.wait(min(left, PARENT_CHECK_S)):
                    break
            wake.clear()
            if os.getppid() != parent_pid:
                log.warning("the arena process %d is gone; the leaderboard worker exits", parent_pid)
                break
    finally:
        service.stop()  # gives the lease up, so another arena's worker takes over at once
        engine.dispose()


class SnapshotWorker:
    """Starts the worker process, wakes it, restarts it when it died, and stops it."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._context = multiprocessing.get_context("spawn")
        # New events for each process started: a worker killed inside Event.wait() can leave the
        # event's lock held, and set() on it would then block the web process for ever.
        self._wake: Event = self._context.Event()
        self._stop: Event = self._context.Event()
        self._stopping = False
        self._process: SpawnProcess | None = None
        self._lock = threading.Lock()
        #: how many times the worker was (re)started
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the worker process if it is not running."""
        with self._lock:
            if self._stopping or (self._process is not None and self._process.is_alive()):
                return
            self._wake, self._stop = self._context.Event(), self._context.Event()
            process = self._context.Process(
                target=run_worker,
                args=(self.config, self._wake, self._stop, os.getpid()),
                name="arena-leaderboard-worker",
                daemon=True,
            )
            process.start()
            self._process = process
            self.starts += 1

    def wake(self) -> None:
        """Start a cycle now (a recompute request; a dead worker's restart computes what is due)."""
        process = self._process
        if process is not None and process.is_alive():
            self._wake.set()

    def ensure_alive(self) -> None:
        """Restart the worker if it died (it is the only process computing this arena's snapshots)."""
        process = self._process
        if process is not None and not process.is_alive() and not self._stopping:
            log.warning("the leaderboard worker exited with %s; starting it again", process.exitcode)
            self.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask the worker to finish its cycle and exit; kill it if it does not within ``timeout_s``."""
        self._stopping = True
        process = self._process
        if process is None or not process.is_alive():
            return
        self._stop.set()
        self._wake.set()
        process.join(timeout_s)
        if process.is_alive():
            log.warning("the leaderboard worker did not stop within %.0f s; killing it", timeout_s)
            process.kill()
            process.join(5)


def worker_holder(parent_holder: str) -> str:
    """The lease holder name of the worker of the arena process ``parent_holder`` (``host:pid``)."""
    return f"{parent_holder}/leaderboard"


__all__ = ["SnapshotWorker", "WorkerConfig", "run_worker", "worker_holder"]
