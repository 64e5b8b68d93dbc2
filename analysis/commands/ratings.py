"""``python -m analysis ratings``: a leaderboard (Bradley-Terry family or online Elo) with 95% intervals."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.commands.options import (
    CliError,
    add_anchor_option,
    add_bootstrap_options,
    add_output_options,
    parse_anchor,
)
from analysis.commands.output import emit, render
from analysis.commands.sources import add_source_options, db_filters, from_db, load_battles, self_battles

if TYPE_CHECKING:
    from analysis.ratings import Aggregated

#: The ``--method`` choices; all but ``elo`` are fitted from pair counts.
METHODS: tuple[str, ...] = ("bt", "elo", "davidson", "rao-kupper")
#: The ``--ci`` choices.
CI_KINDS: tuple[str, ...] = ("bootstrap", "sandwich")
#: Tie-model figures ``davidson`` and ``rao-kupper`` add to every JSON/CSV row.
_TIE_FIELDS = ("tie_model", "tie_param_name", "tie_param", "tie_param_ci_lower", "tie_param_ci_upper")

DESCRIPTION = """\
Compute a leaderboard from pairwise battles.

Ratings are on the 400*log10-odds scale (a 400-point gap = 10:1 odds); without --anchor
the mean rating is 1000.
  bt          Bradley-Terry maximum likelihood (a tie counts half a win each way).
  davidson    Davidson / Rao-Kupper: ties modelled with one extra parameter (reported).
  rao-kupper
  elo         classic online Elo (K=4) in timestamp order; the bootstrap resamples battles
              and replays each sample in time order.
95% intervals (--ci): 'bootstrap' (default) resamples battles as one multinomial draw over
the (pair, outcome) counts per round; 'sandwich' is the robust covariance H^-1 G H^-1 of
LMArena's arena-rank (rating +- 1.96 se; bt, davidson, rao-kupper), far cheaper.
With --db, bt/davidson/rao-kupper read only vote counts per model pair and outcome,
aggregated by the database; elo and --style-control read the votes column by column.
rank_ub = 1 + number of models whose CI lower bound is above this model's CI upper bound.
Only anonymous battles count unless --include-named is given."""

EPILOG = """\
examples:
  python -m analysis ratings --db sqlite:///arena.db
  python -m analysis ratings --battles battles.jsonl --anchor gpt-4o=1000 --format json
  python -m analysis ratings --battles clean_battle.json --method elo --bootstrap 100
  python -m analysis ratings --db sqlite:///arena.db --ci sandwich --format json"""


HELP = "leaderboard ratings (Bradley-Terry or online Elo) with bootstrap CIs"


def add_arguments(r: argparse.ArgumentParser) -> None:
    """The ``ratings`` command's options."""
    add_source_options(r)
    r.add_argument(
        "--method",
        choices=METHODS,
        default="bt",
        help="rating method (default: bt); davidson / rao-kupper model ties explicitly and report the "
        "tie parameter",
    )
    r.add_argument(
        "--style-control",
        action="store_true",
        help="Bradley-Terry controlled for answer length (and --style-features), as Chatbot Arena's "
        "style-control view; needs the answers (a database, conversation_a/b or conv_metadata)",
    )
    r.add_argument(
        "--style-features",
        nargs="+",
        default=["length"],
        choices=("length", "header_count", "list_count", "bold_count"),
        metavar="FEATURE",
        help="covariates for --style-control: length header_count list_count bold_count (default: length)",
    )
    r.add_argument(
        "--ci",
        choices=CI_KINDS,
        default="bootstrap",
        help="how the 95%% intervals are computed: bootstrap (default) or sandwich (robust covariance, "
        "as arena-rank; bt, davidson and rao-kupper only)",
    )
    add_bootstrap_options(
        r,
        rounds_help="bootstrap rounds for the 95%% intervals; 0 = no intervals (default: 1000; "
        "not used with --ci sandwich)",
        seed_help="random seed of the bootstrap (default: 0)",
    )
    add_anchor_option(
        r, help="pin one model's rating (e.g. claude-3-sonnet-20240229=1000) instead of mean 1000"
    )
    add_output_options(r, ("table", "json", "csv"), format_help="output format (default: table)")
    r.add_argument("--progress", action="store_true", help="show a bootstrap progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    """The ``ratings`` command: load battles, compute the leaderboard, write it out."""
    anchor = parse_anchor(args.anchor) if args.anchor else None
    if args.style_control and args.method != "bt":
        raise CliError("--style-control is a Bradley-Terry view: use it with --method bt")
    if args.ci == "sandwich" and (args.method == "elo" or args.style_control):
        what = "--style-control" if args.style_control else "--method elo"
        raise CliError(f"--ci sandwich is for bt, davidson and rao-kupper; {what} needs --ci bootstrap")
    # What every method's fit takes: bootstrap rounds, the random generator, the anchor, the progress bar.
    fit: dict[str, Any] = {
        "bootstrap": args.bootstrap,
        "rng": np.random.default_rng(args.seed),
        "anchor": anchor,
        "progress": args.progress,
    }
    extras: dict[str, Any] = {}
    notes: list[str] = []
    if args.method != "elo" and not args.style_control:
        from analysis.pairs import leaderboard_from_counts

        table, info = leaderboard_from_counts(_pair_counts(args), method=args.method, ci=args.ci, **fit)
        if args.method != "bt":
            extras = {k: info[k] for k in _TIE_FIELDS}
            notes.append(
                f"{info['tie_model']} tie parameter {info['tie_param_name']} = {info['tie_param']:.4f} "
                f"(95% CI {info['tie_param_ci_lower']:.4f} to {info['tie_param_ci_upper']:.4f}); "
                f"P(tie) between equal models = {info['tie_prob_equal']:.3f}"
            )
    elif args.style_control:
        from analysis.style import style_ratings_table
        from analysis.style_columns import with_style_columns

        table, coefficients = style_ratings_table(
            with_style_columns(load_battles(args, answers=True)),
            features=args.style_features,
            self_battles=self_battles(args),
            **fit,
        )
        for row in coefficients.to_dict(orient="records"):
            extras[f"{row['feature']}_coefficient"] = float(row["coefficient"])
            notes.append(
                f"style coefficient {row['feature']} = {row['coefficient']:+.4f} "
                f"(95% CI {row['ci_lower']:+.4f} to {row['ci_upper']:+.4f}; log-odds per RMS difference)"
            )
    else:
        from analysis.ratings import ratings_table

        table = ratings_table(
            load_battles(args),
            method=args.method,
            self_battles=self_battles(args),
            **fit,
        )
    emit(render(table, args.format, extras=extras, notes=notes), args.out)
    return 0


def _pair_counts(args: argparse.Namespace) -> Aggregated:
    """Vote counts per model pair and outcome: aggregated by the database (--db), or from the file's
    battles after the same filters and checks as every other method (--battles)."""
    from analysis.ratings import aggregate, validate_battles

    if args.battles is not None:
        fields = ["anony", "tstamp"] + (["category"] if args.category is not None else [])
        return aggregate(validate_battles(load_battles(args, fields=fields), self_battles=self_battles(args)))
    from analysis.io import load_pair_counts_db

    return from_db(args.db, load_pair_counts_db, **db_filters(args))
