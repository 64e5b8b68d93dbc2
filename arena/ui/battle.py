"""The Battle tab: upload images, ask, watch two anonymous models answer, vote, see who they were.

Callbacks only translate between Gradio values and :class:`arena.service.BattleService` calls.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from arena.battle_session import BattleSession
from arena.errors import ArenaError
from arena.examples import examples, pick
from arena.service import MAX_VOTE_REASON_CHARS, NEUTRAL_FAILURE, BattleService
from storage.vocabulary import TIE, TIE_BOTHBAD, WIN_A, WIN_B

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


def _chat_message(role: str, text: str, image_paths: list[str] | None = None) -> dict[str, Any]:
    content: list[Any] = [{"path": p} for p in image_paths or []]
    content.append(text)
    return {"role": role, "content": content if len(content) > 1 else text}


def _vote_buttons(enabled: bool) -> list[Any]:
    return [gr.update(interactive=enabled) for _ in VOTES]


def _voter(service: BattleService, request: gr.Request | None) -> BattleSession:
    """A new voter session for this browser tab (the IP address is kept only as a salted hash)."""
    agent = request.headers.get("user-agent") if request else None
    ip = request.client.host if request and request.client else None
    return service.new_session(agent, ip)


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


def build_battle_tab(service: BattleService, *, demo: bool, concurrency: int) -> None:
    """Lay out the Battle tab inside the current Blocks context and wire its events."""
    # Per-browser state, server side only; dropped after two idle hours so memory stays bounded.
    state = gr.State(None, time_to_live=2 * 3600)
    terms = service.guards.terms
    gr.Markdown(INTRO)
    if demo:
        gr.Markdown(DEMO_NOTICE, elem_id="demo-notice")
    with gr.Column(visible=terms is not None, elem_id="terms-panel") as terms_panel:
        gr.Markdown(terms.text if terms else "", elem_id="terms-text")
        accept = gr.Button("✅ I accept these terms", variant="primary", elem_id="terms-accept")
    with gr.Column(visible=terms is None, elem_id="battle-area") as battle_area:
        _battle_area(service, state, concurrency)

    def on_accept(current: BattleSession | None, request: gr.Request) -> tuple[Any, ...]:
        current = current or _voter(service, request)
        service.accept_terms(current)
        return current, gr.update(visible=False), gr.update(visible=True)

    accept.click(
        on_accept,
        [state],
        [state, terms_panel, battle_area],
        api_visibility="private",
        show_progress="hidden",
    )


def _battle_area(service: BattleService, state: gr.State, concurrency: int) -> None:
    """The chat windows, vote buttons, uploads and prompt of the Battle tab, with their events."""
    with gr.Row(equal_height=True):
        chat_a = gr.Chatbot(label="Model A", elem_id="battle-answer-a", height=420, buttons=["copy"])
        chat_b = gr.Chatbot(label="Model B", elem_id="battle-answer-b", height=420, buttons=["copy"])
    with gr.Row():
        name_a = gr.Markdown("", elem_id="battle-name-a")
        name_b = gr.Markdown("", elem_id="battle-name-b")
    with gr.Row():
        vote_buttons = [gr.Button(label, elem_id=eid, interactive=False) for eid, label, _ in VOTES]
    status = gr.Markdown("", elem_id="battle-status")
    with gr.Row(visible=False, elem_id="vote-reason-row") as reason_row:
        reason = gr.Textbox(
            label=f"Why? (optional, up to {MAX_VOTE_REASON_CHARS} characters)",
            placeholder="What made one answer better?",
            max_length=MAX_VOTE_REASON_CHARS,
            elem_id="vote-reason",
            scale=4,
        )
        reason_send = gr.Button("Save reason", elem_id="vote-reason-send", scale=1, size="sm")
    with gr.Row():
        images = gr.File(
            label="Images",
            file_count="multiple",
            file_types=["image"],
            elem_id="battle-images",
            scale=1,
        )
        prompt = gr.Textbox(
            label="Prompt",
            placeholder="Ask something about the images and press Send",
            lines=3,
            elem_id="battle-prompt",
            scale=3,
        )
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="battle-send")
        example = gr.Button("🖼️ Example", elem_id="battle-example")
        new_round = gr.Button("🎲 New round", elem_id="battle-new-round")
    # The key of the bundled example that filled the inputs, until the next round (tags the battle).
    example_key = gr.State(None)
    example_files = _example_files()
    picker = random.Random()

    def on_example() -> tuple[Any, ...]:
        chosen = pick(picker)
        return example_files[chosen.key], chosen.prompt, chosen.key

    example.click(
        on_example, None, [images, prompt, example_key], api_visibility="private", show_progress="hidden"
    )

    async def on_send(
        files: list[str] | None,
        text: str,
        current: BattleSession | None,
        history_a: list[dict[str, Any]] | None,
        history_b: list[dict[str, Any]] | None,
        from_example: str | None,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        current = current or _voter(service, request)
        paths = [str(f) for f in files or []]
        try:
            # Image decoding, moderation and the database write run off the event loop.
            uploads = await asyncio.to_thread(lambda: [Path(p).read_bytes() for p in paths])
            names = [Path(p).name for p in paths]
            tags = (EXAMPLE_TAG,) if from_example else ()
            await asyncio.to_thread(service.start_turn, current, text, uploads, names, tags)
        except ArenaError as exc:
            gr.Warning(str(exc))
            yield (
                current,
                history_a,
                history_b,
                gr.update(),
                gr.update(),
                *_vote_buttons(False),
                gr.update(),
                f"⚠️ {exc}",
            )
            return
        user = _chat_message("user", text.strip(), paths)
        history_a = [*(history_a or []), user]
        history_b = [*(history_b or []), user]
        lock = gr.update(interactive=False)
        async for update in service.stream(current):
            answer_a = {"role": "assistant", "content": update.text_a or "…"}
            answer_b = {"role": "assistant", "content": update.text_b or "…"}
            note = ""
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
                "" if update.done else gr.update(),
                None if update.done else gr.update(),
                *_vote_buttons(update.done and not update.failed),
                gr.update(interactive=update.done and not update.failed) if update.done else lock,
                note,
            )

    send_inputs = [images, prompt, state, chat_a, chat_b, example_key]
    send_outputs = [state, chat_a, chat_b, prompt, images, *vote_buttons, send, status]
    for trigger in (send.click, prompt.submit):
        trigger(
            on_send,
            send_inputs,
            send_outputs,
            concurrency_limit=concurrency,
            concurrency_id="battle",
            api_visibility="private",
            show_progress="hidden",
        )

    def on_vote(winner: str, current: BattleSession | None) -> tuple[Any, ...]:
        if current is None:
            gr.Warning("There is no battle to vote on yet.")
            return (
                current,
                gr.update(),
                gr.update(),
                *_vote_buttons(False),
                gr.update(),
                gr.update(),
                gr.update(),
            )
        try:
            reveal = service.vote(current, winner)
        except ArenaError as exc:
            gr.Warning(str(exc))
            return (
                current,
                gr.update(),
                gr.update(),
                *_vote_buttons(False),
                gr.update(),
                f"⚠️ {exc}",
                gr.update(),
            )
        thanks = "Thanks for voting! Press New round for another battle."
        return (
            current,
            f"Model A: **{reveal.display_a}**",
            f"Model B: **{reveal.display_b}**",
            *_vote_buttons(False),
            gr.update(interactive=False),
            f"⚠️ {reveal.notice} {thanks}" if reveal.notice else thanks,
            gr.update(visible=True),
        )

    for button, (_, _, winner) in zip(vote_buttons, VOTES, strict=True):
        button.click(
            partial(on_vote, winner),
            [state],
            [state, name_a, name_b, *vote_buttons, send, status, reason_row],
            api_visibility="private",
            show_progress="hidden",
        )

    def on_reason(text: str, current: BattleSession | None) -> tuple[Any, ...]:
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
            on_reason, [reason, state], [reason_row, status], api_visibility="private", show_progress="hidden"
        )

    def on_new_round(current: BattleSession | None) -> tuple[Any, ...]:
        if current is not None:
            try:
                current = service.reset(current)
            except ArenaError as exc:
                gr.Warning(str(exc))
                return (
                    current,
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    *_vote_buttons(False),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    gr.update(),
                )
        return (
            current,
            [],
            [],
            "",
            "",
            *_vote_buttons(False),
            gr.update(interactive=True),
            "",
            gr.update(visible=False),
            "",
            None,
        )

    new_round.click(
        on_new_round,
        [state],
        [state, chat_a, chat_b, name_a, name_b, *vote_buttons, send, status, reason_row, reason, example_key],
        api_visibility="private",
        show_progress="hidden",
    )
