"""One self-contained HTML leaderboard report (plus the tables as CSV) from a battle frame.

``write_report`` computes the Bradley–Terry and online-Elo leaderboards (``ratings.ratings_table``),
the derived tables (``analysis.tables``) and their figures (``analysis.plots``), and writes
``out_dir/index.html`` with plotly.js embedded inline exactly once, so the page opens offline from
disk with no network request. Each table is also written as a CSV file beside it.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis import plots
from analysis.ratings import aggregate, ratings_table, validate_battles
from analysis.tables import (
    battle_count_matrix,
    observed_win_fraction,
    predicted_win_rate_matrix,
    ratings_over_time,
    vote_counts,
)
from analysis.voters import position_bias_of_votes
from storage.vocabulary import TIE_BOTHBAD, TIE_WINNERS

#: An extra report section: a heading and a table or a figure.
Section = tuple[str, pd.DataFrame | go.Figure]

DEFAULT_TITLE = "VLM Arena leaderboard"
#: Bootstrap rounds for the online-Elo table when not given: each round replays every battle, so
#: it costs far more than a Bradley–Terry round.
DEFAULT_ELO_BOOTSTRAP_CAP = 100
#: Models are hidden in the rating-over-time figure until they have this many battles.
DEFAULT_HISTORY_MIN_BATTLES = 20

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2933;
       background: #f7f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { margin: 0 0 4px; font-size: 1.7rem; }
h2 { margin-top: 40px; border-bottom: 1px solid #d9dee5; padding-bottom: 4px; font-size: 1.3rem; }
p.note { color: #52606d; font-size: 0.92rem; max-width: 900px; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 4px 18px; }
dl.summary dt { color: #52606d; }
dl.summary dd { margin: 0; font-weight: 600; }
table.report { border-collapse: collapse; font-size: 0.9rem; background: white; margin: 8px 0 16px; }
table.report th, table.report td { padding: 4px 10px; border-bottom: 1px solid #e4e7eb; }
table.report th { text-align: left; background: #eef1f5; }
table.report td.num { text-align: right; font-variant-numeric: tabular-nums; }
div.figure { background: white; border: 1px solid #e4e7eb; border-radius: 4px; margin: 12px 0; }
ul.files { columns: 2; }
"""


@dataclass
class _Page:
    """HTML parts in order; the first figure rendered carries plotly.js."""

    parts: list[str] = field(default_factory=list)
    plotlyjs_done: bool = False

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def heading(self, text: str, level: int = 2) -> None:
        self.add(f"<h{level}>{html.escape(text)}</h{level}>")

    def note(self, text: str) -> None:
        self.add(f'<p class="note">{html.escape(text)}</p>')

    def figure(self, fig: go.Figure) -> None:
        fragment = fig.to_html(
            full_html=False,
            include_plotlyjs=not self.plotlyjs_done,
            include_mathjax=False,
            config={"displaylogo": False, "responsive": True},
            default_width="100%",
        )
        self.plotlyjs_done = True
        self.add(f'<div class="figure">{fragment}</div>')

    def table(self, frame: pd.DataFrame) -> None:
        self.add(table_html(frame))


def _format_column(values: pd.Series) -> list[str]:
    """Cell text for one column: floats with 1 decimal when ratings-sized, else 3; ints as is."""
    if pd.api.types.is_bool_dtype(values):
        return [str(v) for v in values]
    if pd.api.types.is_integer_dtype(values):
        return [str(int(v)) for v in values]
    if pd.api.types.is_float_dtype(values):
        finite = values[np.isfinite(values.to_numpy(dtype=np.float64))]
        digits = 1 if len(finite) and float(finite.abs().max()) >= 100 else 3
        return ["–" if not math.isfinite(v) else f"{v:.{digits}f}" for v in values.to_numpy(dtype=np.float64)]
    return ["–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]


def table_html(frame: pd.DataFrame) -> str:
    """A frame as an escaped HTML table (the index is shown unless it is a plain range)."""
    show_index = not isinstance(frame.index, pd.RangeIndex)
    data = frame.reset_index() if show_index else frame
    numeric = [
        pd.api.types.is_numeric_dtype(data[c]) and not pd.api.types.is_bool_dtype(data[c]) for c in data
    ]
    cells = [_format_column(data.iloc[:, j]) for j in range(data.shape[1])]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in data.columns)
    rows = []
    for i in range(len(data)):
        tds = "".join(
            f'<td class="num">{html.escape(cells[j][i])}</td>'
            if numeric[j]
            else f"<td>{html.escape(cells[j][i])}</td>"
            for j in range(data.shape[1])
        )
        rows.append(f"<tr>{tds}</tr>")
    return f'<table class="report"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _auto_freq(tstamp: np.ndarray) -> str | int:
    """Period for the rating history: days, weeks or months by span; 20 equal spans under 3 days."""
    span_days = (float(tstamp.max()) - float(tstamp.min())) / 86_400.0
    if span_days < 3:
        return 20
    if span_days <= 180:
        return "D"
    if span_days <= 3 * 366:
        return "W"
    return "MS"


def _slug(text: str, taken: set[str]) -> str:
    """A file-name-safe, unused name for a section."""
    base = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "section"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _fmt_time(seconds: float) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def _summary(clean: pd.DataFrame, n_models: int, n_pairs: int) -> list[tuple[str, str]]:
    """Rows of the summary block."""
    n = len(clean)
    winner = clean["winner"]
    ties = int(winner.isin(TIE_WINNERS).sum())
    bothbad = int((winner == TIE_BOTHBAD).sum())
    possible = n_models * (n_models - 1) // 2
    rows = [
        ("Battles", f"{n:,}"),
        ("Models", f"{n_models:,}"),
        ("Model pairs compared", f"{n_pairs:,} of {possible:,}"),
        ("Tie share", f"{ties / n:.1%} (of which both bad: {bothbad / n:.1%} of all battles)"),
    ]
    if "tstamp" in clean.columns:
        t = pd.to_numeric(clean["tstamp"], errors="coerce").to_numpy(dtype=np.float64)
        valid = t[np.isfinite(t)]
        if len(valid):
            rows.append(("Date range", f"{_fmt_time(valid.min())} – {_fmt_time(valid.max())}"))
        if len(valid) < n:
            rows.append(("Battles without timestamp", f"{n - len(valid):,}"))
    return rows


def write_report(
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    title: str = DEFAULT_TITLE,
    anchor: tuple[str, float] | None = None,
    progress: bool = False,
    extra_sections: Iterable[Section] = (),
    elo_bootstrap: int | None = None,
    self_battles: Literal["error", "drop"] = "error",
    history_freq: str | int | None = None,
    history_min_battles: int = DEFAULT_HISTORY_MIN_BATTLES,
    heatmap_top: int | None = plots.DEFAULT_HEATMAP_TOP,
    history_top: int | None = plots.DEFAULT_HISTORY_TOP,
) -> Path:
    """Write ``out_dir/index.html`` (self-contained, offline) and the tables as CSV; return the HTML path.

    The page shows a summary (battles, models, tie share, date range when ``tstamp`` exists), the
    Bradley–Terry leaderboard with ``bootstrap`` rounds of 95% intervals, the online-Elo leaderboard
    (``elo_bootstrap`` rounds; default ``min(bootstrap, 100)`` because each round replays every
    battle), the share of decisive votes that went to the left answer (position bias, with a 95% Wilson
    interval), predicted and observed win-rate heatmaps, battle counts per pair, vote counts per model
    and, when battles carry timestamps, the BT rating over time (``history_freq``: a pandas offset
    alias or a number of periods; chosen from the time span when None). ``extra_sections`` are
    ``(title, DataFrame or Figure)`` pairs shown after the two leaderboards. The bootstraps use
    ``numpy.random.default_rng(seed)`` each, so the tables match ``python -m analysis ratings`` with
    the same seed. ``progress`` shows tqdm bars for the bootstraps.
    """
    out = Path(out_dir)
    extras: Sequence[Section] = list(extra_sections)
    for heading, content in extras:
        if not isinstance(content, (pd.DataFrame, go.Figure)):
            raise TypeError(
                f"extra section {heading!r} must hold a pandas DataFrame or a plotly Figure, "
                f"got {type(content).__name__}"
            )
    clean = validate_battles(df, self_battles=self_battles)
    elo_rounds = min(bootstrap, DEFAULT_ELO_BOOTSTRAP_CAP) if elo_bootstrap is None else elo_bootstrap

    def leaderboard(method: Literal["bt", "elo"], rounds: int) -> pd.DataFrame:
        """One leaderboard, its bootstrap drawn from ``default_rng(seed)`` as the ratings CLI does."""
        rng = np.random.default_rng(seed)
        return ratings_table(
            clean, method=method, bootstrap=rounds, rng=rng, anchor=anchor, progress=progress
        )

    bt, elo = leaderboard("bt", bootstrap), leaderboard("elo", elo_rounds)
    bt_rating = pd.Series(bt["rating"].to_numpy(dtype=np.float64), index=bt["model"].astype(str))
    agg = aggregate(clean)
    predicted = predicted_win_rate_matrix(bt_rating)
    observed = observed_win_fraction(agg, order=bt_rating)
    counts = battle_count_matrix(agg, order=bt_rating)
    votes = vote_counts(clean, order=bt_rating)

    history: pd.DataFrame | None = None
    if "tstamp" in clean.columns:
        t = pd.to_numeric(clean["tstamp"], errors="coerce").to_numpy(dtype=np.float64)
        t = t[np.isfinite(t)]
        if len(t):
            freq = _auto_freq(t) if history_freq is None else history_freq
            history = ratings_over_time(
                clean, freq=freq, method="bt", anchor=anchor, min_battles=history_min_battles
            )

    out.mkdir(parents=True, exist_ok=True)
    files: list[tuple[str, str]] = []

    def save(frame: pd.DataFrame, name: str, what: str, *, index: bool) -> None:
        frame.to_csv(out / name, index=index)
        files.append((name, what))

    save(bt, "leaderboard_bt.csv", "Bradley–Terry leaderboard", index=False)
    save(elo, "leaderboard_elo.csv", "online Elo leaderboard", index=False)
    save(votes, "vote_counts.csv", "vote counts per model", index=False)
    save(predicted, "predicted_win_rate.csv", "predicted win rate (BT)", index=True)
    save(observed, "observed_win_fraction.csv", "observed win fraction", index=True)
    save(counts, "battle_counts.csv", "battles per pair", index=True)
    if history is not None:
        save(history, "ratings_over_time.csv", "BT rating over time", index=True)

    page = _Page()
    page.add(f"<h1>{html.escape(title)}</h1>")
    page.heading("Summary")
    rows = _summary(clean, len(agg.models), int(((agg.wins_a + agg.wins_b + agg.ties) > 0).sum()))
    rows.append(
        ("Bootstrap rounds", f"{bootstrap:,} (Bradley–Terry), {elo_rounds:,} (online Elo); seed {seed}")
    )
    if anchor is not None:
        rows.append(("Anchor", f"{anchor[0]} = {anchor[1]:g}"))
    page.add(
        '<dl class="summary">'
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
        + "</dl>"
    )
    bias = position_bias_of_votes(clean["winner"])
    page.heading("Position bias")
    if bias.share is None:
        page.note("No decisive votes: position bias is unknown.")
    else:
        page.note(
            f"{bias.share:.1%} of the {bias.decisive:,} decisive votes (model_a or model_b won) went to the "
            f"left answer (A); 95% Wilson interval {bias.ci_lower:.1%} to {bias.ci_upper:.1%}. Models are "
            "placed left or right at random, so a share away from 50% is the voters' position bias."
        )
    centre = "the anchor model's rating" if anchor is not None else "a mean rating of 1000"
    page.heading("Leaderboard (Bradley–Terry)")
    page.note(
        "Maximum-likelihood Bradley–Terry ratings on the 400·log10-odds scale, centred on "
        f"{centre}; ties count as half a win for each side. ci_lower/ci_upper bound the 95% bootstrap "
        "interval; rank_ub is 1 + the number of models whose lower bound is above this model's upper bound."
    )
    page.table(bt)
    page.figure(plots.ratings_figure(bt, title="Bradley–Terry ratings with 95% confidence intervals"))

    page.heading("Leaderboard (online Elo)")
    page.note("Classic online Elo (K = 4) replayed in time order; the bootstrap resamples battles.")
    page.table(elo)
    page.figure(plots.ratings_figure(elo, title="Online Elo ratings with 95% confidence intervals"))

    taken: set[str] = set()
    for heading, content in extras:
        page.heading(heading)
        if isinstance(content, go.Figure):
            page.figure(content)
        else:
            page.table(content)
            name = f"extra_{_slug(heading, taken)}.csv"
            save(content, name, heading, index=not isinstance(content.index, pd.RangeIndex))

    page.heading("Win rates")
    shown = (
        "" if heatmap_top is None or len(bt) <= heatmap_top else f" The heatmaps show the top {heatmap_top}."
    )
    page.note(
        f"Rows and columns are ordered by Bradley–Terry rating.{shown} Full matrices are in the CSV files."
    )
    page.figure(plots.predicted_win_rate_figure(predicted, top_n=heatmap_top))
    page.figure(plots.observed_win_fraction_figure(observed, top_n=heatmap_top))
    page.heading("Battle counts")
    page.figure(plots.battle_count_figure(counts, top_n=heatmap_top))
    page.heading("Votes per model")
    page.note("ties counts 'tie' votes and bothbad counts 'tie (bothbad)' votes.")
    page.table(votes)
    if history is not None:
        page.heading("Rating over time")
        page.note(
            "Bradley–Terry ratings fitted on all battles up to the end of each period; a model appears "
            f"once it has {history_min_battles} battles."
        )
        page.figure(plots.rating_over_time_figure(history, top_n=history_top))

    page.heading("Files")
    page.add(
        '<ul class="files">'
        + "".join(
            f'<li><a href="{html.escape(name)}">{html.escape(name)}</a> — {html.escape(what)}</li>'
            for name, what in files
        )
        + "</ul>"
    )
    document = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(page.parts)
        + "\n</main>\n</body>\n</html>\n"
    )
    path = out / "index.html"
    path.write_text(document, encoding="utf-8")
    return path


__all__ = ["DEFAULT_TITLE", "Section", "table_html", "write_report"]
