"""Guards on real databases: identity leaks, rate limits, bans, terms, moderation and hostile uploads."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from PIL import Image

from arena.errors import ArenaError
from arena.guards.identity import IdentityTerms
from arena.guards.limits import BANNED_MESSAGE, RateLimits
from arena.guards.moderation import NEUTRAL_REFUSAL, BlocklistModerator
from arena.guards.policy import GuardPolicy
from arena.guards.terms import Terms
from storage.counts import pair_outcome_counts
from storage.schema import Battle, BattleTag, ModerationFlag, Response, Vote, VoterSession
from tests.arena.conftest import scripted
from tests.helpers import image_bytes
from tests.hostile_images import decompression_bomb_png, truncated_png

EVIL = "EvilCorp"


class Clock:
    """A settable UTC clock for the service."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


def _policy(specs, **kwargs) -> GuardPolicy:
    return GuardPolicy(identity=IdentityTerms.from_specs(specs), **kwargs)


def _play(service, state, prompt: str = "What is in the picture?", images=()):
    service.start_turn(state, prompt, list(images))

    async def drain():
        return [u async for u in service.stream(state)]

    return asyncio.run(drain())


def _count(sessions, model) -> int:
    with sessions() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def _stored_files(tmp_path) -> list[str]:
    root = tmp_path / "images"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# -- identity leaks ------------------------------------------------------------------------------------


def _leaky_specs():
    honest = scripted("alpha")
    leaky = scripted("bravo", reply="Hello, I am a helpful assistant made by EvilCorp.")
    leaky.organization = EVIL
    return [honest, leaky]


def test_an_answer_naming_its_maker_flags_the_battle_and_the_vote_does_not_count(make_service, sessions):
    specs = _leaky_specs()
    service = make_service(specs, guards=_policy(specs))
    state = service.new_session("agent")
    updates = _play(service, state)
    assert updates[-1].done and not updates[-1].failed
    leaky_side = "a" if state.models["a"] == "bravo" else "b"
    assert state.leak == (EVIL, leaky_side)

    reveal = service.vote(state, "model_a")  # the vote is still taken
    assert reveal.notice is not None and EVIL in reveal.notice and "not count" in reveal.notice
    with sessions() as db:
        battle = db.get(Battle, state.battle_id)
        assert battle.identity_leak and battle.identity_leak_term == EVIL
        assert battle.identity_leak_side == leaky_side
        assert db.scalar(sa.select(Vote.winner).where(Vote.battle_id == state.battle_id)) == "model_a"
        counted = pair_outcome_counts(db)
    assert counted == []  # left out of every rating


def test_no_leak_when_the_voter_named_the_maker_first(make_service, sessions):
    specs = _leaky_specs()
    service = make_service(specs, guards=_policy(specs))
    state = service.new_session("agent")
    _play(service, state, prompt="Is this the EvilCorp logo?")
    assert state.leak is None
    reveal = service.vote(state, "tie")
    assert reveal.notice is None
    with sessions() as db:
        assert not db.get(Battle, state.battle_id).identity_leak


def test_a_who_are_you_prompt_tags_the_battle(make_service, sessions):
    service = make_service()
    state = service.new_session("agent")
    _play(service, state, prompt="Hi! WHO are you, exactly?")
    other = service.new_session("agent")
    _play(service, other, prompt="Who are the people in this photo?")
    with sessions() as db:
        tags = dict(db.execute(sa.select(BattleTag.battle_id, BattleTag.tag)).all())
    assert tags == {state.battle_id: "identity-question"}


def test_analysis_can_leave_out_identity_questions(make_service, db_url):
    from analysis.io import load_battles_db

    service = make_service()
    for prompt in ("What model are you?", "Describe the scene."):
        state = service.new_session("agent")
        _play(service, state, prompt=prompt)
        service.vote(state, "model_a")
    assert len(load_battles_db(db_url)) == 2
    assert len(load_battles_db(db_url, category="identity-question")) == 1
    kept = load_battles_db(db_url, exclude_category="identity-question")
    assert len(kept) == 1


# -- rate limits and bans ---------------------------------------------------------------------------------


def test_battles_per_hour_are_limited_by_session_and_by_ip(make_service, sessions, tmp_path):
    clock = Clock()
    service = make_service(
        guards=_policy([], limits=RateLimits(battles_per_hour=2, votes_per_day=0)), now=clock
    )
    first = service.new_session("agent", ip="203.0.113.7")
    for _ in range(2):
        first = service.reset(first) if first.battle_id else first
        _play(service, first)
        service.vote(first, "model_a")
        clock.advance(minutes=10)
    battles_before = _count(sessions, Battle)
    files_before = _stored_files(tmp_path)
    first = service.reset(first)
    with pytest.raises(ArenaError) as refused:
        service.start_turn(first, "One more?", [image_bytes(Image.new("RGB", (20, 20), "blue"))])
    message = str(refused.value)
    assert "limit of 2 new battles per hour" in message
    assert "12:00 UTC" not in message and "13:00 UTC" in message  # the first battle leaves the window
    assert "in about 40 minutes" in message
    # Nothing was stored for the refused request, and the state can still be used.
    assert _count(sessions, Battle) == battles_before and _stored_files(tmp_path) == files_before
    assert first.status == "idle" and first.battle_id is None

    # Another browser session from the same address shares the limit; another address does not.
    same_ip = service.new_session("other agent", ip="203.0.113.7")
    with pytest.raises(ArenaError, match="limit of 2 new battles"):
        service.start_turn(same_ip, "Hello")
    _play(service, service.new_session("agent", ip="198.51.100.1"))

    clock.advance(minutes=41)  # now past 13:00: the first battle has left the window
    _play(service, first)


def test_votes_per_day_are_limited(make_service, sessions):
    clock = Clock()
    service = make_service(
        guards=_policy([], limits=RateLimits(battles_per_hour=0, votes_per_day=2)), now=clock
    )
    state = service.new_session("agent", ip="203.0.113.9")
    for _ in range(2):
        state = service.reset(state) if state.battle_id else state
        _play(service, state)
        service.vote(state, "model_b")
        clock.advance(hours=1)
    state = service.reset(state)
    _play(service, state)
    with pytest.raises(ArenaError, match=r"limit of 2 votes per 24 hours.*12:00 UTC \(in about 22 hours\)"):
        service.vote(state, "model_a")
    assert _count(sessions, Vote) == 2
    with sessions() as db:
        assert db.get(Battle, state.battle_id).state == "ready"  # still open for a vote tomorrow
    clock.advance(hours=23)
    service.vote(state, "model_a")
    assert _count(sessions, Vote) == 3


def test_a_banned_voter_can_neither_start_nor_vote_even_from_a_new_session(make_service, sessions):
    service = make_service()
    state = service.new_session("agent", ip="192.0.2.44")
    _play(service, state)
    with sessions.begin() as db:
        db.execute(sa.update(VoterSession).where(VoterSession.id == state.session_id).values(banned=True))
    with pytest.raises(ArenaError, match=BANNED_MESSAGE):
        service.vote(state, "model_a")
    assert _count(sessions, Vote) == 0
    with pytest.raises(ArenaError, match=BANNED_MESSAGE):
        service.start_turn(service.reset(state), "again")
    with pytest.raises(ArenaError, match=BANNED_MESSAGE):
        service.start_turn(service.new_session("agent", ip="192.0.2.44"), "a fresh tab")


def test_the_battle_limit_holds_for_racing_requests_from_two_services(make_service, sessions):
    """Two services (as two arena processes would) and 8 racing threads: exactly the limit gets through."""
    policy = _policy([], limits=RateLimits(battles_per_hour=3, votes_per_day=0))
    services = [make_service(guards=policy, seed=s) for s in (1, 2)]
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        service = services[i % 2]
        state = service.new_session("agent", ip="203.0.113.200")
        barrier.wait()
        try:
            service.start_turn(state, f"prompt {i}")
            outcomes.append("ok")
        except ArenaError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 3, outcomes
    assert _count(sessions, Battle) == 3


# -- terms of use, decision time ---------------------------------------------------------------------------


def test_terms_must_be_accepted_first_and_are_stored_with_the_session(make_service, sessions):
    clock = Clock()
    terms = Terms.load()
    service = make_service(guards=_policy([], terms=terms), now=clock)
    state = service.new_session("agent")
    with pytest.raises(ArenaError, match="accept the terms"):
        service.start_turn(state, "hello")
    assert _count(sessions, Battle) == 0
    service.accept_terms(state)
    with sessions() as db:
        row = db.get(VoterSession, state.session_id)
        assert row.terms_version == terms.version and terms.version.startswith("sha256:")
        assert row.terms_accepted_at is not None
    _play(service, state)
    _play(service, service.reset(state), prompt="The next round needs no second acceptance.")


def test_terms_file_and_version(tmp_path):
    path = tmp_path / "terms.md"
    path.write_text("Be kind.\n", encoding="utf-8")
    assert Terms.load(path, "2026-12").version == "2026-12"
    assert Terms.load(path).text == "Be kind.\n"
    path.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        Terms.load(path)
    with pytest.raises(ValueError, match="cannot read"):
        Terms.load(tmp_path / "missing.md")


def test_the_vote_stores_how_long_the_voter_took(make_service, sessions):
    clock = Clock()
    service = make_service(now=clock)
    state = service.new_session("agent")
    _play(service, state)
    clock.advance(seconds=7.5)
    service.vote(state, "tie")
    with sessions() as db:
        assert db.scalar(sa.select(Vote.decision_s)) == pytest.approx(7.5)


# -- moderation and hostile uploads -------------------------------------------------------------------------


def test_a_flagged_prompt_is_refused_recorded_and_leaves_nothing_behind(make_service, sessions, tmp_path):
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# test rules\nforbidden[- ]?word\n", encoding="utf-8")
    service = make_service(guards=_policy([], moderator=BlocklistModerator(blocklist)))
    state = service.new_session("agent")
    picture = image_bytes(Image.new("RGB", (16, 16), "green"))
    with pytest.raises(ArenaError) as refused:
        service.start_turn(state, "Tell me the FORBIDDEN word", [picture])
    assert str(refused.value) == NEUTRAL_REFUSAL
    assert _count(sessions, Battle) == 0 and _stored_files(tmp_path) == []
    with sessions() as db:
        flag = db.scalars(sa.select(ModerationFlag)).one()
    assert flag.session_id == state.session_id and flag.battle_id is None and "blocklist" in flag.reason
    _play(service, state, prompt="A harmless question", images=[picture])  # the voter can go on


def test_a_flagged_answer_voids_the_battle_and_is_not_stored(make_service, sessions, tmp_path):
    specs = [scripted("alpha"), scripted("bravo", reply="Here is the forbidden word.")]
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("forbidden word\n", encoding="utf-8")
    service = make_service(specs, guards=_policy(specs, moderator=BlocklistModerator(blocklist)))
    state = service.new_session("agent")
    updates = _play(service, state)
    assert updates[-1].failed and state.status == "invalid"
    with sessions() as db:
        assert db.get(Battle, state.battle_id).invalid_reason == "answer flagged by moderation"
        texts = db.scalars(sa.select(Response.text)).all()
        flag = db.scalars(sa.select(ModerationFlag)).one()
    assert "" in texts and not any("forbidden" in t for t in texts)
    assert flag.battle_id == state.battle_id and "answer" in flag.reason
    with pytest.raises(ArenaError):
        service.vote(state, "model_a")


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [(decompression_bomb_png, "too large"), (truncated_png, "truncated")],
)
def test_a_hostile_upload_is_refused_by_name_and_no_file_is_written(
    make_service, sessions, tmp_path, hostile, expected
):
    service = make_service()
    state = service.new_session("agent")
    good = image_bytes(Image.new("RGB", (16, 16), "green"))
    with pytest.raises(ArenaError) as refused:
        service.start_turn(state, "Compare these", [good, hostile()], ["fine.png", "evil.png"])
    message = str(refused.value)
    assert message.startswith("Image 2 (evil.png): ") and expected in message and "\n" not in message
    assert _stored_files(tmp_path) == [] and _count(sessions, Battle) == 0


def test_an_image_flagged_by_an_openai_compatible_endpoint_is_never_written(make_service, sessions, tmp_path):
    from arena.guards.moderation import OpenAIModerator
    from tests.models.openai_server import Behaviour, FakeOpenAIServer

    with FakeOpenAIServer(Behaviour(moderation_flag_colour=(255, 0, 0))) as server:
        moderator = OpenAIModerator(server.base_url, timeout_s=5)
        service = make_service(guards=_policy([], moderator=moderator))
        state = service.new_session("agent")
        clean = image_bytes(Image.new("RGB", (16, 16), "green"))
        red = image_bytes(Image.new("RGB", (16, 16), (255, 0, 0)))
        with pytest.raises(ArenaError, match=NEUTRAL_REFUSAL[:30]):
            service.start_turn(state, "Describe both.", [clean, red], ["clean.png", "red.png"])
        [request] = server.moderation_requests  # the whole turn in one request
        kinds = [part["type"] for part in request["body"]["input"]]
        assert kinds == ["text", "image_url", "image_url"]
        assert _stored_files(tmp_path) == [] and _count(sessions, Battle) == 0
        with sessions() as db:
            flag = db.scalars(sa.select(ModerationFlag)).one()
        assert flag.reason.startswith("openai") and flag.image_sha256 is None
        _play(service, state, prompt="Describe it.", images=[clean])  # a clean turn goes through
        assert len(_stored_files(tmp_path)) == 1
