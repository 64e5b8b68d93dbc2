"""Direct chat over real databases (SQLite and PostgreSQL): turns with images, guards, feedback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from PIL import Image

from arena.direct import DIRECT_FAILURE, USER_FLAG_REASON, DirectChatService
from arena.errors import ArenaError
from arena.guards.identity import IdentityTerms
from arena.guards.limits import BANNED_MESSAGE, RateLimits
from arena.guards.moderation import NEUTRAL_REFUSAL, BlocklistModerator
from arena.guards.policy import GuardPolicy
from arena.guards.terms import Terms
from storage import counts, repo
from storage.feedback import feedback_for
from storage.schema import Battle, Feedback, ModelRow, ModerationFlag, Response, Turn, TurnImage, VoterSession
from tests.arena.conftest import scripted
from tests.helpers import image_bytes
from tests.hostile_images import truncated_png

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _png(color: str = "red") -> bytes:
    return image_bytes(Image.new("RGB", (24, 16), color))


def _ask(direct: DirectChatService, state, model: str, prompt: str, images=(), names=()):
    direct.start_turn(state, model, prompt, list(images), list(names))

    async def drain():
        return [u async for u in direct.stream(state)]

    return asyncio.run(drain())


def _count(sessions, model) -> int:
    with sessions() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def _policy(specs, **kwargs) -> GuardPolicy:
    return GuardPolicy(identity=IdentityTerms.from_specs(specs), **kwargs)


@pytest.fixture
def direct(make_service) -> DirectChatService:
    specs = [
        scripted("alpha", reply="I see {n_images} image(s); you asked: {prompt}", delay_s=0.005),
        scripted("bravo"),
    ]
    return DirectChatService(make_service(specs))


def test_the_model_list_shows_enabled_models_by_display_name(make_service, sessions) -> None:
    service = make_service([scripted("alpha"), scripted("bravo"), scripted("charlie", 0.0)])
    direct = DirectChatService(service)
    # A weight of 0 keeps a model out of battles, not out of direct chats; disabling it does.
    assert direct.models() == {
        "Alpha Display": "alpha",
        "Bravo Display": "bravo",
        "Charlie Display": "charlie",
    }
    with sessions.begin() as db:
        db.execute(sa.update(ModelRow).where(ModelRow.name == "bravo").values(enabled=False))
    service.refresh_models()
    assert direct.models() == {"Alpha Display": "alpha", "Charlie Display": "charlie"}
    state = direct.new_session("agent")
    with pytest.raises(ArenaError, match="not available"):
        direct.start_turn(state, "bravo", "hello")
    with pytest.raises(ArenaError, match="not available"):
        direct.start_turn(state, "zulu", "hello")
    assert _count(sessions, Battle) == 0


def test_a_multi_turn_chat_with_images_is_one_direct_battle(direct, sessions) -> None:
    state = direct.new_session("agent", ip="198.51.100.7")
    first = _ask(direct, state, "alpha", "What colour is it?", [_png("red")], ["red.png"])
    assert first[-1].done and not first[-1].failed
    assert first[-1].text == "I see 1 image(s); you asked: What colour is it?"
    assert len(first) >= 2  # streamed in pieces before the last update
    second = _ask(direct, state, "alpha", "And now both?", [_png("blue")])
    # The model saw the whole conversation: both turns' images.
    assert second[-1].text == "I see 2 image(s); you asked: And now both?"
    third = _ask(direct, state, "alpha", "Thanks!")
    assert third[-1].text == "I see 2 image(s); you asked: Thanks!" and state.status == "ready"

    with sessions() as db:
        battle = db.scalars(sa.select(Battle)).one()
        assert battle.id == state.battle_id
        assert (battle.mode, battle.model_b_id, battle.state) == ("direct", None, "ready")
        assert db.get(ModelRow, battle.model_a_id).name == "alpha"
        assert db.get(VoterSession, state.session_id).ip_hash is not None
        turns = db.scalars(sa.select(Turn).where(Turn.battle_id == battle.id).order_by(Turn.index)).all()
        assert [t.prompt for t in turns] == ["What colour is it?", "And now both?", "Thanks!"]
        per_turn = [db.scalar(sa.select(sa.func.count()).where(TurnImage.turn_id == t.id)) for t in turns]
        assert per_turn == [1, 1, 0]
        responses = db.execute(
            sa.select(Response.side, Response.text, Response.model_id).join(Turn).order_by(Turn.index)
        ).all()
        assert [r.side for r in responses] == ["a", "a", "a"]
        assert responses[1].text == "I see 2 image(s); you asked: And now both?"
        assert {r.model_id for r in responses} == {battle.model_a_id}
    # Direct chats have no opponent and take no vote, so no leaderboard ever counts them.
    with pytest.raises(repo.VoteRejected), sessions.begin() as db:
        repo.record_vote(
            db, battle_id=state.battle_id, winner="model_a", session_id=state.session_id, now=NOW
        )
    with sessions() as db:
        assert counts.pair_outcome_counts(db) == [] and counts.votes_per_model(db) == {}
        assert db.scalar(sa.select(Battle.state)) == "ready"


def test_a_chat_stays_with_its_model_until_a_new_chat(direct, sessions) -> None:
    state = direct.new_session("agent")
    _ask(direct, state, "alpha", "Hello")
    with pytest.raises(ArenaError, match="another model"):
        direct.start_turn(state, "bravo", "Hello bravo")
    state = direct.reset(state)
    _ask(direct, state, "bravo", "Hello bravo")
    with sessions() as db:
        modes = db.execute(sa.select(Battle.mode, Battle.model_b_id)).all()
    assert modes == [("direct", None), ("direct", None)]


def _turn_ids(sessions, battle_id: str) -> list[int]:
    with sessions() as db:
        return list(db.scalars(sa.select(Turn.id).where(Turn.battle_id == battle_id).order_by(Turn.index)))


def _rows(sessions, battle_id: str) -> list[tuple]:
    """(turn id, answer index, kind, comment) of every feedback row on the chat, by answer and kind."""
    with sessions() as db:
        records = feedback_for(db, battle_id)
    return sorted((r.turn_id, r.turn_index, r.kind, r.comment) for r in records)


def test_feedback_is_stored_per_answer(direct, sessions) -> None:
    state = direct.new_session("agent")
    with pytest.raises(ArenaError, match="no answer to rate"):
        direct.feedback(state, "up")
    _ask(direct, state, "alpha", "Describe it", [_png()])
    _ask(direct, state, "alpha", "And its size?")
    first, second = _turn_ids(sessions, state.battle_id)
    assert [turn.turn_id for turn in state.turns] == [first, second]

    direct.feedback(state, "up", "  Clear and correct.  ", answer=0)
    direct.feedback(state, "up", "Right size.", answer=1)
    assert _rows(sessions, state.battle_id) == [
        (first, 0, "up", "Clear and correct."),
        (second, 1, "up", "Right size."),
    ]
    with sessions() as db:
        assert {r.session_id for r in feedback_for(db, state.battle_id)} == {state.session_id}

    # A repeat replaces the comment of that answer only; a blank comment keeps the last one.
    direct.feedback(state, "up", "Actually, it missed the colour.", answer=0)
    direct.feedback(state, "up", "", answer=0)
    # 👎 replaces 👍 on the same answer, not on the other one.
    direct.feedback(state, "down", answer=1)
    assert _rows(sessions, state.battle_id) == [
        (first, 0, "up", "Actually, it missed the colour."),
        (second, 1, "down", None),
    ]
    direct.feedback(state, "down", "Wrong after all.", answer=0)
    assert _rows(sessions, state.battle_id) == [
        (first, 0, "down", "Wrong after all."),
        (second, 1, "down", None),
    ]
    # No answer given: the latest one.
    direct.feedback(state, "up", "Better on reflection.")
    assert _rows(sessions, state.battle_id)[1] == (second, 1, "up", "Better on reflection.")
    assert _count(sessions, Feedback) == 2


def test_a_thumb_can_be_taken_back_but_a_flag_stays(direct, sessions) -> None:
    state = direct.new_session("agent")
    _ask(direct, state, "alpha", "Describe it")
    _ask(direct, state, "alpha", "More?")
    first, second = _turn_ids(sessions, state.battle_id)
    direct.feedback(state, "up", answer=0)
    direct.feedback(state, "down", answer=1)
    direct.feedback(state, "flag", "Invented a detail.", answer=0)
    assert direct.withdraw_feedback(state, answer=0) == 1
    assert direct.withdraw_feedback(state, answer=0) == 0
    assert _rows(sessions, state.battle_id) == [
        (first, 0, "flag", "Invented a detail."),
        (second, 1, "down", None),
    ]


def test_a_flag_reaches_the_operators_once_per_chat(direct, sessions) -> None:
    state = direct.new_session("agent")
    _ask(direct, state, "alpha", "Describe it")
    _ask(direct, state, "alpha", "Again")
    first, second = _turn_ids(sessions, state.battle_id)
    direct.feedback(state, "up", answer=0)
    direct.feedback(state, "flag", "It made things up.", answer=0)
    direct.feedback(state, "flag", "It made things up, twice.", answer=0)
    direct.feedback(state, "flag", "And here.", answer=1)
    with sessions() as db:
        flags = db.execute(
            sa.select(ModerationFlag.battle_id, ModerationFlag.reason, ModerationFlag.detail)
        ).all()
    assert _rows(sessions, state.battle_id) == [
        (first, 0, "flag", "It made things up, twice."),
        (first, 0, "up", None),
        (second, 1, "flag", "And here."),
    ]
    # One flag for operators, not one per click or per answer.
    assert flags == [(state.battle_id, USER_FLAG_REASON, "It made things up.")]


def test_bad_feedback_is_refused(direct, sessions) -> None:
    state = direct.new_session("agent")
    _ask(direct, state, "alpha", "Describe it")
    _ask(direct, state, "alpha", "Go on")
    with pytest.raises(ArenaError, match="Unknown feedback"):
        direct.feedback(state, "love")
    with pytest.raises(ArenaError, match="under 500 characters"):
        direct.feedback(state, "down", "x" * 501)
    for index, shown in ((2, "3"), (-1, "0"), (7, "8")):
        with pytest.raises(ArenaError, match=rf"no answer {shown} in this chat \(it has 2\)"):
            direct.feedback(state, "up", answer=index)
        with pytest.raises(ArenaError, match=rf"no answer {shown} in this chat"):
            direct.withdraw_feedback(state, answer=index)
    direct.feedback(state, "down", "y" * 500, answer=1)  # the limit itself is fine
    with sessions() as db:
        stored = [(r.kind, r.turn_index, len(r.comment or "")) for r in feedback_for(db, state.battle_id)]
    assert stored == [("down", 1, 500)]


def test_earlier_answers_can_be_rated_while_the_next_one_streams(direct, sessions) -> None:
    state = direct.new_session("agent")
    _ask(direct, state, "alpha", "Describe it")
    direct.start_turn(state, "alpha", "And then?")
    assert state.status == "generating"
    for answer in (None, 1):
        with pytest.raises(ArenaError, match="wait until the answer is complete"):
            direct.feedback(state, "up", answer=answer)
    direct.feedback(state, "up", "The first was good.", answer=0)

    async def drain():
        return [u async for u in direct.stream(state)]

    assert asyncio.run(drain())[-1].done
    direct.feedback(state, "down")
    first, second = _turn_ids(sessions, state.battle_id)
    assert _rows(sessions, state.battle_id) == [
        (first, 0, "up", "The first was good."),
        (second, 1, "down", None),
    ]


def test_guards_apply_to_direct_chats(make_service, sessions, tmp_path) -> None:
    specs = [scripted("alpha"), scripted("bravo")]
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("forbidden word\n", encoding="utf-8")
    policy = _policy(
        specs,
        moderator=BlocklistModerator(blocklist),
        limits=RateLimits(battles_per_hour=2, votes_per_day=0),
        terms=Terms.load(),
    )
    direct = DirectChatService(make_service(specs, guards=policy))
    state = direct.new_session("agent", ip="203.0.113.9")
    with pytest.raises(ArenaError, match="accept the terms"):
        direct.start_turn(state, "alpha", "Hello")
    direct.accept_terms(state)

    with pytest.raises(ArenaError) as refused:
        direct.start_turn(state, "alpha", "Say the forbidden word", [_png()])
    assert str(refused.value) == NEUTRAL_REFUSAL
    with pytest.raises(ArenaError) as hostile:
        direct.start_turn(state, "alpha", "Look", [_png(), truncated_png()], ["ok.png", "evil.png"])
    assert str(hostile.value).startswith("Image 2 (evil.png): ")
    assert _count(sessions, Battle) == 0 and _count(sessions, ModerationFlag) == 1

    _ask(direct, state, "alpha", "First chat")
    _ask(direct, state, "alpha", "A follow-up is no new chat")
    state = direct.reset(state)
    _ask(direct, state, "bravo", "Second chat")
    second = state
    state = direct.reset(state)
    with pytest.raises(ArenaError, match="limit of 2 new battles"):
        direct.start_turn(state, "alpha", "Third chat")
    assert _count(sessions, Battle) == 2

    with sessions.begin() as db:
        db.execute(sa.update(VoterSession).where(VoterSession.id == state.session_id).values(banned=True))
    with pytest.raises(ArenaError, match=BANNED_MESSAGE):
        direct.start_turn(second, "bravo", "A follow-up")
    with pytest.raises(ArenaError, match=BANNED_MESSAGE):
        direct.feedback(second, "up")
    assert _count(sessions, Feedback) == 0 and _count(sessions, Turn) == 3


def test_a_flagged_answer_ends_the_chat_and_is_not_stored(make_service, sessions, tmp_path) -> None:
    specs = [scripted("alpha", reply="Here is the forbidden word."), scripted("bravo")]
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("forbidden word\n", encoding="utf-8")
    direct = DirectChatService(
        make_service(specs, guards=_policy(specs, moderator=BlocklistModerator(blocklist)))
    )
    state = direct.new_session("agent")
    updates = _ask(direct, state, "alpha", "Tell me something")
    assert updates[-1].failed and updates[-1].text == "" and state.status == "invalid"
    with sessions() as db:
        assert db.scalar(sa.select(Battle.invalid_reason)) == "answer flagged by moderation"
        assert db.scalars(sa.select(Response.text)).all() == [""]
    with pytest.raises(ArenaError, match="Press New chat"):
        direct.start_turn(state, "alpha", "Again")
    direct.feedback(state, "flag", "It said something awful")  # a failed chat can still be flagged


def test_a_failing_model_ends_the_chat(make_service, sessions) -> None:
    specs = [scripted("alpha", fail_after=2), scripted("bravo")]
    direct = DirectChatService(make_service(specs))
    state = direct.new_session("agent")
    updates = _ask(direct, state, "alpha", "Describe it")
    assert updates[-1].done and updates[-1].failed and state.status == "invalid"
    with sessions() as db:
        assert db.scalar(sa.select(Battle.invalid_reason)) == "model failure"
        assert db.scalar(sa.select(Response.error)) is not None
    assert "New chat" in DIRECT_FAILURE
