"""The Leaderboard tab. It is filled when opened (never at page load), so a page in the middle of a
battle carries no model names."""

from __future__ import annotations

import gradio as gr

from arena.leaderboard import COLUMNS, LeaderboardService


def build_leaderboard_tab(service: LeaderboardService, tab: gr.Tab) -> None:
    note = gr.Markdown("Open this tab to compute the current leaderboard.", elem_id="leaderboard-note")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="leaderboard-table", wrap=True)
    refresh = gr.Button("Refresh", elem_id="leaderboard-refresh")

    def show():  # type: ignore[no-untyped-def]
        board = service.current()
        return board.table, board.note

    for trigger in (tab.select, refresh.click):
        trigger(show, None, [table, note], api_visibility="private", show_progress="minimal")
