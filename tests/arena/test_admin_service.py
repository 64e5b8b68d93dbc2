"""The admin service over real databases (SQLite and PostgreSQL): overviews, validated and audited
changes, problem battles, flagged voters, battle details and stored judge results."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from arena.admin import AdminError, AdminService
from models.base import BackendError
from models.health import HealthMonitor
from models.registry import BackendContext, create_backend
from storage import repo
from storage.judging import save_analysis_result
from storage.schema import AuditEntry, Battle, ModelRow, ModerationFlag, VoterSession
from tests.arena.conftest import scripted
from tests.helpers import image_bytes

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MODELS = ("alpha", "bravo", "charlie")


def clock() -> datetime:
    return NOW


@pytest.fixture
def model_ids(sessions) -> dict[str, int]:
    seeds = [
        repo.ModelSeed(name=m, display_name=m.title(), organization="", backend="scripted") for m in MODELS
    ]
    with sessions.begin() as db:
        return repo.sync_models(db, seeds, NOW - timedelta(days=30))


def add_battle(
    sessions,
    ids: dict[str, int],
    battle_id: str,
    a: str,
    b: str,
    *,
    at: datetime,
    winner: str | None = "model_a",
    voter: str | None = "voter-1",
    answers: tuple[tuple[float | None, float, int | None, str | None], ...] = ((0.5, 1.0, 10, None),) * 2,
    state: str = "ready",
    reason: str | None = None,
) -> None:
    """A one-turn battle; ``answers`` per side: (seconds to first token, seconds after it, tokens, error)."""
    with sessions.begin() as db:
        if voter:
            repo.ensure_voter_session(db, voter, "pytest", at)
        repo.create_battle(
            db, battle_id=battle_id, model_a_id=ids[a], model_b_id=ids[b], session_id=voter, now=at
        )
        turn = repo.add_turn(
            db, battle_id=battle_id, index=0, prompt=f"prompt {battle_id}", image_hashes=[], now=at
        )
        for side, model, (ttft, generation, tokens, error) in zip("ab", (a, b), answers, strict=True):
            first = None if ttft is None else at + timedelta(seconds=ttft)
            repo.save_response(
                db,
                turn_id=turn.id,
                side=side,
                model_id=ids[model],
                text=f"answer {side}",
                started_at=at,
                first_token_at=first,
                finished_at=(first or at) + timedelta(seconds=generation),
                output_chunks=3,
                output_tokens=tokens,
                finish_reason="stop" if error is None else None,
                error=error,
            )
        repo.set_battle_state(db, battle_id, state, at, reason)
        if winner is not None:
            repo.record_vote(db, battle_id=battle_id, winner=winner, session_id=voter, now=at)


def audit_rows(sessions) -> list[tuple[str, str, str, dict, dict]]:
    with sessions() as db:
        return [
            (e.actor, e.action, e.target, e.old, e.new)
            for e in db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))
        ]


def model_settings(sessions) -> dict[str, tuple[bool, float, bool]]:
    with sessions() as db:
        rows = db.execute(
            sa.select(ModelRow.name, ModelRow.enabled, ModelRow.sampling_weight, ModelRow.deprecated)
        )
        return {name: (bool(e), float(w), bool(d)) for name, e, w, d in rows}


# -- models ---------------------------------------------------------------------------------------


def test_models_overview_counts_votes_and_reads_timing_from_responses(sessions, model_ids, tmp_path) -> None:
    alpha_answers = [(0.4, 2.0, 40, None), (1.2, 1.0, 30, None), (None, 0.5, None, "BackendError: HTTP 502")]
    add_battle(
        sessions,
        model_ids,
        "b1",
        "alpha",
        "bravo",
        at=NOW - timedelta(hours=1),
        answers=(alpha_answers[0], (0.8, 4.0, 20, None)),
    )
    add_battle(
        sessions,
        model_ids,
        "b2",
        "bravo",
        "alpha",
        at=NOW - timedelta(hours=23),
        answers=((2.0, 1.0, 5, None), alpha_answers[1]),
    )
    add_battle(
        sessions,
        model_ids,
        "b3",
        "alpha",
        "bravo",
        at=NOW - timedelta(days=3),
        winner="tie",
        answers=(alpha_answers[2], (0.6, 1.0, None, None)),
    )
    add_battle(sessions, model_ids, "b4", "alpha", "charlie", at=NOW - timedelta(days=2), winner=None)

    context = BackendContext(cache_dir=tmp_path / "cache")
    backends = {name: create_backend(scripted(name), context) for name in ("alpha", "bravo")}
    health = HealthMonitor(backends, failure_threshold=1)
    health.record_failure("bravo", BackendError("HTTP 502"))
    rows = {r.name: r for r in AdminService(sessions, now=clock, health=health).models_overview()}

    assert list(rows) == ["alpha", "bravo", "charlie"]
    alpha, bravo, charlie = rows["alpha"], rows["bravo"], rows["charlie"]
    assert (alpha.votes_total, alpha.votes_24h) == (3, 2)
    assert (bravo.votes_total, bravo.votes_24h) == (3, 2)
    assert (charlie.votes_total, charlie.votes_24h) == (0, 0)
    assert (alpha.health, bravo.health, charlie.health) == (
        "healthy",
        "unhealthy: BackendError: HTTP 502",
        "not loaded",
    )
    assert (alpha.enabled, alpha.sampling_weight, alpha.deprecated, alpha.display_name) == (
        True,
        1.0,
        False,
        "Alpha",
    )

    # alpha answered b1, b2, b3 and b4 (4 responses; b4's as (0.5, 1.0, 10) by default).
    ttft = np.array([0.4, 1.2, 0.5])
    assert alpha.responses == 4
    assert alpha.ttft_median_s == pytest.approx(np.median(ttft), abs=1e-3)
    assert alpha.ttft_p95_s == pytest.approx(np.percentile(ttft, 95), abs=1e-3)
    assert alpha.tokens_per_s == pytest.approx(np.median([40 / 2.0, 30 / 1.0, 10 / 1.0]), rel=1e-3)
    assert alpha.error_rate == pytest.approx(1 / 4)
    # bravo's b3 answer has no token count: its streamed chunks (3) stand in.
    assert bravo.tokens_per_s == pytest.approx(np.median([20 / 4.0, 5 / 1.0, 3 / 1.0]), rel=1e-3)
    assert bravo.error_rate == 0.0
    assert charlie.responses == 1 and charlie.ttft_median_s == pytest.approx(0.5, abs=1e-3)

    no_monitor = {r.name: r.health for r in AdminService(sessions, now=clock).models_overview()}
    assert set(no_monitor.values()) == {"unknown"}


def test_timing_comes_from_the_most_recent_responses(sessions, model_ids) -> None:
    for i, ttft in enumerate([9.0, 9.0, 1.0, 2.0]):  # alpha's two oldest answers were slow
        add_battle(
            sessions,
            model_ids,
            f"t{i}",
            "alpha",
            "bravo",
            at=NOW - timedelta(hours=10 - i),
            answers=((ttft, 1.0, 10, None), (1.0, 1.0, 10, None)),
        )

    def alpha(**limits: int):
        return AdminService(sessions, now=clock, **limits).models_overview()[0]

    # The arena's last 4 responses hold alpha's last 2 answers: enough at min_samples=2.
    recent = alpha(response_window=4, min_samples=2)
    assert recent.responses == 2 and recent.ttft_median_s == pytest.approx(1.5, abs=1e-3)
    assert recent.ttft_p95_s == pytest.approx(1.95, abs=1e-3)
    # Too few there: alpha's own last 3 answers instead.
    own = alpha(response_window=4, min_samples=3, model_responses=3)
    assert own.responses == 3 and own.ttft_median_s == pytest.approx(2.0, abs=1e-3)
    everything = alpha()
    assert everything.responses == 4 and everything.ttft_median_s == pytest.approx(5.5, abs=1e-3)


def test_vote_counts_follow_new_and_deleted_votes(sessions, model_ids, tmp_path) -> None:
    from storage.maintenance import forget_session

    admin = AdminService(sessions, now=clock)

    def votes() -> dict[str, tuple[int, int]]:
        return {r.name: (r.votes_total, r.votes_24h) for r in admin.models_overview()}

    add_battle(sessions, model_ids, "v1", "alpha", "bravo", at=NOW - timedelta(hours=30))
    assert votes() == {"alpha": (1, 0), "bravo": (1, 0), "charlie": (0, 0)}
    add_battle(sessions, model_ids, "v2", "bravo", "charlie", at=NOW - timedelta(hours=2), voter="other")
    add_battle(sessions, model_ids, "v3", "alpha", "charlie", at=NOW - timedelta(hours=1), voter="other")
    assert votes() == {"alpha": (2, 1), "bravo": (2, 1), "charlie": (2, 2)}
    assert admin.tally.full_counts == 1  # the new votes were counted on their own
    forget_session(sessions, "other", None)  # deletes v2 and v3 with their votes
    assert votes() == {"alpha": (1, 0), "bravo": (1, 0), "charlie": (0, 0)}
    assert admin.tally.full_counts == 2


def test_set_model_stores_the_change_and_audits_old_and_new(sessions, model_ids) -> None:
    admin = AdminService(sessions, now=clock)
    row = admin.set_model("admin:ops", "bravo", enabled=False, weight="2.5")
    assert (row.name, row.enabled, row.sampling_weight, row.deprecated, row.sampled) == (
        "bravo",
        False,
        2.5,
        False,
        False,
    )
    assert model_settings(sessions)["bravo"] == (False, 2.5, False)
    old = {"enabled": True, "sampling_weight": 1.0, "deprecated": False}
    assert audit_rows(sessions) == [
        (
            "admin:ops",
            "set-model",
            "bravo",
            old,
            {"enabled": False, "sampling_weight": 2.5, "deprecated": False},
        )
    ]
    entry = admin.audit_log()[0]
    assert entry.created_at == NOW and entry.action == "set-model"

    admin.set_model("cli:root", "bravo", enabled=False, weight=2.5)  # nothing new: nothing written
    assert len(audit_rows(sessions)) == 1
    admin.set_model("cli:root", "charlie", deprecated=True)
    assert [a.target for a in admin.audit_log()] == ["charlie", "bravo"]
    assert [a.target for a in admin.audit_log(limit=1)] == ["charlie"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": -1}, "0 or more"),
        ({"weight": "-0.5"}, "0 or more"),
        ({"weight": float("nan")}, "finite"),
        ({"weight": "nan"}, "finite"),
        ({"weight": math.inf}, "finite"),
        ({"weight": "heavy"}, "must be a number"),
        ({"weight": ""}, "must be a number"),
        ({"weight": True}, "must be a number"),
        ({"enabled": False, "weight": -2}, "0 or more"),  # one bad value refuses the whole change
        ({}, "no change requested"),
    ],
)
def test_bad_model_changes_are_refused_and_change_nothing(sessions, model_ids, kwargs, message) -> None:
    before = model_settings(sessions)
    with pytest.raises(AdminError, match=message):
        AdminService(sessions, now=clock).set_model("admin:ops", "alpha", **kwargs)
    assert model_settings(sessions) == before
    assert audit_rows(sessions) == []


def test_unknown_model_or_missing_actor_is_refused(sessions, model_ids) -> None:
    admin = AdminService(sessions, now=clock)
    with pytest.raises(AdminError, match="unknown model 'delta'"):
        admin.set_model("admin:ops", "delta", enabled=False)
    with pytest.raises(AdminError, match="actor"):
        admin.set_model("  ", "alpha", enabled=False)
    assert audit_rows(sessions) == [] and model_settings(sessions)["alpha"] == (True, 1.0, False)


# -- battles and voters ---------------------------------------------------------------------------


def test_problem_battles_list_each_reason(sessions, model_ids) -> None:
    add_battle(sessions, model_ids, "clean", "alpha", "bravo", at=NOW - timedelta(hours=9))
    add_battle(
        sessions,
        model_ids,
        "broken",
        "alpha",
        "bravo",
        at=NOW - timedelta(hours=8),
        winner=None,
        state="invalid",
        reason="model failure",
    )
    add_battle(sessions, model_ids, "leaky", "bravo", "charlie", at=NOW - timedelta(hours=7))
    add_battle(sessions, model_ids, "flagged", "alpha", "charlie", at=NOW - timedelta(hours=6))
    add_battle(sessions, model_ids, "settled", "alpha", "charlie", at=NOW - timedelta(hours=5))
    with sessions.begin() as db:
        db.execute(sa.update(Battle).where(Battle.id == "leaky").values(identity_leak=True))
        db.add(ModerationFlag(battle_id="flagged", reason="nsfw-image", detail="score 0.93", created_at=NOW))
        db.add(ModerationFlag(battle_id="settled", reason="pii", resolved=True, created_at=NOW))
    admin = AdminService(sessions, now=clock)
    admin.set_battle_excluded("admin:ops", "clean", True)

    listed = {p.id: p for p in admin.problem_battles()}
    assert set(listed) == {"broken", "leaky", "flagged", "clean"}
    assert listed["broken"].problems == ("invalid: model failure",)
    assert listed["broken"].state == "invalid" and not listed["broken"].voted
    assert listed["leaky"].problems == ("identity leak",)
    assert listed["flagged"].problems == ("moderation: nsfw-image (score 0.93)",)
    assert listed["clean"].problems == ("excluded by an operator",) and listed["clean"].excluded
    assert (listed["leaky"].model_a, listed["leaky"].model_b) == ("bravo", "charlie")
    assert len(admin.problem_battles(limit=2)) == 2

    admin.set_battle_excluded("admin:ops", "clean", False)
    assert "clean" not in {p.id for p in admin.problem_battles()}
    assert [(a, t, o, n) for _, a, t, o, n in audit_rows(sessions)] == [
        ("exclude-battle", "clean", {"excluded": False}, {"excluded": True}),
        ("include-battle", "clean", {"excluded": True}, {"excluded": False}),
    ]
    with pytest.raises(AdminError, match="unknown battle 'nope'"):
        admin.set_battle_excluded("admin:ops", "nope", True)


def test_flagged_voters_and_bans(sessions, model_ids) -> None:
    for i in range(3):
        add_battle(
            sessions, model_ids, f"s{i}", "alpha", "bravo", at=NOW - timedelta(hours=i + 1), voter="stuffer"
        )
    add_battle(sessions, model_ids, "h1", "alpha", "bravo", at=NOW - timedelta(hours=4), voter="honest")
    add_battle(sessions, model_ids, "o1", "alpha", "bravo", at=NOW - timedelta(hours=5), voter="odd")
    with sessions.begin() as db:
        db.execute(sa.update(VoterSession).where(VoterSession.id == "odd").values(anomalous=True))
    admin = AdminService(sessions, now=clock)
    assert [(v.session_id, v.votes) for v in admin.flagged_voters()] == [("odd", 1)]

    admin.set_voter_banned("admin:ops", "stuffer", True)
    voters = admin.flagged_voters()
    assert [(v.session_id, v.banned, v.anomalous, v.votes) for v in voters] == [
        ("stuffer", True, False, 3),
        ("odd", False, True, 1),
    ]
    assert voters[0].user_agent == "pytest"
    admin.set_voter_banned("admin:ops", "stuffer", False)
    assert [v.session_id for v in admin.flagged_voters()] == ["odd"]
    assert [e[1] for e in audit_rows(sessions)] == ["ban-voter", "unban-voter"]
    with pytest.raises(AdminError, match="unknown voter session"):
        admin.set_voter_banned("admin:ops", "ghost", True)


def test_battle_detail_shows_turns_images_answers_and_vote(make_service, sessions) -> None:
    service = make_service()
    state = service.new_session("pytest-agent")
    picture = image_bytes(Image.new("RGB", (40, 30), "green"))
    service.start_turn(state, "What colour is this?", [picture])

    async def drain() -> None:
        async for _ in service.stream(state):
            pass

    asyncio.run(drain())
    service.start_turn(state, "And now without a picture?")
    asyncio.run(drain())
    service.vote(state, "model_b", reason="more precise")

    detail = AdminService(sessions, images=service.images).battle_detail(state.battle_id)
    assert (detail.model_a, detail.model_b) == (state.models["a"], state.models["b"])
    assert (detail.state, detail.mode, detail.winner, detail.vote_reason) == (
        "voted",
        "anony",
        "model_b",
        "more precise",
    )
    assert detail.session_id == state.session_id and detail.voter == state.session_id
    assert [t.prompt for t in detail.turns] == ["What colour is this?", "And now without a picture?"]
    first, second = detail.turns
    assert len(first.images) == 1 and second.images == ()
    image = first.images[0]
    assert image.path is not None and Path(image.path).is_file()
    assert Image.open(image.path).size == (40, 30) and Path(image.path).name.startswith(image.sha256)
    for turn, record in zip(detail.turns, state.turns, strict=True):
        assert turn.answer_a is not None and turn.answer_b is not None
        assert (turn.answer_a.text, turn.answer_b.text) == (record.answers["a"], record.answers["b"])
        assert turn.answer_a.model == state.models["a"] and turn.answer_a.ttft_s is not None

    no_store = AdminService(sessions).battle_detail(state.battle_id)
    assert no_store.turns[0].images[0].path is None and no_store.turns[0].images[0].sha256 == image.sha256
    for bad in ("nope", "", "   "):
        with pytest.raises(AdminError, match="unknown battle"):
            AdminService(sessions).battle_detail(bad)


def test_judge_results_show_what_how_and_when(sessions) -> None:
    with sessions.begin() as db:
        save_analysis_result(
            db,
            kind="judge_agreement",
            subject="judge-a",
            params={"template": "v1", "bootstrap": 100},
            result={"n": 120, "agreement_with_ties": 0.61234, "cohen_kappa": None, "confusion": {"a": {}}},
            now=NOW - timedelta(days=1),
        )
        save_analysis_result(
            db,
            kind="judge_leaderboards",
            subject="judge-a",
            params={"seed": 0},
            result={"reference": "people", "spearman": 0.9},
            now=NOW,
        )
    rows = AdminService(sessions).judge_results()
    assert [(r.kind, r.subject) for r in rows] == [
        ("judge_leaderboards", "judge-a"),
        ("judge_agreement", "judge-a"),
    ]
    assert rows[0].computed_at == NOW and rows[1].computed_at == NOW - timedelta(days=1)
    assert rows[1].params == {"template": "v1", "bootstrap": 100}
    assert rows[1].summary == "n=120, agreement_with_ties=0.612"
    assert rows[0].summary == "reference=people, spearman=0.9"
