"""``python -m analysis report``: one self-contained HTML report with the tables as CSV files beside it."""

from __future__ import annotations

import argparse

from analysis.commands.options import add_anchor_option, add_bootstrap_options, parse_anchor
from analysis.commands.sources import add_source_options, load_battles, self_battles

DESCRIPTION = """\
Write DIR/index.html (plotly embedded; opens offline) and the tables as CSV files beside it:
the Bradley-Terry and Elo leaderboards with 95% CIs, predicted and observed win rates,
battle counts, votes per model and ratings over time (when battles carry timestamps)."""


HELP = "one self-contained HTML report: leaderboards, win-rate and battle-count heatmaps, history"
EPILOG = "example:\n  python -m analysis report --db sqlite:///arena.db --out report/"


def add_arguments(rep: argparse.ArgumentParser) -> None:
    """The ``report`` command's options."""
    add_source_options(rep)
    rep.add_argument("--out", metavar="DIR", required=True, help="directory for index.html and the CSV files")
    add_bootstrap_options(
        rep,
        rounds_help="BT bootstrap rounds (default: 1000)",
        seed_help="random seed of the bootstraps (default: 0)",
    )
    add_anchor_option(rep, help="pin one model's rating instead of mean 1000")
    rep.add_argument("--title", default="VLM Arena leaderboard", help="the report's title")


def run(args: argparse.Namespace) -> int:
    """The ``report`` command: load battles and write the HTML report with its CSV tables."""
    from analysis.report import write_report

    anchor = parse_anchor(args.anchor) if args.anchor else None
    path = write_report(
        load_battles(args),
        args.out,
        bootstrap=args.bootstrap,
        seed=args.seed,
        title=args.title,
        anchor=anchor,
        progress=True,
        self_battles=self_battles(args),
    )
    print(path)
    return 0
