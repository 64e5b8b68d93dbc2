"""The admin page's Battles & voters tab: problem battles, flagged voters, one battle opened in full
(conversation, images, both answers, the vote), and the exclude/include and ban/unban actions.

Callbacks only turn Gradio values into :class:`arena.admin.AdminService` calls and its records into
tables and chat messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from arena.admin import AdminError, AdminService, AnswerDetail, BattleDetail, FlaggedVoter, ProblemBattle
from arena.ui.admin_models import actor_of, when
from arena.ui.loading import TabLoader

PROBLEM_COLUMNS = ["Battle", "Created (UTC)", "Mode", "State", "Model A", "Model B", "Problems"]
VOTER_COLUMNS = ["Session", "Banned", "Anomalous", "Votes", "Created (UTC)", "User agent"]


def problems_frame(rows: Sequence[ProblemBattle]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            [r.id, when(r.created_at), r.mode, r.state, r.model_a, r.model_b or "", "; ".join(r.problems)]
            for r in rows
        ],
        columns=PROBLEM_COLUMNS,
    )


def voters_frame(rows: Sequence[FlaggedVoter]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            [
                r.session_id,
                "yes" if r.banned else "no",
                "yes" if r.anomalous else "no",
                r.votes,
                when(r.created_at),
                r.user_agent or "",
            ]
            for r in rows
        ],
        columns=VOTER_COLUMNS,
    )


def battle_summary(detail: BattleDetail) -> str:
    """The battle's facts as Markdown: models, state, vote, flags."""
    vote = (
        f"**{detail.winner}** at {when(detail.voted_at)} UTC by `{detail.voter or 'unknown'}`"
        + (f" — reason: {detail.vote_reason}" if detail.vote_reason else "")
        if detail.winner
        else "no vote"
    )
    lines = [
        f"### Battle `{detail.id}`",
        f"- Model A: **{detail.model_a}** · Model B: **{detail.model_b or '(direct chat)'}**",
        f"- Mode: {detail.mode} · state: **{detail.state}**"
        + (f" ({detail.invalid_reason})" if detail.invalid_reason else "")
        + f" · source: {detail.source} · created {when(detail.created_at)} UTC",
        f"- Vote: {vote}",
        f"- Voter session: `{detail.session_id or '—'}`",
        f"- Excluded from ratings: **{'yes' if detail.excluded else 'no'}** · "
        + (detail.leak or "identity leak: no"),
    ]
    if detail.moderation:
        lines.append(f"- Moderation flags: {'; '.join(detail.moderation)}")
    return "\n".join(lines)


def _answer_text(answer: AnswerDetail | None) -> str:
    if answer is None:
        return "*(no answer recorded)*"
    text = answer.text or "*(empty)*"
    if answer.error:
        text += f"\n\n⚠️ error: {answer.error}"
    return text


def conversations(detail: BattleDetail) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Each side's conversation as chat messages; a turn's images are named in its prompt."""
    sides: tuple[list[dict[str, str]], list[dict[str, str]]] = ([], [])
    for turn in detail.turns:
        marks = "".join(f"[image {i}] " for i in range(1, len(turn.images) + 1))
        for messages, answer in zip(sides, (turn.answer_a, turn.answer_b), strict=True):
            messages.append({"role": "user", "content": f"{marks}{turn.prompt}"})
            messages.append({"role": "assistant", "content": _answer_text(answer)})
    return sides


def gallery(detail: BattleDetail) -> list[tuple[Image.Image | None, str]]:
    """The battle's images (read from the image store) with captions naming turn, position and hash."""
    items: list[tuple[Image.Image | None, str]] = []
    for turn in detail.turns:
        for position, ref in enumerate(turn.images, start=1):
            caption = f"turn {turn.index + 1}, image {position}: sha256 {ref.sha256}"
            if ref.path is None:
                continue  # the file is not in this process's image store
            with Image.open(ref.path) as img:
                items.append((img.convert("RGB"), f"{caption} ({ref.path})"))
    return items


def _missing_images(detail: BattleDetail) -> str:
    missing = [ref.sha256 for turn in detail.turns for ref in turn.images if ref.path is None]
    return f"\n- Images not in the image store: {', '.join(missing)}" if missing else ""


def build_battles_tab(admin: AdminService) -> TabLoader:
    """Lay out the Battles & voters tab in the current Blocks context; returns how it fills itself."""
    gr.Markdown(
        "### Problem battles\nInvalid, identity leak, moderation flags, or excluded. Click a row to open it."
    )
    problems = gr.Dataframe(
        value=problems_frame([]), interactive=False, wrap=True, elem_id="admin-problem-battles"
    )
    gr.Markdown("### Flagged voters\nSessions flagged as banned or anomalous. Click a row to pick it.")
    voters = gr.Dataframe(
        value=voters_frame([]), interactive=False, wrap=True, elem_id="admin-flagged-voters"
    )
    refresh = gr.Button("Refresh", elem_id="admin-battles-refresh", size="sm")

    gr.Markdown("### Open a battle")
    with gr.Row():
        battle_id = gr.Textbox(label="Battle id", elem_id="admin-battle-id", scale=3)
        open_button = gr.Button("Open", elem_id="admin-battle-open", scale=1)
        exclude = gr.Button("Exclude from ratings", elem_id="admin-battle-exclude", scale=1)
        include = gr.Button("Count in ratings", elem_id="admin-battle-include", scale=1)
    summary = gr.Markdown("", elem_id="admin-battle-summary")
    images = gr.Gallery(
        label="Images",
        elem_id="admin-battle-images",
        columns=6,
        height=220,
        preview=False,
        object_fit="contain",
        interactive=False,
    )
    with gr.Row(equal_height=True):
        chat_a = gr.Chatbot(label="Model A", elem_id="admin-battle-answer-a", height=380)
        chat_b = gr.Chatbot(label="Model B", elem_id="admin-battle-answer-b", height=380)
    gr.Markdown("### Ban a voter session")
    with gr.Row():
        voter_id = gr.Textbox(label="Voter session id", elem_id="admin-voter-id", scale=3)
        ban = gr.Button("Ban", variant="stop", elem_id="admin-voter-ban", scale=1)
        unban = gr.Button("Lift ban", elem_id="admin-voter-unban", scale=1)
    message = gr.Markdown("", elem_id="admin-battles-message")

    def load() -> tuple[pd.DataFrame, pd.DataFrame]:
        return problems_frame(admin.problem_battles()), voters_frame(admin.flagged_voters())

    def show(identifier: str) -> tuple[Any, ...]:
        try:
            detail = admin.battle_detail(identifier)
        except AdminError as exc:
            return f"❌ {exc}", [], [], [], gr.update()
        chat_left, chat_right = conversations(detail)
        return (
            battle_summary(detail) + _missing_images(detail),
            gallery(detail),
            chat_left,
            chat_right,
            detail.session_id or "",
        )

    def set_excluded(excluded: bool) -> Callable[[str, gr.Request], tuple[Any, ...]]:
        def run(identifier: str, request: gr.Request) -> tuple[Any, ...]:
            try:
                admin.set_battle_excluded(actor_of(request), identifier.strip(), excluded)
            except AdminError as exc:
                return (*load(), *show(identifier), f"❌ Not changed: {exc}")
            done = "excluded from ratings" if excluded else "counted in ratings"
            return (*load(), *show(identifier), f"✅ Battle `{identifier.strip()}` is {done}.")

        return run

    def set_banned(banned: bool) -> Callable[[str, gr.Request], tuple[Any, ...]]:
        def run(session_id: str, request: gr.Request) -> tuple[Any, ...]:
            try:
                admin.set_voter_banned(actor_of(request), session_id.strip(), banned)
            except AdminError as exc:
                return (*load(), f"❌ Not changed: {exc}")
            done = "banned: its votes no longer count" if banned else "no longer banned"
            return (*load(), f"✅ Voter session `{session_id.strip()}` is {done}.")

        return run

    def pick_battle(event: gr.SelectData) -> tuple[Any, ...]:
        identifier = str((event.row_value or [""])[0])
        return identifier, *show(identifier)

    def pick_voter(event: gr.SelectData) -> str:
        return str((event.row_value or [""])[0])

    detail_outputs = [summary, images, chat_a, chat_b, voter_id]
    private: dict[str, Any] = {"api_visibility": "private"}
    refresh.click(load, None, [problems, voters], **private)
    open_button.click(show, [battle_id], detail_outputs, **private)
    battle_id.submit(show, [battle_id], detail_outputs, **private)
    problems.select(pick_battle, None, [battle_id, *detail_outputs], **private)
    voters.select(pick_voter, None, [voter_id], **private)
    for button, flag in ((exclude, True), (include, False)):
        button.click(set_excluded(flag), [battle_id], [problems, voters, *detail_outputs, message], **private)
    for button, flag in ((ban, True), (unban, False)):
        button.click(set_banned(flag), [voter_id], [problems, voters, message], **private)
    return TabLoader(load, [], [problems, voters])
