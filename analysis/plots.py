"""Plotly figures for the leaderboard: ratings with intervals, win-rate and battle-count heatmaps, history.

Each function takes a table from ``analysis.ratings`` / ``analysis.tables`` and returns a
``plotly.graph_objects.Figure``; nothing here computes ratings, touches files or imports Gradio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: Heatmaps with more models than this show only the top ones (cells become unreadable).
DEFAULT_HEATMAP_TOP: int = 30
#: Lines drawn in the rating-over-time figure.
DEFAULT_HISTORY_TOP: int = 10

_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13}


def _layout(fig: go.Figure, title: str, *, height: int) -> go.Figure:
    """Shared look: white template, title, fixed height (the report stacks figures vertically)."""
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        font=_FONT,
        height=height,
        margin={"l": 60, "r": 30, "t": 60, "b": 60},
    )
    return fig


def ratings_figure(table: pd.DataFrame, *, title: str = "Ratings with 95% confidence intervals") -> go.Figure:
    """Ratings as points with asymmetric CI error bars, best model on the left.

    ``table`` is a leaderboard frame with columns ``model, rating, ci_lower, ci_upper, rank_ub,
    num_battles`` (``ratings.ratings_table`` / ``summarize``).
    """
    t = table.sort_values(["rating", "model"], ascending=[False, True], kind="stable")
    rating = t["rating"].to_numpy(dtype=np.float64)
    custom = np.stack(
        [
            t["ci_lower"].to_numpy(dtype=np.float64),
            t["ci_upper"].to_numpy(dtype=np.float64),
            t["rank_ub"].to_numpy(dtype=np.float64),
            t["num_battles"].to_numpy(dtype=np.float64),
        ],
        axis=-1,
    )
    fig = go.Figure(
        go.Scatter(
            x=t["model"].astype(str).tolist(),
            y=rating,
            mode="markers",
            marker={"size": 9},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": t["ci_upper"].to_numpy(dtype=np.float64) - rating,
                "arrayminus": rating - t["ci_lower"].to_numpy(dtype=np.float64),
                "thickness": 1.5,
                "width": 4,
            },
            customdata=custom,
            hovertemplate=(
                "<b>%{x}</b><br>rating %{y:.1f}<br>95% CI %{customdata[0]:.1f} – %{customdata[1]:.1f}"
                "<br>rank (UB) %{customdata[2]:.0f}<br>battles %{customdata[3]:,.0f}<extra></extra>"
            ),
            name="rating",
        )
    )
    fig.update_xaxes(title_text="model", tickangle=-35 if len(t) > 8 else 0)
    fig.update_yaxes(title_text="rating")
    return _layout(fig, title, height=480)


def _top(matrix: pd.DataFrame, top_n: int | None) -> pd.DataFrame:
    """The first ``top_n`` rows and columns of an ordered square matrix."""
    if top_n is None or len(matrix) <= top_n:
        return matrix
    keep = list(matrix.index[:top_n])
    return matrix.loc[keep, keep]


class HeatmapOptions(TypedDict, total=False):
    """Keywords of the heatmap figures: ``title`` (each figure has its own default) and ``top_n``
    (default ``DEFAULT_HEATMAP_TOP``; None shows every model)."""

    title: str
    top_n: int | None


@dataclass(frozen=True)
class _HeatmapKind:
    """What sets one heatmap figure apart: default title, colours, cell text and hover label."""

    title: str
    colorscale: str
    zmax: float | None
    text_format: str
    hover_label: str


_PREDICTED = _HeatmapKind(
    "Predicted win rate (Bradley–Terry): P(row beats column)", "RdBu", 1.0, "%{z:.2f}", "P(win)"
)
_OBSERVED = _HeatmapKind(
    "Observed win fraction of row against column (ties excluded)", "RdBu", 1.0, "%{z:.2f}", "won"
)
_BATTLES = _HeatmapKind("Battles per model pair", "Blues", None, "%{z:.0f}", "battles")


def _heatmap(matrix: pd.DataFrame, kind: _HeatmapKind, **options: Unpack[HeatmapOptions]) -> go.Figure:
    """Annotated heatmap (colours from 0) with the first row on top; NaN cells stay blank."""
    m = _top(matrix, options.get("top_n", DEFAULT_HEATMAP_TOP))
    rows = [str(r) for r in m.index]
    cols = [str(c) for c in m.columns]
    z = m.to_numpy(dtype=np.float64)
    z_json = [[None if math.isnan(v) else float(v) for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z_json,
            x=cols,
            y=rows,
            colorscale=kind.colorscale,
            zmin=0.0,
            zmax=kind.zmax,
            texttemplate=kind.text_format,
            hovertemplate=f"model %{{y}}<br>vs %{{x}}<br>{kind.hover_label} %{{z}}<extra></extra>",
            hoverongaps=False,
            xgap=1,
            ygap=1,
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="model", type="category")
    # Labels turn once they would overlap (long names, or a figure shown half-width on the admin page).
    crowded = len(cols) > 8 or sum(len(c) for c in cols) > 60
    fig.update_xaxes(side="top", title_text="opponent", tickangle=-35 if crowded else 0, type="category")
    side = max(420, 60 + 34 * len(rows))
    fig = _layout(fig, options.get("title", kind.title), height=side + 60)
    fig.update_layout(margin={"t": 130})
    return fig


def predicted_win_rate_figure(matrix: pd.DataFrame, **options: Unpack[HeatmapOptions]) -> go.Figure:
    """Heatmap of ``tables.predicted_win_rate_matrix`` with the probabilities written in the cells."""
    return _heatmap(matrix, _PREDICTED, **options)


def observed_win_fraction_figure(matrix: pd.DataFrame, **options: Unpack[HeatmapOptions]) -> go.Figure:
    """Heatmap of ``tables.observed_win_fraction``; pairs without decisive battles stay blank."""
    return _heatmap(matrix, _OBSERVED, **options)


def battle_count_figure(matrix: pd.DataFrame, **options: Unpack[HeatmapOptions]) -> go.Figure:
    """Heatmap of ``tables.battle_count_matrix`` with the counts in the cells (diagonal left blank)."""
    counts = matrix.astype(np.float64)
    for model in counts.index.intersection(counts.columns):
        counts.loc[model, model] = np.nan
    return _heatmap(counts, _BATTLES, **options)


def _time_labels(index: pd.Index) -> list[object]:
    """Plotly-friendly x values: naive UTC date-time strings for a datetime index, else as is."""
    if isinstance(index, pd.DatetimeIndex):
        naive = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
        return [ts.strftime("%Y-%m-%d %H:%M:%S") for ts in naive]
    return list(index)


def rating_over_time_figure(
    history: pd.DataFrame,
    *,
    title: str = "Rating over time",
    top_n: int | None = DEFAULT_HISTORY_TOP,
) -> go.Figure:
    """One line per model from ``tables.ratings_over_time``: the ``top_n`` models by latest rating."""
    latest = history.ffill().iloc[-1] if len(history) else pd.Series(dtype=np.float64)
    ranked = sorted(history.columns, key=lambda m: (math.isnan(latest[m]), -np.nan_to_num(latest[m]), str(m)))
    shown = ranked if top_n is None else ranked[:top_n]
    x = _time_labels(history.index)
    fig = go.Figure()
    for model in shown:
        y = history[model].to_numpy(dtype=np.float64)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[None if math.isnan(v) else float(v) for v in y],
                mode="lines+markers" if len(x) <= 40 else "lines",
                name=str(model),
                hovertemplate="<b>%{fullData.name}</b><br>%{x}<br>rating %{y:.1f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="period end (UTC)")
    fig.update_yaxes(title_text="rating")
    return _layout(fig, title, height=480)


def votes_per_day_figure(days: pd.DataFrame, *, title: str = "Votes per day (UTC)") -> go.Figure:
    """Bars of votes per day from a frame with columns ``day`` (``YYYY-MM-DD``, UTC) and ``votes``."""
    t = days.sort_values("day", kind="stable") if len(days) else days
    fig = go.Figure(
        go.Bar(
            x=[str(d) for d in t["day"]] if len(t) else [],
            y=t["votes"].to_numpy(dtype=np.float64) if len(t) else [],
            hovertemplate="%{x}<br>%{y:,.0f} votes<extra></extra>",
            name="votes",
        )
    )
    # A date axis spreads a lone bar over hours; category ticks read better for a day or two.
    fig.update_xaxes(title_text="day (UTC)", type="date" if len(t) > 2 else "category", tickformat="%Y-%m-%d")
    fig.update_yaxes(title_text="votes", rangemode="tozero")
    return _layout(fig, title, height=360)


__all__ = [
    "DEFAULT_HEATMAP_TOP",
    "DEFAULT_HISTORY_TOP",
    "HeatmapOptions",
    "battle_count_figure",
    "observed_win_fraction_figure",
    "predicted_win_rate_figure",
    "rating_over_time_figure",
    "ratings_figure",
    "votes_per_day_figure",
]
