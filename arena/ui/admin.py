"""The admin page: a Gradio Blocks that ``arena/server.py`` serves at ``/admin`` behind a sign-in.

Tabs: Leaderboards (every snapshot view, plots, Recompute), Models (settings, votes, speed, errors;
change a model; the audit log), Battles & voters (problem battles, flagged voters, open a battle,
exclude/include it, ban/unban a session), Judges (stored agreement and comparison figures), Duplicates
(the largest groups of duplicate prompts) and Data (export downloads). Every tab is a thin layer
over :class:`arena.admin.AdminService` and :class:`arena.snapshots.SnapshotService`; data is read
when the page loads (and on Refresh), never when the app is built. The page is only reachable after
sign-in, so it may show model names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from arena.admin import AdminService, JudgeResultRow
from arena.ui.admin_battles import build_battles_tab
from arena.ui.admin_duplicates import build_duplicates_tab
from arena.ui.admin_leaderboards import build_leaderboards_tab
from arena.ui.admin_models import build_models_tab, when
from arena.ui.errors import guard_callbacks
from arena.ui.loading import TabLoader

if TYPE_CHECKING:
    from arena.app import Services

JUDGE_COLUMNS = ["Computed at (UTC)", "Kind", "Subject", "How (parameters)", "Summary", "Id"]
EXPORT_FORMATS = (
    ("fastchat", "FastChat JSON", "one JSON list of battle records (FastChat's clean_battle file)"),
    ("jsonl", "JSON Lines", "one battle record a line"),
    ("parquet", "Parquet", "a Parquet table with the same columns"),
)


def judges_frame(rows: Sequence[JudgeResultRow]) -> pd.DataFrame:
    """Stored analysis results: when, what, about whom, how (parameters) and the headline figures."""
    return pd.DataFrame(
        [
            [when(r.computed_at), r.kind, r.subject, json.dumps(r.params, sort_keys=True), r.summary, r.id]
            for r in rows
        ],
        columns=JUDGE_COLUMNS,
    )


def export_links() -> str:
    """Download links for the streamed export (relative, so they work under any mount prefix)."""
    items = "".join(
        f'<li><a id="admin-export-{key}" href="export?format={key}" download>{label}</a> — {what}</li>'
        for key, label, what in EXPORT_FORMATS
    )
    return (
        "<div id='admin-export'><p>Every voted battle (anonymous and named; direct chats are left "
        "out), in vote order, streamed as it is read. The same files "
        "<code>python -m storage export</code> writes.</p>"
        f"<ul>{items}</ul></div>"
    )


def _build_judges_tab(admin: AdminService) -> TabLoader:
    gr.Markdown(
        "Figures computed by `python -m analysis agreement --db … --judge NAME` and "
        "`python -m analysis compare --db … --judge NAME`, newest first. Click a row for the full result."
    )
    table = gr.Dataframe(value=judges_frame([]), interactive=False, wrap=True, elem_id="admin-judges-table")
    refresh = gr.Button("Refresh", elem_id="admin-judges-refresh", size="sm")
    detail = gr.JSON(label="Result", elem_id="admin-judge-result")

    def load() -> pd.DataFrame:
        return judges_frame(admin.judge_results())

    def pick(event: gr.SelectData) -> dict[str, Any] | None:
        row_id = (event.row_value or [None])[-1]
        for row in admin.judge_results():
            if str(row.id) == str(row_id):
                return {"kind": row.kind, "subject": row.subject, "params": row.params, "result": row.result}
        return None

    refresh.click(load, None, [table], api_visibility="private")
    table.select(pick, None, [detail], api_visibility="private")
    return TabLoader(load, [], [table])


def build_admin_app(services: Services) -> gr.Blocks:
    """The admin Blocks over the given services (mounted at /admin by ``arena.server``).

    The Leaderboards tab is filled when the page loads; every other tab when it is opened (and on its
    Refresh button), so a visit reads only what it shows.
    """
    with gr.Blocks(title="VLM Arena — admin", analytics_enabled=False) as app:
        with gr.Row():
            gr.Markdown("# 🛠️ VLM Arena — admin", elem_id="admin-title")
            gr.HTML('<a href="logout" id="admin-logout">Sign out</a>', elem_id="admin-logout-link")
        with gr.Tabs(elem_id="admin-tabs"):
            with gr.Tab("🏆 Leaderboards", id="leaderboards", elem_id="admin-tab-leaderboards") as boards:
                board_loader = build_leaderboards_tab(services.snapshots)
            with gr.Tab("🤖 Models", id="models", elem_id="admin-tab-models") as models:
                model_loader = build_models_tab(services.admin)
            with gr.Tab("⚔️ Battles & voters", id="battles", elem_id="admin-tab-battles") as battles:
                battle_loader = build_battles_tab(services.admin)
            with gr.Tab("⚖️ Judges", id="judges", elem_id="admin-tab-judges") as judges:
                judge_loader = _build_judges_tab(services.admin)
            with gr.Tab("🔁 Duplicates", id="duplicates", elem_id="admin-tab-duplicates") as duplicates:
                duplicate_loader = build_duplicates_tab(services.admin)
            with gr.Tab("📦 Data", id="data", elem_id="admin-tab-data"):
                gr.HTML(export_links(), elem_id="admin-export-links")
        private: dict[str, Any] = {"api_visibility": "private", "show_progress": "minimal"}
        app.load(board_loader.load, board_loader.inputs, board_loader.outputs, **private)
        for tab, loader in (
            (boards, board_loader),
            (models, model_loader),
            (battles, battle_loader),
            (judges, judge_loader),
            (duplicates, duplicate_loader),
        ):
            tab.select(loader.load, loader.inputs, loader.outputs, **private)
    guard_callbacks(app)
    app.queue(default_concurrency_limit=4)
    return app
