"""Assembles the arena: services from settings, and the Gradio app over them. Nothing runs at import."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import gradio as gr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from arena.admin import AdminService
from arena.battle_session import Limits
from arena.direct import DirectChatService
from arena.guards.identity import IdentityTerms
from arena.guards.limits import RateLimits
from arena.guards.moderation import build_moderator
from arena.guards.policy import GuardPolicy
from arena.guards.terms import Terms
from arena.model_settings import seed_roster
from arena.resume import BattleTokens
from arena.sampling import INPUT_VIEW, PairSampler, SamplingPolicy, SnapshotInputs, targets_of
from arena.secret_files import kept_secret
from arena.service import BattleService
from arena.settings import ArenaSettings
from arena.snapshot_worker import SnapshotWorker, WorkerConfig, worker_holder
from arena.snapshots import SnapshotService, default_holder
from arena.ui.battle import KEYBOARD_JS, build_battle_tab, build_side_by_side_tab
from arena.ui.direct import build_direct_tab
from arena.ui.errors import guard_callbacks
from arena.ui.leaderboard import build_leaderboard_tab
from arena.ui.loading import LazyTabs, combined
from arena.ui.voter import share_acceptance, voter_state
from models.base import ModelBackend
from models.health import HealthMonitor
from models.registry import BackendContext, create_backend
from models.roster import ModelSpec, Roster, load_roster
from storage.db import make_engine, normalize_url, session_factory, upgrade
from storage.images import ImageLimits, ImageStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: ArenaSettings
    roster: Roster
    engine: Engine
    battle: BattleService
    snapshots: SnapshotService
    health: HealthMonitor
    admin: AdminService
    #: signs the battle tokens browsers keep, so a reload (or another process) takes a battle up again
    tokens: BattleTokens = field(default_factory=BattleTokens.ephemeral)

    @property
    def demo(self) -> bool:
        """True when every model is an untrained demo model (the UI then says so)."""
        return all(spec.demo for spec in self.roster.models)


def load_backends(specs: Sequence[ModelSpec], context: BackendContext) -> dict[str, ModelBackend]:
    """Load or connect the given models; one that fails is logged and left out of sampling."""
    backends: dict[str, ModelBackend] = {}
    for spec in specs:
        started = time.perf_counter()
        try:
            backends[spec.name] = create_backend(spec, context)
        except Exception:
            log.exception("model %s could not be loaded; it is left out of battles", spec.name)
            continue
        log.info("model %s ready (%s) in %.1fs", spec.name, spec.backend, time.perf_counter() - started)
    return backends


def startup_check(health: HealthMonitor) -> dict[str, bool]:
    """Probe every model once before serving; a failing one stays out of battles until it recovers."""
    with ThreadPoolExecutor(max_workers=1) as pool:  # a loop of its own, even if the caller has one
        results = pool.submit(asyncio.run, health.check_all()).result()
    for name, ok in results.items():
        if not ok:
            log.warning(
                "model %s failed its start-up check (%s); it is left out of battles until it recovers",
                name,
                health.status(name).last_error,
            )
    return results


def ip_salt(settings: ArenaSettings) -> bytes:
    """The secret salt for IP hashes: from the settings, else one generated once and kept on disk."""
    if settings.ip_salt is not None:
        return settings.ip_salt.get_secret_value().encode()
    path = settings.data_dir / "ip_salt"
    if normalize_url(settings.db).startswith("postgresql"):
        log.warning(
            "ARENA_IP_SALT is unset: using a salt kept in %s; set ARENA_IP_SALT (the same in every "
            "process) when more than one arena process shares this database",
            path,
        )
    return kept_secret(path, lambda: secrets.token_hex(32))[0].encode()


def battle_tokens(settings: ArenaSettings) -> BattleTokens:
    """Signs and reads the battle tokens browsers keep: the key from the settings, else one generated
    once and kept on disk, so a restart (or another process on the same data folder) reads them."""
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value()
        if not key:
            raise ValueError("ARENA_SECRET_KEY is set but empty; set a key or unset it")
    else:
        key = kept_secret(settings.data_dir / "secret_key", lambda: secrets.token_urlsafe(32))[0]
    return BattleTokens(key.encode(), ttl_s=settings.battle_token_ttl_h * 3600)


def build_guards(settings: ArenaSettings, roster: Roster) -> GuardPolicy:
    """Leak terms (built-in and the whole roster's names), moderation, rate limits and terms of use."""
    return GuardPolicy(
        identity=IdentityTerms.from_specs(roster.models),
        moderator=build_moderator(settings),
        limits=RateLimits(settings.max_battles_per_hour, settings.max_votes_per_day),
        terms=Terms.load(settings.terms_file, settings.terms_version),
    )


def build_services(settings: ArenaSettings, backends: dict[str, ModelBackend] | None = None) -> Services:
    """Migrate the database, load the roster's models and wire the services together."""
    roster = load_roster(settings.config)
    guards = build_guards(settings, roster)  # a bad moderation or terms setting fails before models load
    upgrade(settings.db)
    engine = make_engine(settings.db, connect_wait_s=settings.db_connect_wait_s)
    sessions = session_factory(engine)
    enabled = seed_roster(sessions, roster.models, datetime.now(UTC))  # the database's settings win
    if backends is None:
        backends = load_backends(enabled, BackendContext(cache_dir=settings.cache_dir))
    health = HealthMonitor(backends, failure_threshold=settings.health_failures)
    startup_check(health)
    snapshots = build_snapshots(settings, sessions)
    battle = BattleService(
        specs=enabled,
        backends=backends,
        sessions=sessions,
        images=ImageStore(
            settings.image_store or settings.data_dir / "images",
            ImageLimits(
                max_bytes=settings.max_image_mb * 1024 * 1024,
                max_frames=settings.max_image_frames,
                max_aspect=settings.max_image_aspect,
            ),
        ),
        rng=random.Random(settings.seed),
        ip_salt=ip_salt(settings),
        health=health,
        limits=Limits(
            max_images=settings.max_images,
            max_prompt_chars=settings.max_prompt_chars,
            max_turns=settings.max_turns,
            response_timeout_s=settings.response_timeout_s,
        ),
        model_refresh_s=settings.model_refresh_s,
        guards=guards,
        sampler=build_sampler(settings, roster, snapshots),
    )
    admin = AdminService(sessions, health=health, images=battle.images)
    tokens = battle_tokens(settings)
    return Services(settings, roster, engine, battle, snapshots, health, admin=admin, tokens=tokens)


def build_sampler(settings: ArenaSettings, roster: Roster, snapshots: SnapshotService) -> PairSampler:
    """The pair-sampling policy of the settings, with the roster's battle targets and live inputs read
    from the current ``bt`` leaderboard snapshot (held in memory: no query per draw)."""
    policy = SamplingPolicy(
        policy=settings.sampling_policy,
        boost=settings.sampling_boost,
        boost_until_votes=settings.sampling_boost_until_votes,
        target_boost=settings.sampling_target_boost,
        min_share=settings.sampling_min_share,
        interval_target=settings.sampling_interval_target,
        top_k=settings.sampling_top_k,
        explore=settings.sampling_explore,
    )
    inputs = SnapshotInputs(lambda: snapshots.current(INPUT_VIEW))
    return PairSampler(policy, targets=targets_of(roster.models), sampling_inputs=inputs)


def build_snapshots(settings: ArenaSettings, sessions: sessionmaker[Session]) -> SnapshotService:
    """The leaderboard snapshots, computed in the background at once and then every refresh period:
    by a worker process that this process starts and watches (the default), or by a thread in it."""
    worker = None
    if settings.leaderboard_worker:
        worker = SnapshotWorker(
            WorkerConfig(
                db=settings.db,
                refresh_s=settings.leaderboard_refresh_s,
                min_votes=settings.leaderboard_min_votes,
                holder=worker_holder(default_holder()),
            )
        )
        worker.start()
    snapshots = SnapshotService(
        sessions,
        refresh_s=settings.leaderboard_refresh_s,
        min_votes=settings.leaderboard_min_votes,
        compute=worker is None,
        worker=worker,
    )
    snapshots.start()
    return snapshots


def build_app(services: Services) -> gr.Blocks:
    """The Gradio app: Battle, Side-by-side, Direct chat and Leaderboard tabs over the given services."""
    with gr.Blocks(title="VLM Arena", analytics_enabled=False) as app:
        gr.Markdown("# 🏟️ VLM Arena", elem_id="arena-title")
        voter = voter_state(services.tokens)  # one voter for all tabs: the terms are accepted once
        concurrency = services.settings.concurrency
        lazy = LazyTabs()  # kinds only the other tabs have wait for the tab's first opening
        with gr.Tabs():
            with gr.Tab("⚔️ Battle", id="battle", elem_id="tab-battle"):
                battle = build_battle_tab(
                    services.battle, services.tokens, voter, demo=services.demo, concurrency=concurrency
                )
            with lazy.tab("👀 Side-by-side", id="side-by-side", elem_id="tab-side-by-side") as sbs_tab:
                sbs = build_side_by_side_tab(
                    services.battle, services.tokens, voter, sbs_tab, concurrency=concurrency
                )
            with lazy.tab("💬 Direct chat", id="direct", elem_id="tab-direct") as direct_tab:
                direct = build_direct_tab(
                    DirectChatService(services.battle),
                    services.tokens,
                    voter,
                    direct_tab,
                    concurrency=concurrency,
                )
            with lazy.tab("🏆 Leaderboard", id="leaderboard", elem_id="tab-leaderboard") as tab:
                build_leaderboard_tab(services.snapshots, tab)
        app.load(None, None, None, js=KEYBOARD_JS)  # keys 1-4 vote
        # A reload takes the voter and their battles up again: one request for all tabs.
        resume = combined([battle[0], sbs[0], direct[0]])
        app.load(
            resume.load,
            resume.inputs,
            resume.outputs,
            api_visibility="private",
            show_progress="hidden",
            queue=False,  # a direct request: no queue round trip before the page shows its first control
        )
        share_acceptance([battle[1], sbs[1], direct[1]])
        lazy.finish(app)
    guard_callbacks(app)
    app.queue(default_concurrency_limit=services.settings.concurrency)
    return app


def serve(settings: ArenaSettings) -> None:
    """Build everything and serve the arena at / and the admin page at /admin until interrupted.

    One uvicorn server runs the FastAPI app from :func:`arena.server.build_server`. The admin password
    is settled first (ARENA_ADMIN_PASSWORD, else generated once into the data folder); the log says
    where it is, never what it is.
    """
    import uvicorn

    from arena.auth import AdminAuth, admin_password
    from arena.server import build_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    password = admin_password(settings)
    log.info("%s (user %r)", password.describe(), settings.admin_user)
    services = build_services(settings)
    server = build_server(services, auth=AdminAuth.from_settings(settings, password))
    if settings.health_interval_s > 0:
        services.health.start(settings.health_interval_s)
    log.info(
        "arena built in %.1fs; serving http://%s:%d/ (admin page at /admin)",
        time.perf_counter() - started,
        settings.host,
        settings.port,
    )
    try:
        uvicorn.run(
            server, host=settings.host, port=settings.port, access_log=False, timeout_graceful_shutdown=5
        )
    finally:
        services.snapshots.stop()  # and its worker process, which gives the lease up
