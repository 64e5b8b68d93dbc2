"""The admin page's Leaderboards tab: every snapshot view (public and admin-only), when and how long
it took to compute, the voters' position bias, a stale warning with the refresh error, a Recompute
button, and plotly figures (rating intervals, win rates, battle counts, votes per day) built from the
snapshot's payload.

Nothing here computes ratings: a snapshot is read from :class:`arena.snapshots.SnapshotService`'s
in-memory copy, and the Recompute button only asks its background task to refresh every view.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.plots import (
    battle_count_figure,
    observed_win_fraction_figure,
    ratings_figure,
    votes_per_day_figure,
)
from arena.snapshots import Snapshot, SnapshotService
from arena.ui.admin_models import when
from arena.ui.loading import TabLoader
from arena.views import format_interval

TABLE_COLUMNS = [
    "Rank (UB)",
    "Model",
    "Display name",
    "Rating",
    "95% CI",
    "Votes",
    "Organization",
    "License",
    "Deprecated",
]
PENDING_COLUMNS = ["Model", "Display name", "Votes"]


def table_frame(snapshot: Snapshot | None) -> pd.DataFrame:
    """The rated models of a snapshot as the admin table shows them."""
    rows = snapshot.payload.get("rows", []) if snapshot else []
    return pd.DataFrame(
        [
            [
                r["rank_ub"],
                r["model"],
                r.get("display_name", r["model"]),
                round(r["rating"], 1),
                format_interval(r["rating"], r["ci_lower"], r["ci_upper"]),
                r["num_battles"],
                r.get("organization", ""),
                r.get("license", ""),
                "yes" if r.get("deprecated") else "",
            ]
            for r in rows
        ],
        columns=TABLE_COLUMNS,
    )


def pending_frame(snapshot: Snapshot | None) -> pd.DataFrame:
    """Models listed as "not enough votes yet" in a snapshot."""
    rows = snapshot.payload.get("not_enough_votes", []) if snapshot else []
    return pd.DataFrame(
        [[r["model"], r.get("display_name", r["model"]), r["votes"]] for r in rows], columns=PENDING_COLUMNS
    )


def status_text(snapshot: Snapshot | None) -> str:
    """ "Computed at … (took … s)", what it counts, the position bias (share of decisive votes for the
    left answer), and a stale warning with the error when there is one."""
    if snapshot is None:
        return (
            "⏳ Not computed yet. The background task computes every view at start-up and then whenever "
            "votes change; press **Recompute** to ask for it now."
        )
    payload = snapshot.payload
    text = (
        f"**{snapshot.title}** · Computed at {when(snapshot.computed_at)} UTC "
        f"(took {snapshot.duration_s:.2f} s{', by ' + snapshot.computed_by if snapshot.computed_by else ''})"
        f" · {payload.get('total_votes', 0):,} votes · method {payload.get('method', '?')}, "
        f"intervals {payload.get('ci', '?')} · a model needs {payload.get('min_votes', '?')} votes "
        "for a rating"
    )
    bias = payload.get("position_bias") or {}
    if bias.get("share") is not None:
        text += (
            f"\n\nPosition bias: {bias['share']:.1%} of {bias['decisive']:,} decisive votes went to the "
            f"left answer (A); 95% CI {bias['ci_lower']:.1%} to {bias['ci_upper']:.1%}"
        )
    if snapshot.stale:
        text += (
            f"\n\n⚠️ **Stale**: the last refresh of this view failed, so this is the last good snapshot. "
            f"Error: `{snapshot.error or 'unknown'}`"
        )
    return text


def _empty(title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title={"text": f"{title}: no data yet", "x": 0.01}, template="plotly_white", height=300)
    return fig


def pair_matrices(pair_counts: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(battles, win rate) matrices of a payload's ``pair_counts``: win rate = wins (ties half) / battles."""
    models = [str(m) for m in pair_counts.get("models", [])]
    battles = np.asarray(pair_counts.get("battles", []), dtype=np.float64).reshape(len(models), len(models))
    wins = np.asarray(pair_counts.get("wins", []), dtype=np.float64).reshape(len(models), len(models))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(battles > 0, wins / battles, np.nan)
    return (
        pd.DataFrame(battles, index=models, columns=models),
        pd.DataFrame(rate, index=models, columns=models),
    )


def figures(snapshot: Snapshot | None) -> tuple[go.Figure, go.Figure, go.Figure, go.Figure]:
    """Rating intervals, win-rate heatmap, battle counts and votes per day of a snapshot."""
    payload = snapshot.payload if snapshot else {}
    rows = pd.DataFrame(payload.get("rows", []))
    ratings = ratings_figure(rows, title="Ratings with 95% intervals") if len(rows) else _empty("Ratings")
    pairs = payload.get("pair_counts") or {}
    if pairs.get("models"):
        battles, rate = pair_matrices(pairs)
        win_rate = observed_win_fraction_figure(
            rate, title="Observed win rate of row against column (ties half)"
        )
        counts = battle_count_figure(battles)
    else:
        win_rate, counts = _empty("Win rates"), _empty("Battles per model pair")
    days = pd.DataFrame(payload.get("votes_per_day", []), columns=["day", "votes"])
    per_day = votes_per_day_figure(days) if len(days) else _empty("Votes per day")
    return ratings, win_rate, counts, per_day


def build_leaderboards_tab(snapshots: SnapshotService) -> TabLoader:
    """Lay out the Leaderboards tab in the current Blocks context; returns how it fills itself when opened."""
    with gr.Row():
        view = gr.Dropdown(choices=[], label="View", elem_id="admin-lb-view", scale=3)
        refresh = gr.Button("Show latest", elem_id="admin-lb-refresh", scale=1)
        recompute = gr.Button("Recompute", variant="primary", elem_id="admin-lb-recompute", scale=1)
    status = gr.Markdown("", elem_id="admin-lb-status")
    table = gr.Dataframe(value=table_frame(None), interactive=False, wrap=True, elem_id="admin-lb-table")
    pending = gr.Dataframe(
        value=pending_frame(None),
        interactive=False,
        wrap=True,
        elem_id="admin-lb-pending",
        label="Not enough votes yet",
    )
    ratings = gr.Plot(elem_id="admin-lb-ratings", label="Rating intervals")
    with gr.Row():
        win_rate = gr.Plot(elem_id="admin-lb-winrate", label="Win rates")
        counts = gr.Plot(elem_id="admin-lb-battles", label="Battle counts")
    per_day = gr.Plot(elem_id="admin-lb-votes-per-day", label="Votes per day")

    def show(key: str | None) -> tuple[Any, ...]:
        snapshot = snapshots.current(key) if key else None
        return (status_text(snapshot), table_frame(snapshot), pending_frame(snapshot), *figures(snapshot))

    def load(key: str | None = None) -> tuple[Any, ...]:
        choices = [
            (spec.title + ("" if spec.public else " · admin only"), spec.key)
            for spec in snapshots.views(admin=True)
        ]
        keys = [k for _, k in choices]
        keep = key if key in keys else (keys[0] if keys else None)
        return (gr.update(choices=choices, value=keep), *show(keep))

    def on_recompute(key: str | None) -> tuple[Any, ...]:
        snapshots.request_recompute()
        shown = show(key)
        note = (
            "\n\n🔄 Recompute requested: the process that computes snapshots refreshes every view "
            "in the background (at once if it is this one, else at its next cycle). Press **Show "
            "latest** in a few seconds."
        )
        return (shown[0] + note, *shown[1:])

    outputs = [status, table, pending, ratings, win_rate, counts, per_day]
    private: dict[str, Any] = {"api_visibility": "private"}
    view.input(show, [view], outputs, **private)
    refresh.click(load, [view], [view, *outputs], **private)
    recompute.click(on_recompute, [view], outputs, **private)
    return TabLoader(load, [view], [view, *outputs])
