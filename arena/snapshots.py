"""Leaderboard snapshots computed ahead of time, in the background, shared through the database.

Opening a leaderboard never starts a fit: the public tab and the admin page read ``current(view)``,
an in-memory copy of the stored snapshot. A daemon thread per process refreshes that copy:

1. at start-up, then every ``refresh_s`` seconds (or at once after ``request_recompute``), it reads
   ``storage.snapshots.data_version`` (a few aggregates: cheap at a million votes);
2. if this process holds, or can take, the lease ``leaderboard``, it recomputes each view whose stored
   data version is out of date (``force``: every view) and saves it; the lease makes sure several
   processes on one database never all compute the same snapshot;
3. every process reloads the stored snapshots that changed since it last looked.

The arena runs the computing part in a worker process of its own (``arena.snapshot_worker``): a
service built with ``compute=False`` only reloads what the worker stored (every few seconds), wakes
the worker on a recompute request and restarts it if it died. Fits at a million votes take seconds
of CPU and a few hundred MB; in the web process they would hold the GIL between the tokens it streams
and leave its memory high. Tests and single-process tools use the default ``compute=True``.

The main view ``bt`` is computed first; ``davidson`` and ``rao-kupper`` reuse its count query. The
heavy views (``ViewSpec.every`` > 1: Elo and style control, which read every vote, and the views with
a count query of their own: all votes, time windows, categories) are recomputed at most once every
``arena.views.HEAVY_EVERY`` refresh periods even when votes change more often. A failed computation
keeps the last good snapshot, marks it stale with the error (shown on the admin page only) and logs
the error.

Payload keys (see ``arena.views.compute_view``): ``rows`` (list of {model, display_name, rating,
ci_lower, ci_upper, rank_ub, num_battles, organization, license, link, deprecated}, best first),
``not_enough_votes`` (list of {model, display_name, votes}), ``total_votes``, ``method``, ``ci``
("sandwich", "bootstrap" for style control, "none" for Elo), ``min_votes``, ``pair_counts``
({"models", "battles", "wins"}: wins[i][j] = wins of i over j, ties as half), ``votes_per_day``
(list of {"day", "votes"}), ``extras`` (tie parameter, style coefficients, ``unavailable``, ...),
``position_bias`` ({left_wins, decisive, share, ci_lower, ci_upper}: the share of the view's decisive
votes that went to the left answer, with a 95% Wilson interval; None fields without decisive votes).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from analysis.voters import position_bias_from_counts
from arena.views import (
    CATEGORY_PREFIX,
    STANDARD_VIEWS,
    TOP_CATEGORIES,
    Counts,
    ViewSpec,
    category_view,
    compute_view,
    view_spec,
)
from storage.counts import VoteFilter
from storage.db import run_in_transaction
from storage.snapshots import (
    SnapshotStamp,
    category_vote_counts,
    data_version,
    delete_snapshots,
    load_snapshots,
    mark_snapshot_failed,
    release_lease,
    request_recompute,
    save_snapshot,
    snapshot_stamps,
    take_recompute_request,
    try_acquire_lease,
)
from storage.sql import utc_now

log = logging.getLogger(__name__)

#: The lease that elects the process computing snapshots.
LEASE_NAME = "leaderboard"
#: How often a service that does not compute looks for snapshots stored by the worker (seconds).
READER_POLL_S = 2.0


class Worker(Protocol):
    """The process that computes snapshots for a reading service (see ``arena.snapshot_worker``)."""

    def wake(self) -> None: ...
    def ensure_alive(self) -> None: ...
    def stop(self) -> None: ...


def default_holder() -> str:
    """This process as a lease holder and ``computed_by``: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Snapshot:
    """A computed view as the pages show it (the last good one when ``stale``)."""

    view: str
    title: str
    computed_at: datetime
    duration_s: float
    data_version: str
    #: the last refresh of this view failed: this is the last good one
    stale: bool
    #: that failure, for the admin page (never shown on the public page)
    error: str | None
    payload: dict[str, Any] = field(repr=False)
    computed_by: str = ""


class SnapshotService:
    """Keeps every leaderboard view computed ahead of time and serves the latest from memory."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        refresh_s: float = 60.0,
        min_votes: int = 30,
        holder: str | None = None,
        now: Callable[[], datetime] = utc_now,
        seed: int = 0,
        lease_ttl_s: float | None = None,
        compute: bool = True,
        worker: Worker | None = None,
    ) -> None:
        if refresh_s <= 0:
            raise ValueError(f"refresh_s must be positive, got {refresh_s}")
        if min_votes < 1:
            raise ValueError(f"min_votes must be at least 1, got {min_votes}")
        self.sessions = sessions
        self.refresh_s = float(refresh_s)
        self.min_votes = int(min_votes)
        self.holder = holder or default_holder()
        self.now = now
        self.seed = seed
        #: False: only read what another process (``worker``) computes and stores
        self.compute = compute
        self.worker = worker
        #: a holder that stops renewing (a killed process) is replaced after this long
        self.lease_ttl_s = float(lease_ttl_s) if lease_ttl_s is not None else max(3 * self.refresh_s, 120.0)
        #: views computed by this process, by key (for logs and tests)
        self.computations: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._signatures: dict[str, str] = {}
        self._categories: tuple[str, list[str]] | None = None  # (data version, tags) last chosen
        self._force = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------------
    # Reading (never computes)
    # ---------------------------------------------------------------------------------------------

    def views(self, *, admin: bool = False) -> list[ViewSpec]:
        """The views to offer: the standard ones, then categories by votes (public ones unless admin)."""
        with self._lock:
            stored = list(self._snapshots.values())
        categories = sorted(
            (s for s in stored if s.view.startswith(CATEGORY_PREFIX)),
            key=lambda s: (-int(s.payload.get("total_votes", 0)), s.view),
        )
        specs = [*STANDARD_VIEWS, *(category_view(s.view[len(CATEGORY_PREFIX) :]) for s in categories)]
        return [s for s in specs if admin or s.public]

    def current(self, view: str) -> Snapshot | None:
        """The latest snapshot of ``view`` held in memory (None before the first one exists)."""
        with self._lock:
            return self._snapshots.get(view)

    # ---------------------------------------------------------------------------------------------
    # Refreshing
    # ---------------------------------------------------------------------------------------------

    def request_recompute(self) -> None:
        """Recompute every view soon, in the background (the admin page's Recompute button).

        The request is stored in the database, so whichever process holds the lease takes it: at once
        if that is this one, else at its next cycle (within ``refresh_s``).
        """
        run_in_transaction(self.sessions, lambda db: request_recompute(db, self.holder, self.now()))
        with self._lock:
            self._force = True
        self._wake.set()
        if self.worker is not None:
            self.worker.wake()

    def refresh_once(self, *, force: bool = False) -> bool:
        """One refresh cycle (see the module docstring); True when this process computed some view."""
        if not self.compute:
            self._reload()
            return False
        now = self.now()
        with self.sessions() as db:
            version = data_version(db)
            stamps = snapshot_stamps(db)
        computed = False
        if self._renew_lease(now):
            force = run_in_transaction(self.sessions, take_recompute_request) or force
            computed = self._compute_due(version, stamps, now, force=force)
        self._reload()
        return computed

    def _renew_lease(self, now: datetime) -> bool:
        return run_in_transaction(
            self.sessions, lambda db: try_acquire_lease(db, LEASE_NAME, self.holder, self.lease_ttl_s, now)
        )

    def _wanted(self, version: str, stamps: dict[str, SnapshotStamp], force: bool) -> list[ViewSpec]:
        """The views to keep computed: the standard ones and the top categories with enough votes."""
        if force or self._categories is None or self._categories[0] != version:
            with self.sessions() as db:
                tags = category_vote_counts(db, VoteFilter(), TOP_CATEGORIES)
            self._categories = (version, [tag for tag, n in tags if n >= self.min_votes])
        wanted = [*STANDARD_VIEWS, *(category_view(tag) for tag in self._categories[1])]
        keys = {s.key for s in wanted}
        gone = [key for key in stamps if key not in keys]
        if gone:
            run_in_transaction(self.sessions, lambda db: delete_snapshots(db, gone))
        return wanted

    def _due(self, spec: ViewSpec, version: str, stamp: SnapshotStamp | None, now: datetime) -> bool:
        if stamp is None:
            return True
        if stamp.data_version == spec.version(version, now):
            return False
        return (now - stamp.computed_at).total_seconds() >= (spec.every - 1) * self.refresh_s

    def _compute_due(
        self, version: str, stamps: dict[str, SnapshotStamp], now: datetime, *, force: bool
    ) -> bool:
        computed = False
        counts = Counts()  # views with the same votes share the count queries
        for spec in self._wanted(version, stamps, force):
            if not (force or self._due(spec, version, stamps.get(spec.key), now)):
                continue
            if computed and not self._renew_lease(self.now()):
                log.warning("lost the leaderboard lease to another process; it computes the rest")
                break
            self._compute(spec, spec.version(version, now), now, counts)
            computed = True
        return computed

    def _compute(self, spec: ViewSpec, version: str, now: datetime, counts: Counts) -> None:
        """Compute and store one view; on failure keep the last good one, marked stale."""
        started = time.perf_counter()
        self.computations[spec.key] += 1
        try:
            with self.sessions() as db:
                payload = compute_view(
                    db,
                    spec,
                    now=now,
                    min_votes=self.min_votes,
                    rng=np.random.default_rng(self.seed),
                    counts=counts,
                )
                # the counts query compute_view ran (remembered): the share of decisive votes for A
                pairs = counts.pairs(db, spec.vote_filter(now))
                payload["position_bias"] = position_bias_from_counts(pairs).as_dict()
            duration = time.perf_counter() - started
            run_in_transaction(
                self.sessions,
                lambda db: save_snapshot(
                    db,
                    view=spec.key,
                    data_version=version,
                    payload=payload,
                    computed_at=now,
                    duration_s=duration,
                    computed_by=self.holder,
                ),
            )
            log.info("leaderboard view %s computed in %.2f s (%s)", spec.key, duration, version)
        except Exception as exc:
            log.exception("leaderboard view %s could not be computed; keeping the last good one", spec.key)
            error = f"{type(exc).__name__}: {exc}"
            try:
                run_in_transaction(
                    self.sessions,
                    lambda db: mark_snapshot_failed(db, spec.key, error=error, failed_at=self.now()),
                )
            except Exception:
                log.exception("could not record the failure of leaderboard view %s", spec.key)
                self._mark_stale_in_memory(spec.key, error)
            return
        try:
            self._reload()  # shown at once, not after the slower views of this cycle
        except Exception:
            log.exception("could not reload the leaderboard snapshots; the next cycle will")

    def _mark_stale_in_memory(self, view: str, error: str) -> None:
        with self._lock:
            old = self._snapshots.get(view)
            if old is not None:
                self._snapshots[view] = Snapshot(
                    old.view,
                    old.title,
                    old.computed_at,
                    old.duration_s,
                    old.data_version,
                    True,
                    error,
                    old.payload,
                    old.computed_by,
                )

    def _reload(self) -> None:
        """Load the stored snapshots that changed since the last look (cheap when none did)."""
        with self.sessions() as db:
            stamps = snapshot_stamps(db)
            changed = [v for v, s in stamps.items() if self._signatures.get(v) != s.signature]
            stored = load_snapshots(db, changed) if changed else []
        fresh: dict[str, Snapshot] = {}
        for s in stored:
            spec = view_spec(s.view)
            failure = s.failure or {}
            fresh[s.view] = Snapshot(
                view=s.view,
                title=spec.title if spec else s.view,
                computed_at=s.computed_at,
                duration_s=s.duration_s,
                data_version=s.data_version,
                stale=s.failure is not None,
                error=failure.get("error"),
                payload=s.payload,
                computed_by=s.computed_by,
            )
        with self._lock:
            for view in [v for v in self._snapshots if v not in stamps]:
                del self._snapshots[view]
            self._snapshots.update(fresh)
            self._signatures = {v: s.signature for v, s in stamps.items() if v in self._snapshots}

    # ---------------------------------------------------------------------------------------------
    # The background thread
    # ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background refresh (first cycle at once); calling it again does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leaderboard-snapshots", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the background refresh and give the lease up, so another process takes over at once."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self.worker is not None:
            self.worker.stop()
        if not self.compute:
            return
        try:
            run_in_transaction(self.sessions, lambda db: release_lease(db, LEASE_NAME, self.holder))
        except Exception:
            log.exception("could not release the leaderboard lease")

    def _run(self) -> None:
        wait_s = self.refresh_s if self.compute else min(self.refresh_s, READER_POLL_S)
        while not self._stop.is_set():
            with self._lock:
                force, self._force = self._force, False
            try:
                if self.worker is not None:
                    self.worker.ensure_alive()
                self.refresh_once(force=force)
            except Exception:
                log.exception("leaderboard refresh failed; trying again in %.0f s", wait_s)
            self._wake.wait(wait_s)
            self._wake.clear()


__all__ = [
    "LEASE_NAME",
    "READER_POLL_S",
    "Snapshot",
    "SnapshotService",
    "ViewSpec",
    "Worker",
    "default_holder",
]
