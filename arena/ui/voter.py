"""One voter per browser across the page's tabs: the terms of use are accepted once, and the Battle,
Side-by-side and Direct chat tabs act as the same voter session (rate limits, bans and the terms count
for the person, not per tab).

The browser keeps a voter token (a battle token without a battle, :mod:`arena.resume`) under one
storage key. A tab with no state of its own takes its voter from it; the tab that creates the voter
hands it out. Accepting the terms in one tab opens all of them (:func:`share_acceptance`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from arena.battle_session import BattleSession
from arena.resume import BattleTokens, resume
from arena.service import BattleService
from storage.vocabulary import ANONY

#: Where the browser keeps the voter token.
VOTER_KEY = "vlm-arena-voter"

# The first control a person sees is the right one from the page's first paint, without waiting for
# the page-load request. A tab's terms panel and the area it gates are both in the page's configuration;
# a <head> script, which Gradio runs before it builds the page, drops one of them from the first paint
# by the browser's own hint: whether it holds a voter token (written only once its voter accepted the
# terms). A new browser then loads neither the battle's chat windows nor its upload box before it shows
# the terms; a returning one never sees the terms flash by. The page-load answer settles it from the
# server's record (a changed terms version, an expired token). The hint decides nothing the server
# checks: a battle or chat without accepted terms is refused by the service.
TERMS_PANEL_CLASS, TERMS_AREA_CLASS = "vlm-terms-panel", "vlm-terms-area"
#: The script also tells the server what the first paint showed ("voter": the areas, "new": the terms),
#: so that the page-load answer changes only what the hint got wrong (:func:`terms_visibility`).
HINT_COOKIE = "vlm-arena-first-paint"
#: The page's <head> addition (see above); it leaves the page as it is if anything in it fails.
TERMS_HEAD = f"""<script>(() => {{ try {{
  const voter = !!localStorage.getItem({json.dumps(VOTER_KEY)});
  const hide = voter ? "{TERMS_PANEL_CLASS}" : "{TERMS_AREA_CLASS}";
  for (const c of window.gradio_config?.components || [])
    if ((c.props?.elem_classes || []).includes(hide)) c.props.visible = false;
  document.cookie = "{HINT_COOKIE}=" + (voter ? "voter" : "new") + "; path=/; SameSite=Strict";
}} catch (e) {{}} }})();</script>"""


def terms_visibility(accepted: bool, request: gr.Request | None) -> tuple[Any, Any]:
    """The page-load answer's updates of a terms panel and the area it gates.

    Where the first paint already shows what the server's record says, nothing is sent: a new voter who
    accepted the terms before this answer arrived must not be sent back to them. Where the hint was
    wrong (a changed terms version, an expired or unreadable token) or is unknown, the record wins.
    """
    hint = request.cookies.get(HINT_COOKIE) if request is not None else None
    painted_area = {"voter": True, "new": False}.get(hint or "")
    if painted_area is accepted:
        return gr.update(), gr.update()
    return gr.update(visible=not accepted), gr.update(visible=accepted)


def terms_panel_options(gated: bool) -> dict[str, Any]:
    """The options of a tab's terms panel: in the page (behind the hint) only if there are terms."""
    return {"visible": gated, "elem_classes": [TERMS_PANEL_CLASS] if gated else None}


def terms_area_options(gated: bool) -> dict[str, Any]:
    """The options of the area a terms panel gates: always in the page, behind the hint if gated."""
    return {"visible": True, "elem_classes": [TERMS_AREA_CLASS] if gated else None}


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
