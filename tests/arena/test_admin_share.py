"""The admin Models table shows each model's share of the anonymous battles of the last 24 hours,
read from real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from arena.admin import AdminService
from arena.ui.admin_models import MODEL_COLUMNS, models_frame
from storage import repo
from storage.vocabulary import DIRECT, NAMED

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MODELS = ("alpha", "bravo", "charlie", "delta")


def clock() -> datetime:
    return NOW


@pytest.fixture
def model_ids(sessions) -> dict[str, int]:
    seeds = [
        repo.ModelSeed(name=m, display_name=m.title(), organization="", backend="scripted") for m in MODELS
    ]
    with sessions.begin() as db:
        return repo.sync_models(db, seeds, NOW - timedelta(days=30))


def start(
    sessions, ids, battle_id: str, a: str, b: str | None, hours_ago: float, mode: str = "anony"
) -> None:
    with sessions.begin() as db:
        repo.create_battle(
            db,
            battle_id=battle_id,
            model_a_id=ids[a],
            model_b_id=None if b is None else ids[b],
            session_id=None,
            now=NOW - timedelta(hours=hours_ago),
            mode=mode,
        )


def shares(sessions) -> dict[str, float | None]:
    return {r.name: r.battle_share_24h for r in AdminService(sessions, now=clock).models_overview()}


def test_no_recent_battles_means_no_share(sessions, model_ids) -> None:
    start(sessions, model_ids, "old", "alpha", "bravo", hours_ago=25)
    assert shares(sessions) == dict.fromkeys(MODELS)


def test_share_of_battles_in_the_last_24_hours(sessions, model_ids) -> None:
    # Four anonymous battles in the window: alpha in 3, bravo in 2, charlie in 2, delta in 1.
    start(sessions, model_ids, "b1", "alpha", "bravo", hours_ago=1)
    start(sessions, model_ids, "b2", "bravo", "alpha", hours_ago=5)
    start(sessions, model_ids, "b3", "alpha", "charlie", hours_ago=23.5)
    start(sessions, model_ids, "b4", "charlie", "delta", hours_ago=12)
    # Left out: older than 24 h, and battles the voter chose (named) or a direct chat.
    start(sessions, model_ids, "old", "delta", "bravo", hours_ago=24.5)
    start(sessions, model_ids, "named", "delta", "charlie", hours_ago=2, mode=NAMED)
    start(sessions, model_ids, "direct", "delta", None, hours_ago=2, mode=DIRECT)

    got = shares(sessions)
    assert got == pytest.approx({"alpha": 3 / 4, "bravo": 2 / 4, "charlie": 2 / 4, "delta": 1 / 4})
    assert sum(v or 0.0 for v in got.values()) == pytest.approx(2.0)  # two models per battle

    frame = models_frame(AdminService(sessions, now=clock).models_overview())
    column = "Share of battles (24 h)"
    assert column in MODEL_COLUMNS
    assert dict(zip(frame["Model"], frame[column], strict=True)) == {
        "alpha": "75.0%",
        "bravo": "50.0%",
        "charlie": "50.0%",
        "delta": "25.0%",
    }
