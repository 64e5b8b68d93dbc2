"""One voter per browser across the page's tabs: the terms of use are accepted once, and the Battle,
Side-by-side and Direct chat tabs act as the same voter session (rate limits, bans and the terms count
for the person, not per tab).

The browser keeps a voter token (a battle token without a battle, :mod:`arena.resume`) under one
storage key. A tab with no state of its own takes its voter from it; the tab that creates the voter
hands it out. Accepting the terms in one tab opens all of them (:func:`share_acceptance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from arena.battle_session import BattleSession
from arena.resume import BattleTokens, resume
from arena.service import BattleService
from storage.vocabulary import ANONY

#: Where the browser keeps the voter token.
VOTER_KEY = "vlm-arena-voter"


def voter_state(tokens: BattleTokens) -> gr.BrowserState:
    """The page's voter token, kept in the browser across reloads and shared by its tabs."""
    return gr.BrowserState(None, storage_key=VOTER_KEY, secret=tokens.browser_secret)


def voter_from(service: BattleService, tokens: BattleTokens, saved: Any) -> BattleSession | None:
    """A fresh round for the voter the token names (session, IP hash, accepted terms); None if none."""
    resumed = resume(service, tokens, saved, ANONY)
    return None if resumed is None else resumed.state.next_round()


def voter_token(tokens: BattleTokens, state: BattleSession) -> str:
    """The voter token of ``state``'s voter (no battle in it)."""
    return tokens.issue(state.next_round(), ANONY)


def new_voter(service: BattleService, request: gr.Request | None) -> BattleSession:
    """A new voter session for this browser (the IP address is kept only as a salted hash)."""
    agent = request.headers.get("user-agent") if request else None
    ip = request.client.host if request and request.client else None
    return service.new_session(agent, ip)


@dataclass(frozen=True)
class TermsGate:
    """A tab's terms-of-use panel, the area it hides, and the event of its accept button."""

    accepted: Any
    panel: gr.Column
    area: gr.Column


def share_acceptance(gates: list[TermsGate]) -> None:
    """Accepting the terms in any tab opens every tab (the voter is the same)."""
    panels = [gate.panel for gate in gates]
    areas = [gate.area for gate in gates]

    def opened() -> tuple[Any, ...]:
        return (*(gr.update(visible=False) for _ in panels), *(gr.update(visible=True) for _ in areas))

    for gate in gates:
        gate.accepted.success(opened, None, [*panels, *areas], api_visibility="private", show_progress="hidden")
