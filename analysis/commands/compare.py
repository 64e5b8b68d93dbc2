"""``python -m analysis compare``: leaderboard-level agreement of a candidate with a reference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from analysis.commands.options import CliError, add_bootstrap_options, add_output_options
from analysis.commands.output import emit, render_figures, to_records
from analysis.commands.sources import judge_frames

DESCRIPTION = """\
Compare a candidate leaderboard with a reference one (Arena-Hard's metrics): Spearman and
Kendall correlation on the shared models, separability of each (share of model pairs whose
95% intervals do not overlap), and agreement with confidence over reference-separable
pairs (+1 same order and separated, +0.5 candidate intervals overlap). Each leaderboard is
a bootstrap table (JSONL: model, score, lower, upper), a FastChat table (model, rating,
rating_q025, rating_q975), our ratings output, or, with --db and --judge, the people's
leaderboard (reference) against the judge's (candidate) from one database."""

EPILOG = """\
examples:
  python -m analysis compare arena.json arena_hard.jsonl --map-candidate names.json
  python -m analysis compare --db sqlite:///arena.db --judge gpt-4o-2024-11-20 --format json"""


HELP = "leaderboard-level agreement: Spearman, Kendall, separability, agreement with CI"


def add_arguments(cmp_: argparse.ArgumentParser) -> None:
    """The ``compare`` command's options."""
    cmp_.add_argument("reference", nargs="?", metavar="REFERENCE", help="reference leaderboard file")
    cmp_.add_argument("candidate", nargs="?", metavar="CANDIDATE", help="candidate leaderboard file")
    cmp_.add_argument(
        "--map-candidate", metavar="FILE", help="JSON object mapping candidate to reference names"
    )
    cmp_.add_argument(
        "--db", metavar="URL", help="compare people's and a judge's leaderboards from this database"
    )
    cmp_.add_argument("--judge", metavar="NAME", help="the judge model's name (with --db)")
    add_bootstrap_options(
        cmp_, rounds_help="with --db: bootstrap rounds", seed_help="with --db: random seed (default: 0)"
    )
    add_output_options(cmp_, ("table", "json"))


def _candidate_map(path: str | None) -> dict[str, Any] | None:
    """The ``--map-candidate`` JSON object (candidate name -> reference name), if given."""
    if not path:
        return None
    try:
        candidate_map = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"name map not found: {path}") from None
    except ValueError as exc:
        raise CliError(f"name map {path} is not valid JSON: {exc}") from None
    if not isinstance(candidate_map, dict):
        raise CliError(f"name map {path} must be a JSON object of candidate -> reference")
    return candidate_map


def run(args: argparse.Namespace) -> int:
    """The ``compare`` command: two leaderboard files, or people against a judge from one database."""
    from analysis.compare import compare
    from analysis.io import save_result
    from analysis.ratings import ratings_table

    candidate_map = _candidate_map(args.map_candidate)
    if args.reference and args.candidate and not (args.db or args.judge):
        for path in (args.reference, args.candidate):
            if not Path(path).is_file():
                raise CliError(f"leaderboard file not found: {path}")
        figures = compare(args.reference, args.candidate, candidate_map=candidate_map)
    elif args.db and args.judge and not (args.reference or args.candidate):
        human, _, judge = judge_frames(args.db, args.judge, template=None, include_named=False)
        judged = judge[judge["winner"].notna()]
        boards = [
            ratings_table(frame, bootstrap=args.bootstrap, rng=np.random.default_rng(args.seed))
            for frame in (human, judged)
        ]
        figures = {
            "reference": "people",
            "candidate": args.judge,
            **compare(*boards, candidate_map=candidate_map),
        }
        save_result(
            args.db,
            "judge_leaderboards",
            args.judge,
            {"bootstrap": args.bootstrap, "seed": args.seed},
            {**figures, "people": to_records(boards[0]), "judge": to_records(boards[1])},
        )
    else:
        raise CliError("give REFERENCE and CANDIDATE files, or --db URL --judge NAME")
    emit(render_figures(figures, args.format), args.out)
    return 0
