"""How a battle tab shows a voter's battle: chat messages, the name lines, and a battle resumed from its
token after a page reload (what each element shows, by battle status). No events are wired here."""

from __future__ import annotations

from typing import Any

import gradio as gr

from arena.battle_session import SIDES, BattleSession, Side
from arena.resume import Resumed
from arena.service import BattleService
from arena.ui.messages import chat_message


def shown_names(service: BattleService, current: BattleSession) -> tuple[str, str]:
    """The name lines of a battle whose names may be shown (named, or after the vote)."""
    a, b = (service.specs[current.models[side]] for side in SIDES)
    return f"Model A: **{a.display_name or a.name}**", f"Model B: **{b.display_name or b.name}**"


def chats(state: BattleSession, image_paths: list[list[str]]) -> dict[Side, list[dict[str, Any]]]:
    """Both chat windows of a resumed battle: each turn's prompt with its images, and each side's answer."""
    histories: dict[Side, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for index, turn in enumerate(state.turns):
        paths = image_paths[index] if index < len(image_paths) else []
        for side in SIDES:
            histories[side].append(chat_message("user", turn.prompt, paths))
            histories[side].append({"role": "assistant", "content": turn.answers[side] or "…"})
    return histories


#: What the status line says of a resumed battle, by status.
RESUMED_STATUS = {
    "ready": "Your battle is back, as you left it: vote, or ask a follow-up.",
    "voted": "You have voted in this battle. Press New round for another.",
    "invalid": "This battle will not count (an answer failed). Press New round to start another.",
}
INTERRUPTED = (
    "Your last battle was cut off before both answers were complete, so it will not count. "
    "Ask a new question to start another."
)


def resumed_view(service: BattleService, resumed: Resumed | None, *, named: bool) -> dict[str, Any]:
    """The values of a battle tab's elements for a page (re)load, keyed by element role.

    Without a resumed battle only the state changes (a fresh page keeps its defaults). Model names are
    shown for a named battle, or an anonymous one already voted on; never before an anonymous vote.
    """
    keep = gr.update()
    view: dict[str, Any] = {
        "state": resumed.state if resumed else None,
        "chat_a": keep,
        "chat_b": keep,
        "name_a": keep,
        "name_b": keep,
        "votes": False,
        "send": keep,
        "regenerate": keep,
        "status": keep,
        "models": None,
    }
    if resumed is None:
        return view
    state = resumed.state
    if resumed.interrupted:
        view["status"] = INTERRUPTED
        return view
    if state.battle_id is None:
        return view
    histories = chats(state, resumed.image_paths)
    view["chat_a"], view["chat_b"] = histories["a"], histories["b"]
    if named or state.status == "voted":
        view["name_a"], view["name_b"] = shown_names(service, state)
    ready = state.status == "ready"
    view["votes"] = ready
    view["send"] = gr.update(interactive=state.status not in ("voted", "invalid"))
    view["regenerate"] = gr.update(interactive=ready)
    view["status"] = RESUMED_STATUS.get(state.status, "")
    if named:
        view["models"] = (state.models["a"], state.models["b"])
    return view
