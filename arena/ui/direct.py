"""The Direct chat tab: pick one model, talk to it with images, and rate each answer (👍 / 👎 / 🚩).

Each answer in the chat window carries the Chatbot's own feedback buttons (👍, 👎, and 🚩 under its
feedback menu); the comment box's text goes with the feedback given. Callbacks only translate between
Gradio values and :class:`arena.direct.DirectChatService` calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from arena.battle_session import BattleSession
from arena.direct import DIRECT_FAILURE, MAX_FEEDBACK_COMMENT_CHARS, DirectChatService
from arena.errors import ArenaError
from arena.resume import BattleTokens
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

#: The Chatbot's feedback options: "Like" and "Dislike" render as thumbs, any other under a flag menu.
FLAG_OPTION = "Flag"
FEEDBACK_OPTIONS = ("Like", "Dislike", FLAG_OPTION)
#: What the Chatbot's ``like`` event reports (``LikeData.liked``) → the feedback kind and its symbol.
LIKED_AS: dict[bool | str, tuple[str, str]] = {
    True: ("up", "👍"),
    False: ("down", "👎"),
    FLAG_OPTION: ("flag", "🚩"),
}

INTRO = """## 💬 Direct chat with one model
Pick a model, upload images if you like, and ask. Rate each answer with the 👍, 👎 or 🚩 under it,
with an optional comment. Direct chats never count towards the leaderboard. Do not upload private or
personal images: uploads and feedback are stored and may be used for research."""


def _answer_number(history: list[dict[str, Any]] | None, index: int | tuple[int, int]) -> int:
    """The 0-based position among the assistant's answers of the chat message at ``index``."""
    position = index if isinstance(index, int) else index[0]
    return sum(1 for message in (history or [])[:position] if message.get("role") == "assistant")


def _person(
    service: DirectChatService, tokens: BattleTokens, saved_voter: Any, request: gr.Request | None
) -> BattleSession:
    """The page's voter (from its voter token: the same person as in the battle tabs), else a new one."""
    return voter_from(service.battle, tokens, saved_voter) or new_voter(service.battle, request)


def _model_choices(service: DirectChatService) -> list[tuple[str, str]]:
    return list(service.models().items())


def build_direct_tab(
    service: DirectChatService,
    tokens: BattleTokens,
    voter: gr.BrowserState,
    tab: gr.Tab,
    *,
    concurrency: int = 1,
) -> tuple[TabLoader, TermsGate]:
    """Lay out the Direct chat tab inside the current Blocks context and wire its events; returns its
    page-load hook (hides the terms for a voter who accepted them) and its terms gate.

    The model list is read each time ``tab`` is selected (models an operator disables, or that fail
    their health checks, leave it), never sent with the page. ``voter`` is the page's voter token.
    """
    state = gr.State(None, time_to_live=2 * 3600)  # server side only; dropped after two idle hours
    terms = service.battle.guards.terms
    gr.Markdown(INTRO)
    # Both are in the page; the browser's hint shows one until the page load settles it (voter.py).
    gated = terms is not None
    with gr.Column(elem_id="direct-terms-panel", **terms_panel_options(gated)) as terms_panel:
        gr.Markdown(terms.text if terms else "", elem_id="direct-terms-text")
        accept = gr.Button("✅ I accept these terms", variant="primary", elem_id="direct-terms-accept")
    with gr.Column(elem_id="direct-area", **terms_area_options(gated)) as area:
        model = _chat_area(service, tokens, state, voter, concurrency)

    def on_accept(current: BattleSession | None, saved_voter: Any, request: gr.Request) -> tuple[Any, ...]:
        current = current or _person(service, tokens, saved_voter, request)
        service.accept_terms(current)
        return current, voter_token(tokens, current), gr.update(visible=False), gr.update(visible=True)

    accepted = accept.click(
        on_accept,
        [state, voter],
        [state, voter, terms_panel, area],
        api_visibility="private",
        show_progress="hidden",
    )

    def on_load(request: gr.Request | None, current: BattleSession | None, saved_voter: Any) -> tuple[Any, ...]:
        current = current or voter_from(service.battle, tokens, saved_voter)
        shown = terms is None or (current is not None and current.terms_version == terms.version)
        return current, *terms_visibility(shown, request)

    def on_select(current: BattleSession | None, chosen: str | None) -> Any:
        if current is not None and current.battle_id is not None:
            return gr.update()  # the model of a running chat stays as it is
        choices = _model_choices(service)
        names = [name for _, name in choices]
        return gr.update(choices=choices, value=chosen if chosen in names else next(iter(names), None))

    tab.select(on_select, [state, model], [model], api_visibility="private", show_progress="hidden")
    loader = TabLoader(on_load, [state, voter], [state, terms_panel, area], wants_request=True)
    return loader, TermsGate(accepted, terms_panel, area)


def _chat_area(
    service: DirectChatService,
    tokens: BattleTokens,
    state: gr.State,
    voter: gr.BrowserState,
    concurrency: int,
) -> gr.Dropdown:
    """The model picker, chat window with feedback per answer, uploads and prompt, with their events."""
    # No names in the page before the tab is opened: the anonymous Battle tab shares the page, and a
    # model list there would tell a voter which models are in the arena. Filled on tab select.
    model = gr.Dropdown(
        choices=[],
        value=None,
        label="Model",
        elem_id="direct-model",
        interactive=True,
    )
    chat = gr.Chatbot(
        label="Chat",
        elem_id="direct-chat",
        height=420,
        buttons=["copy"],
        feedback_options=list(FEEDBACK_OPTIONS),
    )
    comment = gr.Textbox(
        label=f"Comment on an answer (optional, up to {MAX_FEEDBACK_COMMENT_CHARS} characters)",
        placeholder="What was good or wrong? Sent with the next 👍, 👎 or 🚩 you give an answer",
        max_length=MAX_FEEDBACK_COMMENT_CHARS,
        elem_id="direct-comment",
    )
    status = gr.Markdown("", elem_id="direct-status")
    with gr.Row():
        images = gr.File(
            label="Images", file_count="multiple", file_types=["image"], elem_id="direct-images", scale=1
        )
        prompt = gr.Textbox(
            label="Prompt",
            placeholder="Ask something about the images and press Send",
            lines=3,
            elem_id="direct-prompt",
            scale=3,
        )
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="direct-send")
        new_chat = gr.Button("🆕 New chat", elem_id="direct-new")

    async def on_send(
        files: list[str] | None,
        text: str,
        chosen: str | None,
        current: BattleSession | None,
        history: list[dict[str, Any]] | None,
        saved_voter: Any,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        if current is None:
            current = await asyncio.to_thread(_person, service, tokens, saved_voter, request)
        paths = [str(f) for f in files or []]
        try:
            if not chosen:
                raise ArenaError("Please pick a model first.")
            # Image decoding, moderation and the database write run off the event loop.
            uploads = await asyncio.to_thread(lambda: [Path(p).read_bytes() for p in paths])
            names = [Path(p).name for p in paths]
            await asyncio.to_thread(service.start_turn, current, chosen, text, uploads, names)
        except ArenaError as exc:
            gr.Warning(str(exc))
            keep = gr.update()
            yield current, history, keep, keep, keep, keep, f"⚠️ {exc}", keep
            return
        history = [*(history or []), chat_message("user", text.strip(), paths)]
        locked = gr.update(interactive=False)
        issued: Any = voter_token(tokens, current)  # the other tabs act as the same person
        async for update in service.stream(current):
            shown = update.text or "…"
            note = ""
            if update.done:
                shown = update.text if not update.failed else f"⚠️ {DIRECT_FAILURE}"
                note = (
                    "⚠️ " + DIRECT_FAILURE
                    if update.failed
                    else "Rate the answer with 👍, 👎 or 🚩 under it, or ask a follow-up."
                )
            yield (
                current,
                [*history, {"role": "assistant", "content": shown}],
                "" if update.done else gr.update(),
                None if update.done else gr.update(),
                gr.update(interactive=not update.failed) if update.done else locked,
                locked,  # the model of a running chat stays; New chat frees the picker
                note,
                issued,
            )
            issued = gr.update()

    send_inputs = [images, prompt, model, state, chat, voter]
    send_outputs = [state, chat, prompt, images, send, model, status, voter]
    for trigger in (send.click, prompt.submit):
        trigger(
            on_send,
            send_inputs,
            send_outputs,
            concurrency_limit=concurrency,
            concurrency_id="direct",
            api_visibility="private",
            show_progress="hidden",
        )

    def on_rate(
        text: str,
        current: BattleSession | None,
        history: list[dict[str, Any]] | None,
        rated: gr.LikeData,
    ) -> tuple[Any, ...]:
        if current is None:
            gr.Warning("There is no answer to rate yet.")
            return gr.update(), "⚠️ There is no answer to rate yet."
        answer = _answer_number(history, rated.index)
        chosen = LIKED_AS.get(rated.liked)
        try:
            if chosen is None:  # the person clicked their 👍 / 👎 / 🚩 again, which unselects it
                service.withdraw_feedback(current, answer=answer)
            else:
                service.feedback(current, chosen[0], text, answer=answer)
        except ArenaError as exc:
            gr.Warning(str(exc))
            return gr.update(), f"⚠️ {exc}"
        if chosen is None:
            return gr.update(), f"Your 👍 / 👎 on answer {answer + 1} was taken back (a 🚩 stays)."
        return "", f"Thanks, your {chosen[1]} on answer {answer + 1} was saved."

    chat.like(
        on_rate, [comment, state, chat], [comment, status], api_visibility="private", show_progress="hidden"
    )

    def on_new_chat(current: BattleSession | None) -> tuple[Any, ...]:
        if current is not None:
            try:
                current = service.reset(current)
            except ArenaError as exc:
                gr.Warning(str(exc))
                keep = gr.update()
                return current, keep, keep, keep, keep, keep, keep, f"⚠️ {exc}"
        return (
            current,
            [],
            "",
            None,
            "",
            gr.update(interactive=True),
            gr.update(interactive=True, choices=_model_choices(service)),
            "",
        )

    new_chat.click(
        on_new_chat,
        [state],
        [state, chat, prompt, images, comment, send, model, status],
        api_visibility="private",
        show_progress="hidden",
    )
    return model
