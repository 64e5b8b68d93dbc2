"""A battle service over real storage (SQLite and PostgreSQL) and scripted model backends."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import datetime

import pytest

from arena.battle_session import Limits
from arena.guards.policy import GuardPolicy
from arena.service import BattleService
from models.health import HealthMonitor
from models.registry import BackendContext, create_backend
from models.roster import ModelSpec
from storage.images import ImageStore


def scripted(name: str, weight: float = 1.0, **params: object) -> ModelSpec:
    return ModelSpec(
        name=name,
        display_name=f"{name.title()} Display",
        organization="Test Org",
        backend="scripted",
        params=params,
        sampling_weight=weight,
    )


def answered(service: BattleService, state) -> tuple[str, str]:
    """Stream the current turn's two answers to the end; they must both be complete."""

    async def drain():
        return [update async for update in service.stream(state)]

    final = asyncio.run(drain())[-1]
    assert final.done and not final.failed
    return final.text_a, final.text_b


@pytest.fixture
def make_service(sessions, tmp_path):
    def make(
        specs: list[ModelSpec] | None = None,
        seed: int = 0,
        health_failures: int | None = None,
        guards: GuardPolicy | None = None,
        now: Callable[[], datetime] | None = None,
        **limits: object,
    ) -> BattleService:
        specs = specs or [scripted("alpha"), scripted("bravo"), scripted("charlie")]
        context = BackendContext(cache_dir=tmp_path / "cache")
        backends = {s.name: create_backend(s, context) for s in specs}
        health = (
            None if health_failures is None else HealthMonitor(backends, failure_threshold=health_failures)
        )
        return BattleService(
            specs=specs,
            backends=backends,
            sessions=sessions,
            images=ImageStore(tmp_path / "images"),
            rng=random.Random(seed),
            limits=Limits(**limits),
            health=health,
            guards=guards,
            **({} if now is None else {"now": now}),
        )

    return make
