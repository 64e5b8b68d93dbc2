"""The public Leaderboard tab: the latest snapshot, never a fit.

It is filled when the tab is selected (never at page load, so a page in the middle of a battle carries
no model names). Everything shown comes from ``SnapshotService.current`` (memory); before the first
snapshot exists the tab says the leaderboard is being computed. ``LeaderboardPage`` turns a snapshot into
what the tab shows and is tested without a browser; the Gradio callbacks only pass values through.
"""

from __future__ import annotations

import csv
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from analysis.plots import ratings_figure
from arena.snapshots import Snapshot, SnapshotService
from arena.views import CATEGORY_PREFIX, format_interval

#: The category selector's choice for every vote.
ALL = "All"
COLUMNS = ["Rank (UB)", "Model", "Arena rating", "95% CI", "Votes", "Organization", "License", "Link"]
DATATYPES: list[Literal["str", "number", "markdown"]] = [
    "number",
    "str",
    "number",
    "str",
    "number",
    "str",
    "str",
    "markdown",
]
#: The CSV download: the table's columns, with the interval bounds as numbers and the link as a URL.
CSV_COLUMNS = [*COLUMNS[:4], "CI lower", "CI upper", *COLUMNS[4:]]
COMPUTING = "The leaderboard is being computed. Please check back in a minute."
CI_NAMES = {"sandwich": "sandwich (robust) standard errors", "bootstrap": "bootstrap rounds"}


@dataclass(frozen=True)
class Board:
    """Everything the tab shows for one choice of category and style."""

    table: pd.DataFrame
    #: "Last updated …" (UTC, says "stale" when the latest refresh failed), or that it is computing
    updated: str
    #: the models listed as "not enough votes yet" (empty when there are none)
    pending: str
    note: str
    figure: go.Figure | None
    #: the table as a CSV file to download (None when there is no table)
    csv_path: str | None
    categories: list[str]
    category: str


def _link(url: str) -> str:
    return f"[link]({url})" if url else ""


def board_table(snapshot: Snapshot) -> pd.DataFrame:
    """The rated models of a snapshot as the tab's table (display names, ``+12 / −9`` intervals)."""
    rows = [
        {
            "Rank (UB)": r["rank_ub"],
            "Model": r["display_name"] + (" (deprecated)" if r.get("deprecated") else ""),
            "Arena rating": round(r["rating"]),
            "95% CI": format_interval(r["rating"], r["ci_lower"], r["ci_upper"]),
            "Votes": r["num_battles"],
            "Organization": r.get("organization", ""),
            "License": r.get("license", ""),
            "Link": _link(r.get("link", "")),
        }
        for r in snapshot.payload["rows"]
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def updated_text(snapshot: Snapshot) -> str:
    """When the snapshot was computed (UTC), and that it is stale when its latest refresh failed."""
    text = f"Last updated {snapshot.computed_at:%Y-%m-%d %H:%M} UTC"
    if snapshot.stale:
        text += " (stale: the latest update did not finish, so this is the last good leaderboard)"
    return text


def pending_text(snapshot: Snapshot) -> str:
    """The models that have no rating yet, with their votes so far."""
    waiting = snapshot.payload.get("not_enough_votes", [])
    if not waiting:
        return ""
    names = ", ".join(
        f"{w['display_name']} ({w['votes']} vote{'s' if w['votes'] != 1 else ''})" for w in waiting
    )
    need = snapshot.payload.get("min_votes")
    return (
        f"**Not enough votes yet** (a model is rated once it has {need} votes and has both won and lost "
        f"against rated models): {names}"
    )


def note_text(snapshot: Snapshot) -> str:
    """What the table is: how many votes, which method and intervals."""
    payload = snapshot.payload
    unavailable = payload.get("extras", {}).get("unavailable")
    if unavailable:
        return f"{snapshot.title}: not available yet ({unavailable})."
    total = int(payload.get("total_votes", 0))
    if not payload["rows"]:
        return (
            f"{total:,} vote{'s' if total != 1 else ''} so far: no model has enough votes for a rating yet."
        )
    ci = CI_NAMES.get(str(payload.get("ci")), str(payload.get("ci")))
    return (
        f"{snapshot.title}: {total:,} votes. Ratings have mean 1000; 95% intervals from {ci}; "
        "rank (UB) = 1 + the number of models statistically better."
    )


def write_csv(table: pd.DataFrame, snapshot: Snapshot, path: Path) -> None:
    """The table as CSV, with plain numbers for the interval bounds and plain URLs for links."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for shown, row in zip(table.itertuples(index=False), snapshot.payload["rows"], strict=True):
            values = list(shown)
            writer.writerow(
                [
                    *values[:4],
                    f"{row['ci_lower']:.1f}",
                    f"{row['ci_upper']:.1f}",
                    *values[4:7],
                    row.get("link", ""),
                ]
            )


class LeaderboardPage:
    """Builds what the public tab shows from the snapshots held in memory (never computes ratings).

    The plot and the CSV file of a snapshot are made once and reused until the snapshot changes.
    """

    def __init__(self, snapshots: SnapshotService, files_dir: Path | None = None) -> None:
        self.snapshots = snapshots
        self.files_dir = files_dir or Path(tempfile.mkdtemp(prefix="arena-leaderboard-"))
        self._lock = threading.Lock()
        self._made: dict[str, tuple[tuple[Any, ...], go.Figure | None, str | None]] = {}

    def categories(self) -> list[str]:
        """The categories that have a public view, most voted first."""
        return [v.category for v in self.snapshots.views() if v.category]

    def show(self, category: str | None, style: bool) -> Board:
        """The board for a category ("All" or a tag) with or without style control."""
        categories = self.categories()
        category = category if category in categories else ALL
        extra = ""
        if category == ALL:
            key = "bt-style" if style else "bt"
        else:
            key = f"{CATEGORY_PREFIX}{category}"
            if style:
                extra = " Style control is computed for all votes only; this category is shown without it."
        snapshot = self.snapshots.current(key)
        empty = pd.DataFrame(columns=COLUMNS)
        if snapshot is None:
            return Board(empty, COMPUTING, "", "", None, None, [ALL, *categories], category)
        table = board_table(snapshot)
        figure, path = self._figure_and_csv(snapshot, table)
        return Board(
            table=table,
            updated=updated_text(snapshot),
            pending=pending_text(snapshot),
            note=note_text(snapshot) + extra,
            figure=figure,
            csv_path=path,
            categories=[ALL, *categories],
            category=category,
        )

    def _figure_and_csv(self, snapshot: Snapshot, table: pd.DataFrame) -> tuple[go.Figure | None, str | None]:
        stamp = (snapshot.computed_at, snapshot.data_version, snapshot.stale)
        with self._lock:
            made = self._made.get(snapshot.view)
            if made is not None and made[0] == stamp:
                return made[1], made[2]
            figure: go.Figure | None = None
            path: str | None = None
            if len(table):
                rows = snapshot.payload["rows"]
                frame = pd.DataFrame(
                    {
                        "model": [r["display_name"] for r in rows],
                        "rating": [r["rating"] for r in rows],
                        "ci_lower": [r["ci_lower"] for r in rows],
                        "ci_upper": [r["ci_upper"] for r in rows],
                        "rank_ub": [r["rank_ub"] for r in rows],
                        "num_battles": [r["num_battles"] for r in rows],
                    }
                )
                figure = ratings_figure(frame, title=f"{snapshot.title}: ratings with 95% intervals")
                slug = re.sub(r"[^A-Za-z0-9]+", "-", snapshot.view).strip("-")
                file = self.files_dir / f"leaderboard-{slug}-{snapshot.computed_at:%Y%m%d-%H%M%S}.csv"
                write_csv(table, snapshot, file)
                path = str(file)
            if made is not None and made[2] is not None and made[2] != path:
                # Gradio copied it into its own cache when it was served; one file per view is kept here
                Path(made[2]).unlink(missing_ok=True)
            self._made[snapshot.view] = (stamp, figure, path)
            return figure, path


def build_leaderboard_tab(snapshots: SnapshotService, tab: gr.Tab) -> None:
    """The tab's components and callbacks; the table is filled when the tab is selected."""
    page = LeaderboardPage(snapshots)
    updated = gr.Markdown("Open this tab to see the leaderboard.", elem_id="leaderboard-updated")
    with gr.Row():
        category = gr.Dropdown(
            choices=[ALL], value=ALL, label="Category", elem_id="leaderboard-category", interactive=True
        )
        style = gr.Checkbox(value=False, label="Style-controlled", elem_id="leaderboard-style")
        refresh = gr.Button("Refresh", elem_id="leaderboard-refresh", size="sm")
    table = gr.Dataframe(
        headers=COLUMNS, datatype=DATATYPES, interactive=False, elem_id="leaderboard-table", wrap=True
    )
    pending = gr.Markdown("", elem_id="leaderboard-pending")
    note = gr.Markdown("", elem_id="leaderboard-note")
    download = gr.DownloadButton("Download CSV", elem_id="leaderboard-csv", visible=False, size="sm")
    plot = gr.Plot(label="Ratings with 95% intervals", elem_id="leaderboard-plot")

    def show(choice: str | None, styled: bool) -> tuple[Any, ...]:
        board = page.show(choice, bool(styled))
        return (
            gr.update(choices=board.categories, value=board.category),
            board.table,
            board.updated,
            board.pending,
            board.note,
            board.figure,
            gr.update(value=board.csv_path, visible=board.csv_path is not None),
        )

    outputs = [category, table, updated, pending, note, plot, download]
    for trigger in (tab.select, refresh.click, category.input, style.input):
        trigger(show, [category, style], outputs, api_visibility="private", show_progress="minimal")
