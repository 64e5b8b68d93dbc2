"""The battle tabs: upload images, ask, watch two models answer, vote. One component serves both the
anonymous Battle tab (names revealed after the vote) and the Side-by-side tab (models chosen, named).

Callbacks only translate between Gradio values and :class:`arena.service.BattleService` calls.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from arena.battle_session import BattleSession
from arena.errors import ArenaError
from arena.examples import examples, pick
from arena.model_settings import choosable_models
from arena.resume import BattleTokens, Resumed, current_state, resume
from arena.service import MAX_VOTE_REASON_CHARS, NEUTRAL_FAILURE, BattleService
from arena.ui.battle_view import resumed_view, shown_names
from arena.ui.loading import TabLoader
from arena.ui.messages import chat_message
from arena.ui.voter import (
    TermsGate,
    new_voter,
    terms_area_options,
    terms_panel_options,
    terms_visibility,
    voter_from,
    voter_token,
)
from storage.vocabulary import ANONY, NAMED, TIE, TIE_BOTHBAD, WIN_A, WIN_B

#: The vote buttons: element id, label, and the winner a click records.
VOTES = (
    ("vote-a", "👈 A is better", WIN_A),
    ("vote-b", "👉 B is better", WIN_B),
    ("vote-tie", "🤝 Tie", TIE),
    ("vote-bothbad", "👎 Both are bad", TIE_BOTHBAD),
)

INTRO = """## ⚔️ Battle: two anonymous vision-language models
Upload one or more images, ask a question, and compare the two answers. The models' names are
revealed after you vote. You can ask follow-up questions before voting. Do not upload private or
personal images: uploads and votes are stored and may be used for research."""

DEMO_NOTICE = """> **Demo roster.** The models in this arena are tiny, *untrained* random-weight models
> built on this machine so the arena runs offline: their answers are gibberish by design. To compare
> real models, write a roster YAML (see `configs/` and the README) and start the arena with
> `python launch.py --config your-roster.yaml`."""


#: Keys 1-4 vote A, B, tie and both-bad once the vote is open, unless the focus is in a text field.
#: Run once on page load (``build_app``); it only clicks the page's own, enabled vote buttons.
KEYBOARD_JS = """
() => {
  if (window.__arenaVoteKeys) return;
  window.__arenaVoteKeys = true;
  const buttons = {"1": "vote-a", "2": "vote-b", "3": "vote-tie", "4": "vote-bothbad"};
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const id = buttons[event.key];
    const target = event.target;
    if (!id || (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)))) return;
    const button = document.getElementById(id);
    if (!button || button.disabled || button.offsetParent === null) return;
    event.preventDefault();
    button.click();
  });
}
"""


def _vote_buttons(enabled: bool) -> list[Any]:
    return [gr.update(interactive=enabled) for _ in VOTES]


#: The tag of a battle started from a bundled example (``ratings --exclude-category example``).
EXAMPLE_TAG = "example"


def _example_files() -> dict[str, list[str]]:
    """The bundled examples' images as files (Gradio's file input takes paths), written once per app."""
    folder = Path(tempfile.mkdtemp(prefix="arena-examples-"))
    files: dict[str, list[str]] = {}
    for item in examples():
        files[item.key] = []
        for index, data in enumerate(item.images, start=1):
            path = folder / f"{item.key}-{index}.png"
            path.write_bytes(data)
            files[item.key].append(str(path))
    return files


SBS_INTRO = """## 👀 Side-by-side: two models of your choice
Choose two models, upload one or more images, ask a question and compare their answers. The names
are shown from the start; these votes are kept apart from the anonymous leaderboard."""


def element_id(name: str, named: bool) -> str:
    """A battle element's id in its mode: the Battle tab keeps ``battle-*``/``vote-*``, the
    side-by-side tab gets ``sbs-*`` (``battle-send`` → ``sbs-send``, ``vote-a`` → ``sbs-vote-a``)."""
    if not named:
        return name
    return "sbs-" + name.removeprefix("battle-")


def model_choices(service: BattleService) -> list[tuple[str, str]]:
    """The side-by-side dropdowns' choices, read from the database's current model settings."""
    return choosable_models(service.specs, service.sampling())


def build_battle_tab(
    service: BattleService, tokens: BattleTokens, voter: gr.BrowserState, *, demo: bool, concurrency: int
) -> tuple[TabLoader, TermsGate]:
    """Lay out the Battle tab (anonymous battles) inside the current Blocks context; returns how the
    tab takes up the voter's battle when the page (re)loads (run it from the app's load event), and its
    terms-of-use gate. ``voter`` is the page's voter token (:mod:`arena.ui.voter`)."""
    loader, gate, _ = _build_tab(service, tokens, voter, named=False, demo=demo, concurrency=concurrency)
    return loader, gate


def build_side_by_side_tab(
    service: BattleService, tokens: BattleTokens, voter: gr.BrowserState, tab: gr.Tab, *, concurrency: int
) -> tuple[TabLoader, TermsGate]:
    """Lay out the Side-by-side tab (named battles between chosen models) inside ``tab``; returns its
    page-load hook and terms gate, as :func:`build_battle_tab`.

    The model lists reach the browser only when the tab is opened (or a named battle is resumed), so
    nothing in the page names a model before an anonymous vote.
    """
    loader, gate, dropdowns = _build_tab(service, tokens, voter, named=True, demo=False, concurrency=concurrency)

    def on_open() -> tuple[Any, ...]:
        choices = model_choices(service)
        return tuple(gr.update(choices=choices) for _ in dropdowns)

    tab.select(on_open, None, list(dropdowns), api_visibility="private", show_progress="hidden")
    return loader, gate


def _build_tab(
    service: BattleService,
    tokens: BattleTokens,
    voter: gr.BrowserState,
    *,
    named: bool,
    demo: bool,
    concurrency: int,
) -> tuple[TabLoader, TermsGate, tuple[gr.Dropdown, ...]]:
    """One battle tab in either mode, behind the terms of use; returns its page-load hook, its terms
    gate and the model dropdowns (named)."""
    # Per-browser state, server side only; dropped after two idle hours so memory stays bounded.
    state = gr.State(None, time_to_live=2 * 3600)
    # What the browser keeps across reloads: only the signed battle token (no model names).
    mode = NAMED if named else ANONY
    token = gr.BrowserState(None, storage_key=f"vlm-arena-{mode}", secret=tokens.browser_secret)
    terms = service.guards.terms
    gr.Markdown(SBS_INTRO if named else INTRO)
    if demo:
        gr.Markdown(DEMO_NOTICE, elem_id="demo-notice")
    # Both are in the page; the browser's hint shows one until the page load settles it (voter.py).
    gated = terms is not None
    with gr.Column(elem_id=element_id("terms-panel", named), **terms_panel_options(gated)) as terms_panel:
        gr.Markdown(terms.text if terms else "", elem_id=element_id("terms-text", named))
        accept = gr.Button(
            "✅ I accept these terms", variant="primary", elem_id=element_id("terms-accept", named)
        )
    with gr.Column(elem_id=element_id("battle-area", named), **terms_area_options(gated)) as battle_area:
        area = _battle_area(service, tokens, state, token, voter, concurrency, named=named)

    def on_accept(
        current: BattleSession | None, saved: Any, saved_voter: Any, request: gr.Request
    ) -> tuple[Any, ...]:
        current = (
            current_state(service, tokens, current, saved, mode)
            or voter_from(service, tokens, saved_voter)
            or new_voter(service, request)
        )
        service.accept_terms(current)
        issued = tokens.issue(current, mode), voter_token(tokens, current)
        return current, *issued, gr.update(visible=False), gr.update(visible=True)

    accepted = accept.click(
        on_accept,
        [state, token, voter],
        [state, token, voter, terms_panel, battle_area],
        api_visibility="private",
        show_progress="hidden",
    )

    def on_load(request: gr.Request | None, saved: Any, saved_voter: Any) -> tuple[Any, ...]:
        """Take up the voter's battle from the browser's token (a reload, a restart, another process),
        or else at least the voter (and whether they accepted the terms) from the page's voter token."""
        resumed = resume(service, tokens, saved, mode)
        if resumed is None:
            known = voter_from(service, tokens, saved_voter)
            resumed = None if known is None else Resumed(known, [])
        view = resumed_view(service, resumed, named=named)
        current = view["state"]
        accepted = terms is None or (current is not None and current.terms_version == terms.version)
        models = view["models"]
        # A resumed named battle lists only its own two models (which the voter chose).
        pair = [choice for choice in model_choices(service) if models and choice[1] in models]
        chosen = tuple(
            gr.update(choices=pair, value=name, interactive=False) for name in models or ()
        ) or tuple(gr.update() for _ in area.dropdowns)
        return (
            current,
            tokens.issue(current, mode) if current is not None else gr.update(),
            *terms_visibility(accepted, request),
            view["chat_a"],
            view["chat_b"],
            view["name_a"],
            view["name_b"],
            *_vote_buttons(view["votes"]),
            view["send"],
            view["regenerate"],
            view["status"],
            *chosen,
        )

    outputs = [
        state, token, terms_panel, battle_area, area.chat_a, area.chat_b, area.name_a, area.name_b,
        *area.vote_buttons, area.send, area.regenerate, area.status, *area.dropdowns,
    ]  # fmt: skip
    gate = TermsGate(accepted, terms_panel, battle_area)
    return TabLoader(on_load, [token, voter], outputs, wants_request=True), gate, area.dropdowns


@dataclass(frozen=True)
class BattleArea:
    """The elements of a battle tab that a page load fills in."""

    chat_a: gr.Chatbot
    chat_b: gr.Chatbot
    name_a: gr.Markdown
    name_b: gr.Markdown
    vote_buttons: list[gr.Button]
    send: gr.Button
    regenerate: gr.Button
    status: gr.Markdown
    dropdowns: tuple[gr.Dropdown, ...]


def _without_last_answer(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A chat without its last assistant message (the answer being regenerated)."""
    history = list(history or [])
    if history and history[-1].get("role") == "assistant":
        history.pop()
    return history


def _battle_area(
    service: BattleService,
    tokens: BattleTokens,
    state: gr.State,
    token: gr.BrowserState,
    voter: gr.BrowserState,
    concurrency: int,
    *,
    named: bool,
) -> BattleArea:
    """The chat windows, vote buttons, uploads and prompt of a battle tab, with their events.

    ``named``: the voter chooses the two models (``sbs-model-a/b``) and sees their names at once; the
    battle is stored with mode ``named``. Otherwise the models are drawn and stay secret until the vote.
    """

    def eid(name: str) -> str:
        return element_id(name, named)

    mode = NAMED if named else ANONY

    def resolved(current: BattleSession | None, saved: Any) -> BattleSession | None:
        """This page's state if it is in step with the database; else the one its battle token
        rebuilds (this process holds none, or another process moved the battle on)."""
        return current_state(service, tokens, current, saved, mode)

    dropdowns: tuple[gr.Dropdown, ...] = ()
    if named:
        with gr.Row():
            dropdowns = (
                gr.Dropdown([], label="Model A", elem_id="sbs-model-a", interactive=True),
                gr.Dropdown([], label="Model B", elem_id="sbs-model-b", interactive=True),
            )
    chosen: tuple[Any, Any] = (dropdowns[0], dropdowns[1]) if named else (gr.State(None), gr.State(None))
    with gr.Row(equal_height=True):
        chat_a = gr.Chatbot(label="Model A", elem_id=eid("battle-answer-a"), height=420, buttons=["copy"])
        chat_b = gr.Chatbot(label="Model B", elem_id=eid("battle-answer-b"), height=420, buttons=["copy"])
    with gr.Row():
        name_a = gr.Markdown("", elem_id=eid("battle-name-a"))
        name_b = gr.Markdown("", elem_id=eid("battle-name-b"))
    with gr.Row():
        vote_buttons = [gr.Button(label, elem_id=eid(vid), interactive=False) for vid, label, _ in VOTES]
    status = gr.Markdown("", elem_id=eid("battle-status"))
    with gr.Row(visible=False, elem_id=eid("vote-reason-row")) as reason_row:
        reason = gr.Textbox(
            label=f"Why? (optional, up to {MAX_VOTE_REASON_CHARS} characters)",
            placeholder="What made one answer better?",
            max_length=MAX_VOTE_REASON_CHARS,
            elem_id=eid("vote-reason"),
            scale=4,
        )
        reason_send = gr.Button("Save reason", elem_id=eid("vote-reason-send"), scale=1, size="sm")
    with gr.Row():
        images = gr.File(
            label="Images",
            file_count="multiple",
            file_types=["image"],
            elem_id=eid("battle-images"),
            scale=1,
        )
        prompt = gr.Textbox(
            label="Prompt",
            placeholder="Ask something about the images and press Send",
            lines=3,
            elem_id=eid("battle-prompt"),
            scale=3,
        )
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id=eid("battle-send"))
        regenerate = gr.Button("🔄 Regenerate", elem_id=eid("battle-regenerate"), interactive=False)
        example = gr.Button("🖼️ Example", elem_id=eid("battle-example"))
        new_round = gr.Button("🎲 New round", elem_id=eid("battle-new-round"))
    # The key of the bundled example that filled the inputs, until the next round (tags the battle).
    example_key = gr.State(None)
    example_files = _example_files()
    picker = random.Random()

    def on_example() -> tuple[Any, ...]:
        chosen_example = pick(picker)
        return example_files[chosen_example.key], chosen_example.prompt, chosen_example.key

    example.click(
        on_example, None, [images, prompt, example_key], api_visibility="private", show_progress="hidden"
    )

    def unchanged(current: BattleSession | None, message: str) -> tuple[Any, ...]:
        """The outputs of a refused send or regenerate: only the state and the status change."""
        keep = gr.update()
        return (current, keep, keep, keep, keep, keep, keep, *_vote_buttons(False), keep, keep, message, keep, keep)

    async def answers(
        current: BattleSession,
        history_a: list[dict[str, Any]],
        history_b: list[dict[str, Any]],
        clear_inputs: bool,
    ) -> AsyncIterator[tuple[Any, ...]]:
        """Stream the current turn's two answers into the chats; unlock vote and regenerate at the end.
        The first update hands the browser the battle's token (a reload takes the battle up again)."""
        lock = gr.update(interactive=False)
        shown = shown_names(service, current) if current.mode == "named" else ("", "")
        issued: Any = tokens.issue(current, mode)
        issued_voter: Any = voter_token(tokens, current)
        async for update in service.stream(current):
            answer_a = {"role": "assistant", "content": update.text_a or "…"}
            answer_b = {"role": "assistant", "content": update.text_b or "…"}
            note = ""
            ok = update.done and not update.failed
            if update.done:
                note = (
                    "⚠️ " + NEUTRAL_FAILURE
                    if update.failed
                    else "Both answers are in: vote, or ask a follow-up."
                )
            yield (
                current,
                [*history_a, answer_a],
                [*history_b, answer_b],
                "" if update.done and clear_inputs else gr.update(),
                None if update.done and clear_inputs else gr.update(),
                *shown,
                *_vote_buttons(ok),
                gr.update(interactive=ok) if update.done else lock,
                gr.update(interactive=ok) if update.done else lock,
                note,
                issued,
                issued_voter,
            )
            issued = issued_voter = gr.update()

    async def on_send(
        files: list[str] | None,
        text: str,
        current: BattleSession | None,
        history_a: list[dict[str, Any]] | None,
        history_b: list[dict[str, Any]] | None,
        from_example: str | None,
        model_a: str | None,
        model_b: str | None,
        saved: Any,
        saved_voter: Any,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        current = await asyncio.to_thread(resolved, current, saved) or await asyncio.to_thread(
            voter_from, service, tokens, saved_voter
        )
        current = current or new_voter(service, request)
        paths = [str(f) for f in files or []]
        try:
            if named and not (model_a and model_b):
                raise ArenaError("Please choose two models first.")
            models = (model_a, model_b) if named and model_a and model_b else None
            # Image decoding, moderation and the database write run off the event loop.
            uploads = await asyncio.to_thread(lambda: [Path(p).read_bytes() for p in paths])
            names = [Path(p).name for p in paths]
            tags = (EXAMPLE_TAG,) if from_example else ()
            await asyncio.to_thread(service.start_turn, current, text, uploads, names, tags, models)
        except ArenaError as exc:
            gr.Warning(str(exc))
            yield unchanged(current, f"⚠️ {exc}")
            return
        user = chat_message("user", text.strip(), paths)
        async for outputs in answers(current, [*(history_a or []), user], [*(history_b or []), user], True):
            yield outputs

    async def on_regenerate(
        current: BattleSession | None,
        history_a: list[dict[str, Any]] | None,
        history_b: list[dict[str, Any]] | None,
        saved: Any,
    ) -> AsyncIterator[tuple[Any, ...]]:
        current = await asyncio.to_thread(resolved, current, saved)
        try:
            if current is None:
                raise ArenaError("There is nothing to regenerate yet.")
            await asyncio.to_thread(service.regenerate, current)
        except ArenaError as exc:
            gr.Warning(str(exc))
            yield unchanged(current, f"⚠️ {exc}")
            return
        async for outputs in answers(
            current, _without_last_answer(history_a), _without_last_answer(history_b), False
        ):
            yield outputs

    stream_outputs = [
        state, chat_a, chat_b, prompt, images, name_a, name_b, *vote_buttons, send, regenerate, status, token, voter
    ]  # fmt: skip
    for trigger in (send.click, prompt.submit):
        event = trigger(
            on_send,
            [images, prompt, state, chat_a, chat_b, example_key, *chosen, token, voter],
            stream_outputs,
            concurrency_limit=concurrency,
            concurrency_id="battle",
            api_visibility="private",
            show_progress="hidden",
        )
        if named:  # the chosen models are fixed for the battle, until New round
            event.then(
                lambda current: tuple(
                    gr.update(interactive=current is None or current.battle_id is None) for _ in dropdowns
                ),
                [state],
                list(dropdowns),
                api_visibility="private",
                show_progress="hidden",
            )
    regenerate.click(
        on_regenerate,
        [state, chat_a, chat_b, token],
        stream_outputs,
        concurrency_limit=concurrency,
        concurrency_id="battle",
        api_visibility="private",
        show_progress="hidden",
    )

    def on_vote(winner: str, current: BattleSession | None, saved: Any) -> tuple[Any, ...]:
        keep = gr.update()
        current = resolved(current, saved)
        if current is None:
            gr.Warning("There is no battle to vote on yet.")
            return (current, keep, keep, *_vote_buttons(False), keep, keep, keep, keep)
        try:
            reveal = service.vote(current, winner)
        except ArenaError as exc:
            gr.Warning(str(exc))
            return (current, keep, keep, *_vote_buttons(False), keep, keep, f"⚠️ {exc}", keep)
        thanks = "Thanks for voting! Press New round for another battle."
        return (
            current,
            f"Model A: **{reveal.display_a}**",
            f"Model B: **{reveal.display_b}**",
            *_vote_buttons(False),
            gr.update(interactive=False),
            gr.update(interactive=False),
            f"⚠️ {reveal.notice} {thanks}" if reveal.notice else thanks,
            gr.update(visible=True),
        )

    for button, (_, _, winner) in zip(vote_buttons, VOTES, strict=True):
        button.click(
            partial(on_vote, winner),
            [state, token],
            [state, name_a, name_b, *vote_buttons, send, regenerate, status, reason_row],
            api_visibility="private",
            show_progress="hidden",
        )

    def on_reason(text: str, current: BattleSession | None, saved: Any) -> tuple[Any, ...]:
        current = resolved(current, saved)
        if current is None:
            return gr.update(), gr.update()
        try:
            service.add_reason(current, text)
        except ArenaError as exc:
            gr.Warning(str(exc))
            return gr.update(), f"⚠️ {exc}"
        return gr.update(visible=False), "Thanks, your reason was saved. Press New round for another battle."

    for trigger in (reason_send.click, reason.submit):
        trigger(
            on_reason,
            [reason, state, token],
            [reason_row, status],
            api_visibility="private",
            show_progress="hidden",
        )

    new_round_outputs = [
        state, chat_a, chat_b, name_a, name_b, *vote_buttons, send, regenerate, status, reason_row, reason,
        example_key, *dropdowns, token,
    ]  # fmt: skip

    def on_new_round(current: BattleSession | None, saved: Any) -> tuple[Any, ...]:
        current = resolved(current, saved)
        if current is not None:
            try:
                current = service.reset(current)
            except ArenaError as exc:
                gr.Warning(str(exc))
                return (current, *(gr.update() for _ in new_round_outputs[1:]))
        unlock = gr.update(interactive=True)
        cleared = (current, [], [], "", "", *_vote_buttons(False), unlock, gr.update(interactive=False))
        fresh_token = tokens.issue(current, mode) if current is not None else gr.update()
        return (*cleared, "", gr.update(visible=False), "", None, *(unlock for _ in dropdowns), fresh_token)

    new_round.click(
        on_new_round, [state, token], new_round_outputs, api_visibility="private", show_progress="hidden"
    )
    return BattleArea(chat_a, chat_b, name_a, name_b, vote_buttons, send, regenerate, status, dropdowns)
