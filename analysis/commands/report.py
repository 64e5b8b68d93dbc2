"""``python -m analysis report``: one self-contained HTML report with the tables as CSV files beside it."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from analysis.commands.options import CliError, add_anchor_option, add_bootstrap_options, parse_anchor
from analysis.commands.sources import add_source_options, db_filters, from_db, load_battles, self_battles

if TYPE_CHECKING:
    import pandas as pd

    from analysis.report import Section

DESCRIPTION = """\
Write DIR/index.html (plotly embedded; opens offline) and the tables as CSV files beside it:
the Bradley-Terry and Elo leaderboards with 95% CIs, predicted and observed win rates,
battle counts, votes per model and ratings over time (when battles carry timestamps).
When battles carry tags (from the database, or a 'category' field in a file): how the
ranking changes between all prompts and vision-indispensable prompts (Spearman's rho and
the models whose 95% intervals no longer overlap; see `analysis image-need`) and one
leaderboard per category (see `analysis categorize`)."""


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
    rep.add_argument(
        "--taxonomy",
        metavar="FILE",
        help="taxonomy YAML whose categories get a leaderboard each (default: analysis/taxonomy.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    """The ``report`` command: load battles and write the HTML report with its CSV tables."""
    from analysis.commands.agreement import judge_agreement_sections
    from analysis.io import load_battles_db
    from analysis.report import write_report

    anchor = parse_anchor(args.anchor) if args.anchor else None
    if args.db is not None:
        battles = from_db(args.db, load_battles_db, **db_filters(args), categories=True)
    else:
        battles = load_battles(args)
    path = write_report(
        battles,
        args.out,
        bootstrap=args.bootstrap,
        seed=args.seed,
        title=args.title,
        anchor=anchor,
        progress=True,
        self_battles=self_battles(args),
        extra_sections=[
            *tag_sections(battles, args, anchor),
            *(judge_agreement_sections(args.db) if args.db else ()),
        ],
    )
    print(path)
    return 0


def tag_sections(
    battles: pd.DataFrame, args: argparse.Namespace, anchor: tuple[str, float] | None
) -> list[Section]:
    """The report's sections on tagged prompts: vision-indispensable vs all, and per-category leaderboards."""
    import pandas as pd

    from analysis.aggregation import validate_battles
    from analysis.categorize import load_taxonomy
    from analysis.ranking_shift import category_leaderboards, ranking_shift, tagged
    from storage.labels import VISION_INDISPENSABLE

    if "category" not in battles.columns or len(battles) == 0:
        return []
    try:
        taxonomy = load_taxonomy(args.taxonomy)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    clean = validate_battles(battles, self_battles=self_battles(args))
    sections: list[Section] = []
    if tagged(clean, VISION_INDISPENSABLE).any():
        try:
            shift = ranking_shift(
                clean, VISION_INDISPENSABLE, bootstrap=args.bootstrap, seed=args.seed, anchor=anchor
            )
        except ValueError as exc:
            sections.append(("Vision-indispensable prompts", pd.DataFrame({"note": [str(exc)]})))
        else:
            rho = "n/a (fewer than 3 models)" if math.isnan(shift.spearman) else f"{shift.spearman:.3f}"
            movers = ", ".join(shift.movers) or "none"
            heading = (
                f"Vision-indispensable prompts vs all prompts ({shift.n_subset:,} of {shift.n_battles:,} battles;"
                f" Spearman's rho {rho}; moved beyond their 95% intervals: {movers})"
            )
            sections.append((heading, shift.table))
    per_category = category_leaderboards(clean, taxonomy.category_names)
    if not per_category.empty:
        sections.append(
            (f"Bradley-Terry rating per category ({taxonomy.name}; point estimates)", per_category)
        )
    return sections
