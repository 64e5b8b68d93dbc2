"""Battles taken up again from a signed battle token, over real SQLite and PostgreSQL: after a reload
(the same service, its in-memory state gone) or on another arena process (a second service on the
same database). Voting still happens exactly once; tokens that are forged, expired, of another mode or
of another voter resume nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from arena.errors import ArenaError
from arena.guards.policy import GuardPolicy
from arena.guards.terms import Terms
from arena.resume import BattleTokens, current_state, in_sync, resume
from storage.schema import Turn, Vote
from tests.arena.conftest import answered, scripted
from tests.helpers import image_bytes

KEY = b"k" * 32


def _png(colour: str = "green") -> bytes:
    return image_bytes(Image.new("RGB", (32, 24), colour))


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_battle_resumes_on_another_process_and_takes_exactly_one_vote(make_service, sessions) -> None:
    first, second = make_service(seed=1), make_service(seed=2)  # two arena processes, one database
    tokens = BattleTokens(KEY)
    state = first.new_session("pytest-agent", "203.0.113.9")
    first.start_turn(state, "What colour is this?", [_png("red")])
    answers = answered(first, state)
    token = tokens.issue(state, "anony")
    assert state.models["a"] not in token and state.models["b"] not in token  # names stay on the server

    resumed = resume(second, BattleTokens(KEY), token, "anony")  # the same key, another process
    assert resumed is not None and not resumed.interrupted
    again = resumed.state
    assert (again.battle_id, again.session_id, again.models, again.status) == (
        state.battle_id,
        state.session_id,
        state.models,
        "ready",
    )
    assert again.ip_hash == state.ip_hash and again.turn_id == state.turn_id
    assert [t.prompt for t in again.turns] == ["What colour is this?"]
    assert (again.turns[0].answers["a"], again.turns[0].answers["b"]) == answers
    assert again.turns[0].images[0].getpixel((0, 0)) == (255, 0, 0)
    assert len(resumed.image_paths[0]) == 1

    # A follow-up on the second process continues the same conversation (turn index 1)...
    second.start_turn(again, "And its shape?")
    answered(second, again)
    reveal = second.vote(again, "model_a")
    assert {reveal.name_a, reveal.name_b} == set(state.models.values())
    # ...and the first process, still holding its old state, cannot vote a second time.
    with pytest.raises(ArenaError, match="already been voted"):
        first.vote(state, "model_b")
    with sessions() as db:
        assert db.scalars(sa.select(Vote.winner)).all() == ["model_a"]
        indexes = db.scalars(sa.select(Turn.index).where(Turn.battle_id == state.battle_id)).all()
        assert sorted(indexes) == [0, 1]
    voted = resume(first, tokens, token, "anony")
    assert voted is not None and voted.state.status == "voted" and voted.state.winner == "model_a"
    assert len(voted.state.turns) == 2


def test_regenerated_answers_and_named_battles_resume_as_shown(make_service) -> None:
    service = make_service()
    tokens = BattleTokens(KEY)
    state = service.new_session()
    service.start_turn(state, "Describe it.", [_png()], models=("charlie", "alpha"))
    answered(service, state)
    service.regenerate(state)
    shown = answered(service, state)
    token = tokens.issue(state, "named")
    resumed = resume(service, tokens, token, "named")
    assert resumed is not None
    again = resumed.state
    assert again.mode == "named" and again.models == {"a": "charlie", "b": "alpha"}
    assert (again.turns[0].answers["a"], again.turns[0].answers["b"]) == shown  # not the superseded ones
    assert again.attempt == 1  # a further regenerate draws yet another seed
    # The Battle tab does not take up a side-by-side battle (nor the other way round).
    assert resume(service, tokens, token, "anony") is None


def test_bad_tokens_resume_nothing(make_service, sessions) -> None:
    service = make_service()
    clock = Clock()
    tokens = BattleTokens(KEY, ttl_s=3600, clock=clock)
    state = service.new_session()
    service.start_turn(state, "Hello?", [_png()])
    answered(service, state)
    token = tokens.issue(state, "anony")
    assert resume(service, tokens, token, "anony") is not None

    version, payload, signature = token.split(".")
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    bad = [
        None,
        "",
        42,
        "not a token",
        f"{version}.{forged_payload}.{signature}",  # claims changed, signature kept
        f"{version}.{payload}.{signature[:-2]}xx",  # signature changed
        f"v0.{payload}.{signature}",
        token + "." + "x" * 600,
    ]
    for value in bad:
        assert resume(service, tokens, value, "anony") is None, value
    assert resume(service, BattleTokens(b"another key 1234567890"), token, "anony") is None
    clock.t += 3601  # expired
    assert resume(service, tokens, token, "anony") is None
    with sessions() as db:  # nothing was written by any of it
        assert db.scalar(sa.select(sa.func.count()).select_from(Vote)) == 0


def test_a_token_for_another_voters_battle_resumes_no_battle(make_service) -> None:
    service = make_service()
    tokens = BattleTokens(KEY)
    owner = service.new_session()
    service.start_turn(owner, "Mine.", [_png()])
    answered(service, owner)
    other = service.new_session()
    service.start_turn(other, "Theirs.", [_png("blue")])
    answered(service, other)
    # A token can only be made with the key; one claiming another voter's battle (as a bug or a
    # stolen key might produce) still does not hand that battle over.
    other.battle_id = owner.battle_id
    resumed = resume(service, tokens, tokens.issue(other, "anony"), "anony")
    assert resumed is not None and resumed.state.battle_id is None
    assert resumed.state.session_id == other.session_id


def test_a_battle_cut_off_mid_answer_resumes_as_a_fresh_round(make_service) -> None:
    service = make_service()
    tokens = BattleTokens(KEY)
    state = service.new_session()
    service.start_turn(state, "Tell me a story.", [_png()])  # the page reloads before answering
    resumed = resume(service, tokens, tokens.issue(state, "anony"), "anony")
    assert resumed is not None and resumed.interrupted
    assert resumed.state.battle_id is None and resumed.state.session_id == state.session_id


def test_a_voter_session_token_keeps_accepted_terms(make_service) -> None:
    specs = [scripted("alpha"), scripted("bravo")]
    guards = dataclasses.replace(GuardPolicy.for_roster(specs), terms=Terms("Be nice.", "v7"))
    service = make_service(specs, guards=guards)
    tokens = BattleTokens(KEY)
    state = service.new_session()
    service.accept_terms(state)
    resumed = resume(service, tokens, tokens.issue(state, "anony"), "anony")
    assert resumed is not None and resumed.state.terms_version == "v7" and resumed.state.battle_id is None


def test_token_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        BattleTokens(b"short")
    assert BattleTokens(KEY).browser_secret == BattleTokens(KEY).browser_secret
    assert BattleTokens(KEY).browser_secret != BattleTokens(b"z" * 32).browser_secret


def test_a_process_holding_an_old_state_takes_up_the_stored_one(make_service, sessions) -> None:
    """Without sticky sessions a voter's requests alternate between processes: each one must act on
    the battle as stored, not on what it held from an earlier request."""
    first, second = make_service(seed=1), make_service(seed=2)
    tokens = BattleTokens(KEY)
    held = first.new_session()
    first.start_turn(held, "Turn one?", [_png()])
    answered(first, held)
    token = tokens.issue(held, "anony")
    assert current_state(first, tokens, held, token, "anony") is held  # in step: no reload needed

    on_second = current_state(second, tokens, None, token, "anony")
    assert on_second is not None
    second.start_turn(on_second, "Turn two?")
    answered(second, on_second)
    assert not in_sync(first, held)
    again = current_state(first, tokens, held, token, "anony")
    assert again is not held and [t.prompt for t in again.turns] == ["Turn one?", "Turn two?"]
    first.start_turn(again, "Turn three?")  # index 2, not a clash with turn two
    answered(first, again)

    second.regenerate(on_second := current_state(second, tokens, on_second, token, "anony"))
    shown = answered(second, on_second)
    assert not in_sync(first, again)
    latest = current_state(first, tokens, again, token, "anony")
    assert (latest.turns[-1].answers["a"], latest.turns[-1].answers["b"]) == shown
    assert in_sync(first, latest)
    first.vote(latest, "tie")
    assert not in_sync(second, on_second)
    with sessions() as db:
        assert db.scalars(sa.select(Turn.index).where(Turn.battle_id == held.battle_id).order_by(Turn.index)).all() == [0, 1, 2]


def test_a_battle_resumes_from_a_remote_image_store(make_service) -> None:
    """With images in an fsspec store (here fsspec's in-memory file system) there is no local file:
    the resumed battle reads the bytes through the store and the page gets a servable copy."""
    from storage.images import ImageStore

    first, second = make_service(seed=1), make_service(seed=2)
    store = ImageStore("memory://resume-test-images")
    first.images = second.images = store
    tokens = BattleTokens(KEY)
    state = first.new_session()
    first.start_turn(state, "Which colour?", [_png("blue")])
    answered(first, state)
    assert store.root is None  # no local directory behind it
    resumed = resume(second, tokens, tokens.issue(state, "anony"), "anony")
    assert resumed is not None
    assert resumed.state.turns[0].images[0].getpixel((0, 0)) == (0, 0, 255)
    (path,) = resumed.image_paths[0]
    assert Path(path).read_bytes() == store.read(Path(path).name.split(".")[0])
    sha = Path(path).name.split(".")[0]
    local = store.local_file(sha)
    assert local is not None and local.read_bytes() == store.read(sha)
