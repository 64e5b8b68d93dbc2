"""The battle service over real databases: sampling, streaming, persistence, voting."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
from collections import Counter

import pytest
import sqlalchemy as sa
from PIL import Image

from arena.errors import ArenaError
from arena.service import NEUTRAL_FAILURE
from models.base import BackendError
from models.roster import ModelSpec
from storage.schema import Battle, ModelRow, Response, Turn, TurnImage, Vote, VoterSession
from tests.arena.conftest import scripted
from tests.helpers import image_bytes
from tests.models.openai_server import Behaviour, FakeOpenAIServer, split_reply


def _png(color: str = "red") -> bytes:
    return image_bytes(Image.new("RGB", (32, 24), color))


async def _drain(service, state):
    updates = [u async for u in service.stream(state)]
    return updates


def _play(service, prompt: str = "Describe the image.", images: list[bytes] | None = None):
    state = service.new_session("pytest-agent")
    service.start_turn(state, prompt, [_png()] if images is None else images)
    updates = asyncio.run(_drain(service, state))
    return state, updates


def test_sampling_is_deterministic_under_a_seed(make_service) -> None:
    first = [make_service(seed=11).sample_pair() for _ in range(1)]
    s1, s2 = make_service(seed=11), make_service(seed=11)
    assert [s1.sample_pair() for _ in range(50)] == [s2.sample_pair() for _ in range(50)]
    assert first[0] == make_service(seed=11).sample_pair()
    s3 = make_service(seed=12)
    assert [s3.sample_pair() for _ in range(50)] != [make_service(seed=11).sample_pair() for _ in range(50)]


def test_a_model_is_never_paired_with_itself_and_sides_are_random(make_service) -> None:
    service = make_service(seed=3)
    pairs = [service.sample_pair() for _ in range(600)]
    assert all(a != b for a, b in pairs)
    sides = Counter(a for a, _ in pairs)
    assert set(sides) == {"alpha", "bravo", "charlie"}
    assert min(sides.values()) > 150  # each model lands on side A about a third of the time


def test_sampling_weights(make_service) -> None:
    service = make_service([scripted("alpha", 1.0), scripted("bravo", 1.0), scripted("charlie", 0.0)], seed=5)
    assert all("charlie" not in pair for pair in (service.sample_pair() for _ in range(200)))
    # A new model takes the roster's weight; bravo's stored weight (1.0) would win over the roster's.
    lonely = make_service([scripted("alpha"), scripted("delta", 0.0)])
    with pytest.raises(ArenaError, match="Not enough models"):
        lonely.sample_pair()


def test_a_model_first_seen_in_an_import_takes_the_roster_entry(make_service, sessions, tmp_path) -> None:
    """An imported file creates its models disabled; the roster that later names one fills it in."""
    import json

    from storage.transfer.importer import import_battles

    battles = tmp_path / "old.jsonl"
    battles.write_text(
        json.dumps({"question_id": "q1", "model_a": "alpha", "model_b": "zulu", "winner": "model_a"}) + "\n"
    )
    import_battles(sessions.kw["bind"], battles, progress=False)
    service = make_service([scripted("alpha"), scripted("bravo")], seed=2)
    assert {frozenset(service.sample_pair()) for _ in range(20)} == {frozenset({"alpha", "bravo"})}
    with sessions() as db:
        rows = {m.name: m for m in db.scalars(sa.select(ModelRow))}
    assert rows["alpha"].enabled and rows["alpha"].backend == "scripted"
    assert (rows["alpha"].display_name, rows["alpha"].organization) == ("Alpha Display", "Test Org")
    # a model only the file names stays as the import left it, and an operator's later edit stays
    assert rows["zulu"].backend == "imported" and not rows["zulu"].enabled
    with sessions.begin() as db:
        db.get(ModelRow, rows["alpha"].id).sampling_weight = 3.0
    make_service([scripted("alpha"), scripted("bravo")], seed=2)
    with sessions() as db:
        assert db.scalar(sa.select(ModelRow.sampling_weight).where(ModelRow.name == "alpha")) == 3.0


def test_full_battle_is_streamed_persisted_and_revealed_after_the_vote(make_service, sessions) -> None:
    service = make_service([scripted("alpha", delay_s=0.002), scripted("bravo", delay_s=0.002)], seed=1)
    state, updates = _play(service)
    assert len(updates) > 2, "answers arrive in several updates"
    final = updates[-1]
    assert final.done and not final.failed and final.text_a and final.text_b
    assert final.text_a != final.text_b  # different scripted models answer differently
    assert state.status == "ready"
    with pytest.raises(ArenaError, match="after the vote"):
        service.reveal(state)

    with sessions() as db:
        battle = db.get(Battle, state.battle_id)
        assert battle.state == "ready" and battle.mode == "anony"
        responses = {r.side: r for r in db.scalars(sa.select(Response))}
        assert responses["a"].text == final.text_a and responses["b"].text == final.text_b
        assert all(r.first_token_at and r.finished_at and r.output_chunks > 0 for r in responses.values())
        assert db.scalar(sa.select(sa.func.count()).select_from(TurnImage)) == 1

    reveal = service.vote(state, "model_b")
    assert {reveal.name_a, reveal.name_b} == set(state.models.values())
    assert reveal.display_a == f"{state.models['a'].title()} Display"
    with sessions() as db:
        vote = db.scalars(sa.select(Vote)).one()
        assert (vote.battle_id, vote.winner, vote.session_id) == (
            state.battle_id,
            "model_b",
            state.session_id,
        )
        assert db.get(Battle, state.battle_id).state == "voted"


def test_vote_before_both_answers_finish_is_refused(make_service, sessions) -> None:
    service = make_service([scripted("alpha", delay_s=0.01), scripted("bravo", delay_s=0.05)])
    state = service.new_session()
    service.start_turn(state, "What is this?", [_png()])
    with pytest.raises(ArenaError, match="while it is generating"):
        service.vote(state, "model_a")

    async def vote_mid_stream() -> None:
        stream = service.stream(state)
        await anext(stream)  # the first words are in, the rest are still coming
        with pytest.raises(ArenaError, match="while it is generating"):
            service.vote(state, "tie")
        async for _ in stream:
            pass

    asyncio.run(vote_mid_stream())
    assert service.vote(state, "tie").winner == "tie"
    with sessions() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Vote)) == 1


def test_second_vote_is_refused_even_from_another_replica(make_service, sessions) -> None:
    service = make_service()
    state, _ = _play(service)
    service.vote(state, "model_a")
    # The same click arriving twice (a double click, a retried request) is one vote.
    assert service.vote(state, "model_a").winner == "model_a"
    with pytest.raises(ArenaError, match="different choice"):
        service.vote(state, "model_b")
    # Another arena process sharing the database, with a stale copy of the state and its own token.
    replica = make_service()
    stale = dataclasses.replace(state, status="ready", vote_token="another-client")
    with pytest.raises(ArenaError, match="already been voted"):
        replica.vote(stale, "model_b")
    with sessions() as db:
        assert [v.winner for v in db.scalars(sa.select(Vote))] == ["model_a"]


def test_voter_ip_is_kept_only_as_a_salted_hash(make_service, sessions) -> None:
    service = make_service()
    service.ip_salt = b"pepper"
    state = service.new_session("agent/1.0", "203.0.113.9")
    service.start_turn(state, "hello", [])
    asyncio.run(_drain(service, state))
    with sessions() as db:
        row = db.get(VoterSession, state.session_id)
        assert row.ip_hash == hmac.new(b"pepper", b"203.0.113.9", hashlib.sha256).hexdigest()
        dump = " ".join(str(v) for v in db.execute(sa.select(VoterSession.__table__)).one())
    assert "203.0.113" not in dump
    assert service.new_session(ip="203.0.113.9").ip_hash == row.ip_hash  # same voter, same hash


def test_follow_up_turn_sees_each_sides_own_history(make_service, sessions) -> None:
    service = make_service()
    state, updates = _play(service)
    first_a, first_b = updates[-1].text_a, updates[-1].text_b
    service.start_turn(state, "And what colour is it?")
    conversation_a = state.conversation("a")
    assert [m.role for m in conversation_a] == ["user", "assistant", "user"]
    assert conversation_a[1].text == first_a and state.conversation("b")[1].text == first_b
    assert len(conversation_a[0].images) == 1 and not conversation_a[2].images
    asyncio.run(_drain(service, state))
    with sessions() as db:
        assert [t.index for t in db.scalars(sa.select(Turn).order_by(Turn.index))] == [0, 1]
        assert db.scalar(sa.select(sa.func.count()).select_from(Response)) == 4
    service.vote(state, "model_a")
    with pytest.raises(ArenaError, match="New round"):
        service.start_turn(state, "one more?")
    fresh = service.reset(state)
    assert fresh.session_id == state.session_id and fresh.battle_id is None


def test_model_failure_invalidates_the_battle_without_naming_anyone(make_service, sessions) -> None:
    service = make_service([scripted("alpha"), scripted("bravo", fail_after=2)])
    state, updates = _play(service)
    assert updates[-1].done and updates[-1].failed
    assert "alpha" not in NEUTRAL_FAILURE.lower() and "bravo" not in NEUTRAL_FAILURE.lower()
    with sessions() as db:
        battle = db.get(Battle, state.battle_id)
        assert battle.state == "invalid" and battle.invalid_reason == "model failure"
        failed = db.scalars(sa.select(Response).where(Response.error.is_not(None))).one()
        assert "BackendError" in failed.error  # the details are kept for operators
    with pytest.raises(ArenaError, match="while it is invalid"):
        service.vote(state, "model_a")


def test_openai_model_dropping_mid_stream_invalidates_the_battle(make_service, sessions, caplog) -> None:
    """A real HTTP model server that drops the connection: neutral outcome, details only in the logs."""
    with FakeOpenAIServer(Behaviour(drop_after=3, chunk_delay_s=0.01)) as server:
        remote = ModelSpec(
            name="remote-vlm",
            display_name="Remote VLM Display",
            organization="Remote Org",
            backend="openai",
            params={"base_url": server.base_url, "model": "fake-vlm"},
        )
        service = make_service([scripted("alpha"), remote], health_failures=1)
        with caplog.at_level(logging.WARNING, logger="arena.service"):
            state, updates = _play(service)
        assert server.images() and server.images()[0].size == (32, 24)  # the upload reached the server
    final = updates[-1]
    assert final.done and final.failed
    for update in updates:  # nothing the page receives names a model or its provider
        for text in (update.text_a, update.text_b):
            assert not any(word in text.lower() for word in ("remote", "alpha", "fake", "org", "http"))
    with sessions() as db:
        assert db.get(Battle, state.battle_id).state == "invalid"
        failed = db.scalars(sa.select(Response).where(Response.error.is_not(None))).one()
        assert failed.error.startswith("StreamInterrupted")
        # three chunks arrived before the drop; events read together may reach the service as one delta
        assert failed.text == "".join(split_reply(Behaviour().reply, 1)[:3])
        assert 1 <= failed.output_chunks <= 3
    assert any(
        "remote-vlm" in r.getMessage() and "StreamInterrupted" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(ArenaError, match="while it is invalid"):
        service.vote(state, "model_a")
    # One failure at threshold 1: the model is out of battles until a health check passes.
    assert not service.health.is_healthy("remote-vlm")
    with pytest.raises(ArenaError, match="Not enough models"):
        service.sample_pair()


def test_unhealthy_models_are_left_out_of_sampling(make_service) -> None:
    service = make_service(health_failures=2)
    drawn = Counter(name for _ in range(300) for name in service.sample_pair())
    assert set(drawn) == {"alpha", "bravo", "charlie"}
    for _ in range(2):
        service.health.record_failure("alpha", BackendError("HTTP 502"))
    drawn = Counter(name for _ in range(300) for name in service.sample_pair())
    assert set(drawn) == {"bravo", "charlie"}
    service.health.record_success("alpha")  # e.g. a passing health check
    assert "alpha" in {name for _ in range(100) for name in service.sample_pair()}


def test_model_usage_is_recorded(make_service, sessions) -> None:
    service = make_service([scripted("alpha", reply="one two three"), scripted("bravo", reply="four five")])
    state, _ = _play(service)
    with sessions() as db:
        tokens = {r.text: (r.output_tokens, r.finish_reason) for r in db.scalars(sa.select(Response))}
    assert tokens == {"one two three": (3, "stop"), "four five": (2, "stop")}


def test_slow_model_times_out_into_an_invalid_battle(make_service, sessions) -> None:
    service = make_service(
        [scripted("alpha"), scripted("bravo", first_token_delay_s=5)], response_timeout_s=0.3
    )
    state, updates = _play(service)
    assert updates[-1].failed
    with sessions() as db:
        assert "timed out" in db.scalars(sa.select(Response).where(Response.error.is_not(None))).one().error


def test_abandoned_stream_is_cancelled_and_marked_invalid(make_service, sessions) -> None:
    service = make_service([scripted("alpha", delay_s=0.05), scripted("bravo", delay_s=0.05)])
    state = service.new_session()
    service.start_turn(state, "Tell me a long story.", [])

    async def leave_early() -> None:
        stream = service.stream(state)
        await anext(stream)
        await stream.aclose()

    asyncio.run(leave_early())
    assert state.status == "invalid"
    with sessions() as db:
        assert db.get(Battle, state.battle_id).invalid_reason.startswith("abandoned")
        assert {r.finish_reason for r in db.scalars(sa.select(Response))} == {"cancelled"}


@pytest.mark.parametrize(
    ("prompt", "uploads", "message"),
    [
        ("   ", [], "write a prompt"),
        ("x" * 5000, [], "longer than 4000"),
        ("ok", [_png()] * 5, "at most 4 images"),
        ("ok", [_png(), b"not an image"], "Image 2: file is not a readable image"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(make_service, sessions, prompt, uploads, message) -> None:
    service = make_service()
    state = service.new_session()
    with pytest.raises(ArenaError, match=message):
        service.start_turn(state, prompt, uploads)
    assert state.status == "idle" and state.battle_id is None
    with sessions() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Battle)) == 0


def test_models_with_too_few_image_slots_are_not_sampled(make_service) -> None:
    text_only = scripted("textonly").model_copy(update={"max_images": 0})
    service = make_service([scripted("alpha"), scripted("bravo"), text_only], seed=2)
    for _ in range(30):
        state = service.new_session()
        service.start_turn(state, "what is it?", [_png()])
        assert "textonly" not in state.models.values()
        asyncio.run(_drain(service, state))


def test_a_reason_is_stored_with_the_vote_after_it_and_only_by_its_voter(make_service, sessions) -> None:
    service = make_service()
    state, _ = _play(service)
    with pytest.raises(ArenaError, match="after the vote"):
        service.add_reason(state, "too early")
    service.vote(state, "model_a")
    with pytest.raises(ArenaError, match="under 500"):
        service.add_reason(state, "x" * 501)
    impostor = dataclasses.replace(state, session_id="someone-else")
    with pytest.raises(ArenaError, match="no vote of yours"):
        service.add_reason(impostor, "not mine")
    service.add_reason(state, "  A counted the objects right.  ")
    with sessions() as db:
        assert db.scalar(sa.select(Vote.reason)) == "A counted the objects right."
