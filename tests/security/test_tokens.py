"""Replayed votes and battle tokens that are not the voter's own, on PostgreSQL.

The vote event's inputs are the server-side state (always ``null`` from the page) and the battle token
the browser keeps. A replayed vote, a token of another voter, a forged, expired, garbled or
wrong-typed token: each either resumes nothing (no names, no prompt sent back) or meets the one-vote
rule, and stores nothing.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from arena.resume import BattleTokens
from tests.security.client import PageClient, Voter
from tests.security.running import Arena, complete_battle, png, token_claims

pytestmark = pytest.mark.e2e
DATABASE = "postgresql"
MARKER = "victim-secret-prompt-4711"
NO_BATTLE = "There is no battle to vote on yet."


def ready_battle(arena: Arena, prompt: str = MARKER) -> tuple[Voter, str]:
    """A victim's battle with both answers in and no vote yet: the victim and the battle id."""
    victim = arena.voter()
    sent = victim.send(prompt, victim.page.uploaded([("v.png", png("maroon"))]))
    assert sent.success and victim.token, sent.text()
    return victim, token_claims(victim.token)["b"]


def votes_on(arena: Arena, battle_id: str) -> list[tuple]:
    return arena.query("SELECT winner, session_id FROM votes WHERE battle_id = :b", b=battle_id)


def token_for(arena: Arena, session_id: str, battle_id: str | None, **kwargs: object) -> str:
    """A token signed with the arena's own key (read from its data folder), or as ``kwargs`` say."""
    key = (arena.data_dir / "secret_key").read_text().strip().encode()
    tokens = BattleTokens(key, **kwargs)  # type: ignore[arg-type]
    return tokens.issue(SimpleNamespace(session_id=session_id, battle_id=battle_id), "anony")  # type: ignore[arg-type]


def assert_resumes_nothing(arena: Arena, token: object) -> None:
    """A fresh page loading with ``token``: nothing of the victim's battle comes back."""
    with PageClient(arena.url) as page:
        for fn_index, n_inputs in page.load_events():
            body = {"data": [token] * n_inputs, "fn_index": fn_index, "session_hash": page.session_hash}
            result = page.run(body)
            assert result.success, result.text()
            assert MARKER not in result.text() and "Display" not in result.text()


def test_replayed_vote_request_records_one_vote(arena: Arena) -> None:
    voter, battle_id = complete_battle(arena)
    body = voter.page.body("vote-a", [None, voter.token])
    before = arena.snapshot()
    again = voter.page.run(body)  # the same click, replayed byte for byte
    assert again.success and not again.error
    with PageClient(arena.url) as other:  # the same request from another connection and page
        other.session_hash = voter.page.session_hash + "x"
        replayed = other.run({**body, "session_hash": other.session_hash})
    assert "Vote not recorded" in " ".join(replayed.toasts), replayed.text()
    changed = voter.vote("vote-b")
    assert "Vote not recorded" in " ".join(changed.toasts)
    assert arena.snapshot() == before
    assert [w for w, _ in votes_on(arena, battle_id)] == ["model_a"]
    arena.assert_serving()


def test_another_voters_token_from_a_voters_own_page_votes_nothing(arena: Arena) -> None:
    victim, battle_id = ready_battle(arena)
    attacker = arena.voter()  # a page with its own state: the token it sends is not read
    with arena.unchanged():
        result = attacker.page.call("vote-a", [None, victim.token])
        assert NO_BATTLE in " ".join(result.toasts)
        assert MARKER not in result.text()
    assert votes_on(arena, battle_id) == []
    assert victim.vote("vote-b").success and [w for w, _ in votes_on(arena, battle_id)] == ["model_b"]


def test_a_signed_token_naming_another_voters_battle_resumes_nothing(arena: Arena) -> None:
    victim, battle_id = ready_battle(arena)
    attacker = arena.voter()
    assert attacker.token
    crafted = token_for(arena, token_claims(attacker.token)["s"], battle_id)
    with arena.unchanged(), PageClient(arena.url) as fresh:
        result = fresh.call("vote-a", [None, crafted])
        assert NO_BATTLE in " ".join(result.toasts), result.text()
        assert_resumes_nothing(arena, crafted)
    assert votes_on(arena, battle_id) == []


@pytest.mark.parametrize(
    "case",
    [
        "forged-key",
        "expired",
        "issued-in-the-future",
        "tampered-claims",
        "garbled",
        "oversized",
        "not-a-string",
    ],
)
def test_bad_tokens_resume_nothing_and_vote_nothing(arena: Arena, case: str) -> None:
    victim, battle_id = ready_battle(arena)
    assert victim.token
    session = token_claims(victim.token)["s"]
    day = 24 * 3600.0
    bad: object
    if case == "forged-key":
        bad = BattleTokens(b"not-the-arena-key-" * 2).issue(
            SimpleNamespace(session_id=session, battle_id=battle_id),  # type: ignore[arg-type]
            "anony",
        )
    elif case == "expired":  # the arena's own key, issued two days ago (the lifetime is one day)
        bad = token_for(arena, session, battle_id, clock=lambda: time.time() - 2 * day)
    elif case == "issued-in-the-future":
        bad = token_for(arena, session, battle_id, clock=lambda: time.time() + day)
    elif case == "tampered-claims":  # the victim's own signature over claims naming another battle
        version, _, signature = victim.token.split(".")
        other = token_for(arena, session, "0" * 32).split(".")[1]
        bad = f"{version}.{other}.{signature}"
    elif case == "garbled":
        bad = victim.token[:-6] + "%%%%%%"
    elif case == "oversized":
        bad = victim.token + "A" * 100_000
    else:
        bad = {"s": session, "b": battle_id, "m": "anony", "t": int(time.time())}
    with arena.unchanged(), PageClient(arena.url) as fresh:
        result = fresh.call("vote-a", [None, bad])
        assert NO_BATTLE in " ".join(result.toasts), result.text()
        assert MARKER not in result.text() and "Display" not in result.text()
        assert_resumes_nothing(arena, bad)
    assert votes_on(arena, battle_id) == []
    arena.assert_serving()


def test_a_stolen_token_still_gets_one_vote_per_battle(arena: Arena) -> None:
    """The token is a bearer credential (like a session cookie): whoever holds it acts as its voter.
    Even so, the victim and the holder together cast exactly one vote."""
    victim, battle_id = ready_battle(arena)
    with pytest.raises(AssertionError):  # the check above sees a battle that is resumed
        assert_resumes_nothing(arena, victim.token)
    with PageClient(arena.url) as thief:
        stolen = thief.call("vote-a", [None, victim.token])
    mine = victim.vote("vote-b")
    toasts = " ".join(stolen.toasts + mine.toasts)
    assert "Vote not recorded" in toasts or NO_BATTLE in toasts, toasts
    assert len(votes_on(arena, battle_id)) == 1
    arena.assert_serving(battle=True)
