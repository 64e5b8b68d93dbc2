"""Every arena process applies an operator's model change within the refresh interval.

Two battle services share one database (SQLite and PostgreSQL), as two arena processes behind a load
balancer would; the change is made through the admin service. Time is an injected clock, not sleeps.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from arena.admin import AdminService
from arena.errors import ArenaError
from arena.model_settings import seed_roster
from arena.service import BattleService
from models.registry import BackendContext, create_backend
from models.roster import ModelSpec
from storage.images import ImageStore
from tests.arena.conftest import scripted

REFRESH_S = 5.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_process(sessions, tmp_path, clock):
    """A battle service as one arena process builds it, over the shared database."""

    def make(specs: list[ModelSpec] | None = None, seed: int = 0) -> BattleService:
        specs = specs or [scripted("alpha"), scripted("bravo"), scripted("charlie")]
        context = BackendContext(cache_dir=tmp_path / "cache")
        return BattleService(
            specs=specs,
            backends={s.name: create_backend(s, context) for s in specs},
            sessions=sessions,
            images=ImageStore(tmp_path / "images"),
            rng=random.Random(seed),
            model_refresh_s=REFRESH_S,
            clock=clock,
        )

    return make


def drawn(service: BattleService, n: int = 300) -> Counter[str]:
    """How often each model appears in ``n`` sampled pairs."""
    return Counter(name for _ in range(n) for name in service.sample_pair())


def test_disabling_a_model_reaches_every_process_within_the_interval(make_process, sessions, clock) -> None:
    first, second = make_process(seed=1), make_process(seed=2)
    admin = AdminService(sessions)
    assert set(drawn(first)) == set(drawn(second)) == {"alpha", "bravo", "charlie"}

    admin.set_model("admin:test", "charlie", enabled=False)
    clock.advance(REFRESH_S / 2)  # settings are cached between reads: no query per draw
    assert "charlie" in drawn(first) and "charlie" in drawn(second)
    clock.advance(REFRESH_S / 2)
    for process in (first, second):
        assert set(drawn(process)) == {"alpha", "bravo"}

    admin.set_model("admin:test", "charlie", enabled=True)
    clock.advance(REFRESH_S)
    assert set(drawn(first)) == set(drawn(second)) == {"alpha", "bravo", "charlie"}


def test_deprecated_or_zero_weight_models_are_not_drawn(make_process, sessions, clock) -> None:
    process = make_process()
    admin = AdminService(sessions)
    admin.set_model("admin:test", "alpha", deprecated=True)
    admin.set_model("admin:test", "bravo", weight=0)
    clock.advance(REFRESH_S)
    with pytest.raises(ArenaError, match="Not enough models"):
        process.sample_pair()
    admin.set_model("admin:test", "bravo", weight=0.5)
    clock.advance(REFRESH_S)
    assert set(drawn(process)) == {"bravo", "charlie"}


def test_weight_changes_change_sampling_frequencies(make_process, sessions, clock) -> None:
    first, second = make_process(seed=3), make_process(seed=4)
    n = 1000
    for process in (first, second):  # equal weights: each model is in 2/3 of the pairs
        assert drawn(process, n)["alpha"] / n == pytest.approx(2 / 3, abs=0.06)
    AdminService(sessions).set_model("admin:test", "alpha", weight=8)
    clock.advance(REFRESH_S)
    # Weights 8:1:1 put alpha in 0.8 + 0.2 * 8/9 ≈ 98% of the pairs.
    for process in (first, second):
        assert drawn(process, n)["alpha"] / n == pytest.approx(0.978, abs=0.02)


def test_stored_settings_win_over_the_roster_for_known_models(make_process, sessions) -> None:
    make_process()
    AdminService(sessions).set_model("admin:test", "charlie", weight=0)
    # A process started later with the same roster (charlie at weight 1) keeps the operator's weight.
    restarted = make_process(seed=9)
    assert set(drawn(restarted)) == {"alpha", "bravo"}


def test_seed_roster_registers_every_model_and_loads_the_enabled_ones(sessions) -> None:
    roster = [scripted("alpha"), scripted("bravo"), scripted("charlie").model_copy(update={"enabled": False})]
    now = datetime.now(UTC)
    assert [s.name for s in seed_roster(sessions, roster, now)] == ["alpha", "bravo"]
    admin = AdminService(sessions)
    assert [m.name for m in admin.models_overview()] == ["alpha", "bravo", "charlie"]
    admin.set_model("admin:test", "charlie", enabled=True)
    admin.set_model("admin:test", "alpha", enabled=False)
    # The next start loads what the database says, not what the roster says.
    assert [s.name for s in seed_roster(sessions, roster, now)] == ["bravo", "charlie"]
