"""What the analysis commands print: leaderboards as tables, JSON or CSV, and figure sets."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd


def to_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Leaderboard rows as plain JSON-ready dicts (ratings rounded to 2 decimals)."""
    rows: list[dict[str, Any]] = []
    for rec in table.to_dict(orient="records"):
        rows.append(
            {
                "model": str(rec["model"]),
                "rating": round(float(rec["rating"]), 2),
                "ci_lower": round(float(rec["ci_lower"]), 2),
                "ci_upper": round(float(rec["ci_upper"]), 2),
                "rank_ub": int(rec["rank_ub"]),
                "num_battles": int(rec["num_battles"]),
            }
        )
    return rows


def format_table(table: pd.DataFrame) -> str:
    """An aligned plain-text leaderboard."""
    header = ["rank_ub", "model", "rating", "95% CI", "num_battles"]
    body = [
        [
            str(int(row["rank_ub"])),
            str(row["model"]),
            f"{row['rating']:.1f}",
            f"{row['ci_lower'] - row['rating']:+.1f} / {row['ci_upper'] - row['rating']:+.1f}",
            str(int(row["num_battles"])),
        ]
        for row in table.to_dict(orient="records")
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    left = {1}  # model names left-aligned, numbers right-aligned

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)]) + "\n"


def render(
    table: pd.DataFrame, fmt: str, *, extras: dict[str, Any] | None = None, notes: Sequence[str] = ()
) -> str:
    """Render the leaderboard in the requested output format.

    ``extras`` (e.g. a tie model's parameter) are added to every JSON/CSV row; ``notes`` follow a
    plain-text table.
    """
    rows = [{**row, **(extras or {})} for row in to_records(table)]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return pd.DataFrame(rows).to_csv(index=False)
    return format_table(table) + "".join(f"\n{note}" for note in notes) + ("\n" if notes else "")


def emit(text: str, out: str | None) -> None:
    """Write ``text`` to ``out`` (a path), or to stdout when no path is given."""
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def render_figures(figures: dict[str, Any], fmt: str) -> str:
    """JSON, or one ``name: value`` line per top-level figure (nested parts as compact JSON)."""
    if fmt == "json":
        return json.dumps(figures, indent=2) + "\n"
    lines = []
    for key, value in figures.items():
        if isinstance(value, float):
            shown = f"{value:.4f}"
        elif isinstance(value, dict | list):
            shown = json.dumps(value)
        else:
            shown = str(value)
        lines.append(f"{key:<32} {shown}")
    return "\n".join(lines) + "\n"


__all__ = ["emit", "format_table", "render", "render_figures", "to_records"]
