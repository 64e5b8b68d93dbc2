"""Side-by-side (named) battles and regenerate, over real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.exc import IntegrityError

from arena.errors import ArenaError
from storage import repo
from storage.judging import load_for_judging
from storage.schema import Battle, ModelRow, Response, Turn, Vote
from storage.transfer.export import iter_export_records
from tests.arena.conftest import answered, scripted
from tests.helpers import image_bytes


def _png() -> bytes:
    return image_bytes(Image.new("RGB", (32, 24), "green"))


def _named(service, a: str = "charlie", b: str = "alpha"):
    state = service.new_session("pytest-agent")
    service.start_turn(state, "What is in the picture?", [_png()], models=(a, b))
    return state


def test_a_named_battle_is_stored_as_named_with_the_chosen_models(make_service, sessions) -> None:
    service = make_service()
    for _ in range(3):  # chosen, never drawn: the same pair, on the sides chosen, every time
        state = _named(service, "charlie", "alpha")
        assert state.mode == "named" and state.models == {"a": "charlie", "b": "alpha"}
        answered(service, state)
        service.start_turn(state, "And the colour?")  # a follow-up keeps the battle's mode and models
        answered(service, state)
        reveal = service.vote(state, "model_b")
        assert (reveal.name_a, reveal.name_b) == ("charlie", "alpha")
    anonymous = service.new_session()
    service.start_turn(anonymous, "Describe it.", [_png()])
    assert anonymous.mode == "anony"
    with sessions() as db:
        ids = {name: id_ for id_, name in db.execute(sa.select(ModelRow.id, ModelRow.name))}
        rows = db.execute(
            sa.select(Battle.mode, Battle.model_a_id, Battle.model_b_id, Vote.winner)
            .join(Vote, Vote.battle_id == Battle.id)
            .order_by(Battle.created_at)
        ).all()
        assert [tuple(r) for r in rows] == [("named", ids["charlie"], ids["alpha"], "model_b")] * 3
        assert db.scalar(sa.select(Battle.mode).where(Battle.id == anonymous.battle_id)) == "anony"
        # Named votes stay out of an export's anonymous records: the record says anony = False.
        records = list(iter_export_records(db))
    assert len(records) == 3 and not any(r["anony"] for r in records)


def test_a_named_battle_needs_two_available_different_models(make_service, sessions) -> None:
    service = make_service([scripted("alpha"), scripted("bravo"), scripted("charlie")])
    state = service.new_session()
    with pytest.raises(ArenaError, match="two different"):
        service.start_turn(state, "Hi", models=("alpha", "alpha"))
    with pytest.raises(ArenaError, match="zulu is not available"):
        service.start_turn(state, "Hi", models=("alpha", "zulu"))
    with sessions.begin() as db:
        db.execute(sa.update(ModelRow).where(ModelRow.name == "bravo").values(enabled=False))
    service.refresh_models()
    with pytest.raises(ArenaError, match="bravo is not available"):
        service.start_turn(state, "Hi", models=("bravo", "alpha"))
    with sessions() as db:  # a refused turn writes nothing
        assert db.scalar(sa.select(sa.func.count()).select_from(Battle)) == 0
    assert state.battle_id is None


def test_regenerate_keeps_the_old_answers_superseded_and_the_vote_applies(make_service, sessions) -> None:
    service = make_service()
    state = service.new_session()
    service.start_turn(state, "Describe the image.", [_png()])
    with pytest.raises(ArenaError, match="regenerated once both are complete"):
        service.regenerate(state)  # not while the answers are streaming
    first = answered(service, state)
    service.regenerate(state)
    assert state.status == "generating"
    with pytest.raises(ArenaError):
        service.vote(state, "model_a")  # no vote while the new answers stream
    second = answered(service, state)
    assert second != first  # a new seed: a scripted model answers otherwise
    service.regenerate(state)
    third = answered(service, state)
    service.vote(state, "tie")
    with pytest.raises(ArenaError):
        service.regenerate(state)  # after the vote the answers are final
    with sessions() as db:
        rows = db.execute(
            sa.select(Response.side, Response.text, Response.superseded).order_by(Response.id)
        ).all()
        assert [tuple(r) for r in rows] == [
            ("a", first[0], True),
            ("b", first[1], True),
            ("a", second[0], True),
            ("b", second[1], True),
            ("a", third[0], False),
            ("b", third[1], False),
        ]
        assert db.scalar(sa.select(Vote.winner)) == "tie"
        assert db.get(Battle, state.battle_id).state == "voted"
        # What the arena shows, exports, judges and measures is the current answers.
        turn = db.scalars(sa.select(Turn)).one()
        assert {r.side: r.text for r in turn.responses} == dict(zip("ab", third, strict=True))
        assert repo.answer_texts(db, [state.battle_id]) == {state.battle_id: third}
        (record,) = iter_export_records(db)
        assert record["conversation_a"][-1]["content"] == third[0]
        assert record["conversation_b"][-1]["content"] == third[1]
        (judged,) = load_for_judging(db, [state.battle_id])
        assert first[0] not in repr(judged) and third[0] in repr(judged)


def test_only_one_current_answer_per_turn_and_side(make_service, sessions) -> None:
    """The database itself refuses a second current answer; superseded ones may repeat."""
    service = make_service()
    state = service.new_session()
    service.start_turn(state, "Describe the image.", [_png()])
    answered(service, state)
    response = {
        "turn_id": state.turn_id,
        "side": "a",
        "model_id": service.model_ids["alpha"],
        "text": "x",
        "started_at": service.now(),
        "first_token_at": None,
        "finished_at": None,
        "output_chunks": 0,
        "finish_reason": "stop",
    }
    with pytest.raises(IntegrityError), sessions.begin() as db:
        repo.save_response(db, **response)
    with sessions.begin() as db:
        assert repo.supersede_answers(db, state.battle_id, state.turn_id, service.now())
        repo.save_response(db, **response)
        # Not ready any more (generating): a second supersede changes nothing.
        assert not repo.supersede_answers(db, state.battle_id, state.turn_id, service.now())
    with sessions() as db:
        counts = db.execute(
            sa.select(Response.superseded, sa.func.count()).group_by(Response.superseded)
        ).all()
    assert dict(counts) == {True: 2, False: 1}


def test_regenerate_runs_the_identity_leak_check_on_the_new_answers(make_service, sessions) -> None:
    """A regenerated answer that names its maker is caught like a first one."""
    specs = [scripted("alpha"), scripted("bravo", reply="I was made by Test Org.")]
    service = make_service(specs)
    state = service.new_session()
    service.start_turn(state, "Describe the image.", [_png()], models=("alpha", "bravo"))
    asyncio.run(_drain_all(service, state))
    first_leak = state.leak
    state.leak = None  # as if the first answers had been clean: the new ones must be checked
    service.regenerate(state)
    asyncio.run(_drain_all(service, state))
    assert state.leak is not None and state.leak[1] == "b" and first_leak == state.leak
    with sessions() as db:
        assert db.get(Battle, state.battle_id).identity_leak


async def _drain_all(service, state) -> None:
    async for _ in service.stream(state):
        pass
