"""The page's private events called directly by ``fn_index`` with crafted data.

A vote, a reason, a regenerate without a battle; wrong types and arities; an unknown or negative
``fn_index``; no ``session_hash``; a body that is not JSON; a 10 MB prompt and other huge payloads;
model names the page never offered. Each is refused (an HTTP error, a failed event, or a toast),
stores nothing, and the server keeps serving.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.security.client import PageClient
from tests.security.running import Arena, token_claims

pytestmark = pytest.mark.e2e


def refused(result: Any) -> bool:
    """A failed event, or one that showed a toast (a refusal the voter reads)."""
    return result.success is False or bool(result.toasts)


@pytest.mark.parametrize(
    ("elem_id", "data", "says"),
    [
        ("vote-a", [None, None], "no battle to vote on"),
        ("vote-bothbad", [None, "v1.garbage.token"], "no battle to vote on"),
        ("vote-reason-send", ["a reason", None, None], None),
        ("battle-regenerate", [None, [], [], None], "nothing to regenerate"),
    ],
    ids=[
        "vote-without-battle",
        "vote-with-garbage-token",
        "reason-without-vote",
        "regenerate-without-battle",
    ],
)
def test_actions_without_a_battle_are_refused(
    arena: Arena, elem_id: str, data: list, says: str | None
) -> None:
    with arena.unchanged(), arena.page() as page:
        result = page.call(elem_id, data)
        if says is not None:
            assert any(says in t for t in result.toasts), result.text()
    arena.assert_serving()


def test_a_reason_before_the_vote_is_refused(arena: Arena) -> None:
    voter = arena.voter()
    assert voter.send("What is here?").success
    with arena.unchanged():
        result = voter.reason("sneaked in before the vote")
        assert any("after the vote" in t for t in result.toasts), result.text()
    assert arena.query("SELECT count(*) FROM votes WHERE reason IS NOT NULL") == [(0,)]


WRONG_TYPES = {
    "vote-data-not-a-list": ("vote-a", "not a list"),
    "vote-too-many-inputs": ("vote-a", [None, None, None, None, None]),
    "vote-too-few-inputs": ("vote-a", []),
    "send-files-not-filedata": ("battle-send", [["/etc/passwd"], "hi", None, [], [], None, None, None, None, None]),
    "send-history-garbage": ("battle-send", [[], "hi", None, "x", 7, None, None, None, None, None]),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_wrong_types_are_refused(arena: Arena, case: str) -> None:
    elem_id, data = WRONG_TYPES[case]
    with arena.unchanged(), arena.page() as page:
        page.call("terms-accept", [None, None, None])
        response = page.join(page.body(elem_id, data))  # type: ignore[arg-type]
        if response.status_code == 200:
            result = page.follow(response.json()["event_id"])
            assert refused(result), result.text()
        else:
            assert 400 <= response.status_code < 500, response.status_code
    arena.assert_serving()


def test_values_of_the_wrong_type_are_coerced_harmlessly(arena: Arena) -> None:
    """A prompt sent as an object becomes its text; a battle token sent as a list is ignored (the
    page's own voter session is used). Both make an ordinary battle of this page's voter."""
    voter = arena.voter()
    assert voter.token
    own_session = token_claims(voter.token)["s"]
    data = [[], {"$gt": ""}, None, [], [], None, None, None, [1, 2], None]
    result = voter.page.call("battle-send", data)
    assert result.success, result.text()
    rows = arena.query("SELECT t.prompt, b.session_id FROM turns t JOIN battles b ON b.id = t.battle_id")
    assert ("{'$gt': ''}", own_session) in rows, rows
    arena.assert_serving()


#: Gradio answers an fn_index it does not have with 500 (an IndexError in its queue): refused, nothing
#: runs, and the server goes on serving; reported rather than hidden.
GRADIO_500 = {"unknown-fn-index", "negative-fn-index"}


@pytest.mark.parametrize(
    "body",
    [
        {"data": [None, None], "fn_index": 9999, "trigger_id": 1, "session_hash": "abc"},
        {"data": [None, None], "fn_index": -1, "trigger_id": 1, "session_hash": "abc"},
        {"data": [None, None], "fn_index": "4; DROP TABLE votes", "session_hash": "abc"},
        {"data": [None, None], "fn_index": 4},
        {"data": [None, None], "fn_index": 4, "session_hash": None},
        b"{not json",
        b"[]",
    ],
    ids=[
        "unknown-fn-index",
        "negative-fn-index",
        "fn-index-not-a-number",
        "no-session-hash",
        "null-session-hash",
        "not-json",
        "json-not-an-object",
    ],
)
def test_malformed_queue_requests_are_refused(
    arena: Arena, body: Any, request: pytest.FixtureRequest
) -> None:
    case = request.node.callspec.id
    with arena.unchanged(), arena.page() as page:
        response = page.join(body)
        if response.status_code == 200:  # accepted into the queue: the event itself must fail
            result = page.follow(response.json()["event_id"])
            assert result.success is False, result.text()
        else:
            ceiling = 501 if case in GRADIO_500 else 500
            assert 400 <= response.status_code < ceiling, (response.status_code, response.text[:200])
    arena.assert_serving()


def test_a_10_mb_prompt_is_refused(arena: Arena) -> None:
    voter = arena.voter()
    with arena.unchanged():
        result = voter.send("A" * (10 * 1024 * 1024))
        assert any("longer than 4000 characters" in t for t in result.toasts), result.text()[:500]
    arena.assert_serving(battle=True)


def test_huge_payloads_in_other_inputs_are_refused(arena: Arena) -> None:
    voter = arena.voter()
    assert voter.send("Which is better?").success
    history = [{"role": "user", "content": "x" * 1000}] * 2000  # a 2 MB forged chat history
    with arena.unchanged():
        reason = voter.page.call("vote-reason-send", ["r" * (5 * 1024 * 1024), None, voter.token])
        assert refused(reason)
        big = voter.page.call(
            "battle-send", [[], "follow-up", None, history, history, None, None, None, voter.token, voter.voter]
        )
        # A forged history changes only what this page shows itself; the stored battle is the
        # server's: the turn is stored from the server's state, never from the history sent.
        if big.success and not big.toasts:
            pytest.fail("a forged history was accepted without a refusal")  # pragma: no cover
    arena.assert_serving()


def test_models_the_page_never_offered_are_refused(arena: Arena) -> None:
    with arena.unchanged(), arena.page() as page:
        page.call("sbs-terms-accept", [None, None, None])
        sbs = page.call("sbs-send", [[], "hi", None, [], [], None, "kilo", "../../etc/passwd", None, None])
        assert refused(sbs), sbs.text()
        page.call("direct-terms-accept", [None, None])
        direct = page.call("direct-send", [[], "hi", "not-a-model", None, [], None])
        assert refused(direct), direct.text()
    arena.assert_serving()


def test_the_public_api_lists_no_event(arena: Arena) -> None:
    """Every event is private: nothing is callable by name, and the API description lists nothing."""
    info = httpx.get(f"{arena.url}/gradio_api/info", timeout=30)
    assert info.status_code == 200 and not info.json().get("named_endpoints"), info.text[:300]
    with arena.unchanged():
        for route in ("/gradio_api/call/vote", "/gradio_api/run/predict", "/gradio_api/call/on_vote"):
            response = httpx.post(f"{arena.url}{route}", json={"data": [None, None]}, timeout=30)
            # Gradio's /call route answers an unknown name with 500 (reported): refused either way.
            assert response.status_code in (404, 405, 422, 500), (route, response.status_code)
            assert "event_id" not in response.text
    with PageClient(arena.url) as page:
        assert page.load_events(), "the page's load events were found (the check looks in the right place)"
