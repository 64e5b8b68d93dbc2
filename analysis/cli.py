"""Command line for offline analysis: ``python -m analysis <command> ...``.

Commands: ``ratings`` (BT or online-Elo leaderboard with bootstrap confidence intervals), ``report``
(one self-contained HTML file with leaderboards, heatmaps and ratings over time), ``judge`` (an LLM
judge over stored battles), ``agreement`` (judge vs people) and ``compare`` (leaderboard vs
leaderboard).
Errors in the input (unreadable or malformed file, unknown winner, bad anchor, ...) print one line
on stderr and exit with status 2. The judge commands run in ``analysis/cli_judges.py``; output
formatting is ``analysis/cli_output.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import pandas as pd

from analysis.cli_judges import run_agreement, run_compare, run_judge
from analysis.cli_output import CliError, emit, render

if TYPE_CHECKING:
    from analysis.ratings import Aggregated

_T = TypeVar("_T")

EXIT_USAGE = 2
#: The ``--ci`` choices of ``ratings``.
CI_KINDS: tuple[str, ...] = ("bootstrap", "sandwich")


def parse_anchor(text: str) -> tuple[str, float]:
    """Parse ``MODEL=RATING`` (the model name may itself contain '=')."""
    model, sep, value = text.rpartition("=")
    if not sep or not model:
        raise CliError(f"bad --anchor {text!r}: expected MODEL=RATING, e.g. gpt-4o=1000")
    try:
        rating = float(value)
    except ValueError:
        raise CliError(f"bad --anchor {text!r}: RATING must be a number") from None
    if not np.isfinite(rating):
        raise CliError(f"bad --anchor {text!r}: RATING must be finite")
    return model, rating


def _non_negative_int(text: str) -> int:
    """argparse type for a count >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m analysis`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Offline analysis of VLM Arena battles.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser(
        "ratings",
        help="leaderboard ratings (Bradley-Terry or online Elo) with bootstrap CIs",
        description=(
            "Compute a leaderboard from pairwise battles.\n\n"
            "Ratings are on the 400*log10-odds scale (a 400-point gap = 10:1 odds); without --anchor\n"
            "the mean rating is 1000.\n"
            "  bt          Bradley-Terry maximum likelihood (a tie counts half a win each way).\n"
            "  davidson    Davidson / Rao-Kupper: ties modelled with one extra parameter (reported).\n"
            "  rao-kupper\n"
            "  elo         classic online Elo (K=4) in timestamp order; the bootstrap resamples battles\n"
            "              and replays each sample in time order.\n"
            "95% intervals (--ci): 'bootstrap' (default) resamples battles as one multinomial draw over\n"
            "the (pair, outcome) counts per round; 'sandwich' is the robust covariance H^-1 G H^-1 of\n"
            "LMArena's arena-rank (rating +- 1.96 se; bt, davidson, rao-kupper), far cheaper.\n"
            "With --db, bt/davidson/rao-kupper read only vote counts per model pair and outcome,\n"
            "aggregated by the database; elo and --style-control read the votes column by column.\n"
            "rank_ub = 1 + number of models whose CI lower bound is above this model's CI upper bound.\n"
            "Only anonymous battles count unless --include-named is given."
        ),
        epilog=(
            "examples:\n"
            "  python -m analysis ratings --db sqlite:///arena.db\n"
            "  python -m analysis ratings --battles battles.jsonl --anchor gpt-4o=1000 --format json\n"
            "  python -m analysis ratings --battles clean_battle.json --method elo --bootstrap 100\n"
            "  python -m analysis ratings --db sqlite:///arena.db --ci sandwich --format json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(r)
    r.add_argument(
        "--method",
        choices=("bt", "elo", "davidson", "rao-kupper"),
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
        "--bootstrap",
        type=_non_negative_int,
        default=1000,
        metavar="N",
        help="bootstrap rounds for the 95%% intervals; 0 = no intervals (default: 1000; "
        "not used with --ci sandwich)",
    )
    r.add_argument(
        "--ci",
        choices=CI_KINDS,
        default="bootstrap",
        help="how the 95%% intervals are computed: bootstrap (default) or sandwich (robust covariance, "
        "as arena-rank; bt, davidson and rao-kupper only)",
    )
    r.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed of the bootstrap (default: 0)"
    )
    r.add_argument(
        "--anchor",
        metavar="MODEL=RATING",
        help="pin one model's rating (e.g. claude-3-sonnet-20240229=1000) instead of mean 1000",
    )
    r.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format (default: table)"
    )
    r.add_argument("--out", metavar="PATH", help="write the output here instead of stdout")
    r.add_argument("--progress", action="store_true", help="show a bootstrap progress bar on stderr")
    r.set_defaults(func=run_ratings)

    rep = sub.add_parser(
        "report",
        help="one self-contained HTML report: leaderboards, win-rate and battle-count heatmaps, history",
        description=(
            "Write DIR/index.html (plotly embedded; opens offline) and the tables as CSV files beside it:\n"
            "the Bradley-Terry and Elo leaderboards with 95% CIs, predicted and observed win rates,\n"
            "battle counts, votes per model and ratings over time (when battles carry timestamps)."
        ),
        epilog="example:\n  python -m analysis report --db sqlite:///arena.db --out report/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_arguments(rep)
    rep.add_argument("--out", metavar="DIR", required=True, help="directory for index.html and the CSV files")
    rep.add_argument(
        "--bootstrap",
        type=_non_negative_int,
        default=1000,
        metavar="N",
        help="BT bootstrap rounds (default: 1000)",
    )
    rep.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed of the bootstraps (default: 0)"
    )
    rep.add_argument("--anchor", metavar="MODEL=RATING", help="pin one model's rating instead of mean 1000")
    rep.add_argument("--title", default="VLM Arena leaderboard", help="the report's title")
    rep.set_defaults(func=run_report)

    j = sub.add_parser(
        "judge",
        help="have a roster model judge stored battles (both answer orders), storing every verdict",
        description=(
            "Ask a judge model from a roster (any backend; a vision judge also gets the battle's\n"
            "images) which of the two answers of each stored battle is better, once in the battle's\n"
            "order and once swapped. Every raw output and parsed verdict is stored in the database\n"
            "under the judge's name and the prompt template version, so a run resumes where it\n"
            "stopped and never judges twice. Prints a JSON summary."
        ),
        epilog=(
            "example:\n  python -m analysis judge --db sqlite:///arena.db --config configs/example-api.yaml "
            "--judge gpt-4o-2024-11-20 --limit 500 --concurrency 16"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    j.add_argument("--db", metavar="URL", required=True, help="SQLAlchemy database URL of the arena")
    j.add_argument("--config", metavar="FILE", required=True, help="roster YAML that lists the judge model")
    j.add_argument("--judge", metavar="NAME", required=True, help="the judge's name in the roster")
    j.add_argument("--limit", type=_non_negative_int, metavar="N", help="judge at most N battles")
    j.add_argument(
        "--concurrency", type=_positive_int, default=8, metavar="C", help="requests at once (default: 8)"
    )
    j.add_argument(
        "--images",
        metavar="DIR",
        default="arena_data/images",
        help="the arena's image store (default: %(default)s)",
    )
    j.add_argument(
        "--cache-dir", metavar="DIR", help="where demo models are built (default: ~/.cache/vlm-arena)"
    )
    j.add_argument("--include-named", action="store_true", help="also judge named (non-anonymous) battles")
    j.add_argument("--voted-only", action="store_true", help="only battles with a human vote")
    j.add_argument(
        "--since", type=_date, metavar="DATE", help="battles started on or after (ISO date/time, UTC)"
    )
    j.add_argument("--until", type=_date, metavar="DATE", help="battles started before (ISO date/time, UTC)")
    j.add_argument("--category", metavar="TAG", help="only battles with this category tag")
    j.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    j.set_defaults(func=run_judge)

    ag = sub.add_parser(
        "agreement",
        help="judge-human agreement (MT-Bench definitions), Cohen's kappa, position consistency",
        description=(
            "Agreement between a judge's verdicts and people's votes on the same battles, as the\n"
            "MT-Bench paper defines it: each judge verdict is compared with every human vote on the\n"
            "same (question, model pair, turn); 'with ties' counts three outcomes, 'without ties' drops\n"
            "comparisons where either side says tie. Also Cohen's kappa, the confusion matrix, bootstrap\n"
            "95% intervals, and (from a database) the judge's position consistency across answer orders."
        ),
        epilog=(
            "examples:\n"
            "  python -m analysis agreement --db sqlite:///arena.db --judge gpt-4o-2024-11-20\n"
            "  python -m analysis agreement --human human.jsonl --judge-file gpt4_pair.jsonl --format json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ag.add_argument("--db", metavar="URL", help="arena database holding votes and the judge's verdicts")
    ag.add_argument("--judge", metavar="NAME", help="the judge model's name (with --db)")
    ag.add_argument("--template", metavar="VERSION", help="only verdicts of this prompt template version")
    ag.add_argument("--human", metavar="PATH", help="human votes, JSONL in the MT-Bench human-judgment shape")
    ag.add_argument(
        "--judge-file", metavar="PATH", help="the judge's final verdicts, JSONL in the same shape"
    )
    ag.add_argument("--include-named", action="store_true", help="with --db: also named battles")
    ag.add_argument("--by-category", action="store_true", help="also report per category")
    ag.add_argument(
        "--bootstrap",
        type=_non_negative_int,
        default=1000,
        metavar="N",
        help="bootstrap rounds (default: 1000)",
    )
    ag.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    ag.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    ag.add_argument("--out", metavar="PATH", help="write the output here instead of stdout")
    ag.set_defaults(func=run_agreement)

    cmp_ = sub.add_parser(
        "compare",
        help="leaderboard-level agreement: Spearman, Kendall, separability, agreement with CI",
        description=(
            "Compare a candidate leaderboard with a reference one (Arena-Hard's metrics): Spearman and\n"
            "Kendall correlation on the shared models, separability of each (share of model pairs whose\n"
            "95% intervals do not overlap), and agreement with confidence over reference-separable\n"
            "pairs (+1 same order and separated, +0.5 candidate intervals overlap). Each leaderboard is\n"
            "a bootstrap table (JSONL: model, score, lower, upper), a FastChat table (model, rating,\n"
            "rating_q025, rating_q975), our ratings output, or, with --db and --judge, the people's\n"
            "leaderboard (reference) against the judge's (candidate) from one database."
        ),
        epilog=(
            "examples:\n"
            "  python -m analysis compare arena.json arena_hard.jsonl --map-candidate names.json\n"
            "  python -m analysis compare --db sqlite:///arena.db --judge gpt-4o-2024-11-20 --format json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp_.add_argument("reference", nargs="?", metavar="REFERENCE", help="reference leaderboard file")
    cmp_.add_argument("candidate", nargs="?", metavar="CANDIDATE", help="candidate leaderboard file")
    cmp_.add_argument(
        "--map-candidate", metavar="FILE", help="JSON object mapping candidate to reference names"
    )
    cmp_.add_argument(
        "--db", metavar="URL", help="compare people's and a judge's leaderboards from this database"
    )
    cmp_.add_argument("--judge", metavar="NAME", help="the judge model's name (with --db)")
    cmp_.add_argument(
        "--bootstrap", type=_non_negative_int, default=1000, metavar="N", help="with --db: bootstrap rounds"
    )
    cmp_.add_argument("--seed", type=int, default=0, metavar="S", help="with --db: random seed (default: 0)")
    cmp_.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    cmp_.add_argument("--out", metavar="PATH", help="write the output here instead of stdout")
    cmp_.set_defaults(func=run_compare)
    return parser


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _date(text: str) -> datetime:
    """argparse type for an ISO date or date-time; naive values are UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date such as 2026-11-01, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _add_source_arguments(p: argparse.ArgumentParser) -> None:
    """Where battles come from, and which of them count (shared by ratings and report)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--db", metavar="URL", help="SQLAlchemy database URL of the arena (e.g. sqlite:///arena.db)"
    )
    src.add_argument(
        "--battles", metavar="PATH", help="battle records: a JSON list or JSONL in FastChat's format"
    )
    p.add_argument(
        "--include-named",
        action="store_true",
        help="also use non-anonymous (named) battles; by default only anony battles count",
    )
    p.add_argument(
        "--drop-self-battles",
        action="store_true",
        help="skip rows where model_a == model_b instead of failing (e.g. WildVision-Bench files)",
    )
    p.add_argument(
        "--since", type=_date, metavar="DATE", help="only votes cast on or after (ISO date/time, UTC)"
    )
    p.add_argument("--until", type=_date, metavar="DATE", help="only votes cast before (ISO date/time, UTC)")
    p.add_argument("--category", metavar="TAG", help="only battles with this category tag")
    p.add_argument(
        "--include-flagged",
        action="store_true",
        help="with --db: also votes from voters flagged as anomalous",
    )


def _load(
    args: argparse.Namespace, *, answers: bool = False, fields: Sequence[str] | None = None
) -> pd.DataFrame:
    """Load battles from --battles or --db with the filters: anonymous only unless --include-named,
    time range and category; ``answers`` also reads the answer texts from a database; ``fields``
    (with --battles) reads only those record fields, besides the models and the winner."""
    from analysis.io import load_battles_db, load_battles_file

    if args.battles is not None:
        try:
            df = load_battles_file(args.battles, fields=fields)
        except FileNotFoundError:
            raise CliError(f"battles file not found: {args.battles}") from None
        except IsADirectoryError:
            raise CliError(f"battles path is a directory: {args.battles}") from None
        keep = pd.Series(True, index=df.index)
        if not args.include_named and "anony" in df.columns:
            keep &= df["anony"].astype(bool)
        if args.since is not None or args.until is not None:
            stamps = pd.to_numeric(df["tstamp"], errors="coerce")
            if args.since is not None:
                keep &= stamps >= args.since.timestamp()
            if args.until is not None:
                keep &= stamps < args.until.timestamp()
        if args.category is not None:
            if "category" not in df.columns:
                raise CliError("--category needs a 'category' field in the battle records")
            keep &= df["category"].astype(str) == args.category
        return df.loc[keep.to_numpy()].reset_index(drop=True)
    return _from_db(args.db, load_battles_db, **_db_filters(args), answers=answers)


def _db_filters(args: argparse.Namespace) -> dict[str, Any]:
    """The vote filters of ``_add_source_arguments`` as keywords of the ``analysis.io`` database loaders."""
    return {
        "anony_only": not args.include_named,
        "since": args.since,
        "until": args.until,
        "category": args.category,
        "include_flagged": args.include_flagged,
    }


def _from_db(url: str, loader: Callable[..., _T], **kwargs: Any) -> _T:
    """``loader(url, **kwargs)`` with database problems reported as one ``CliError`` line."""
    try:
        return loader(url, **kwargs)
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot read votes from {url}: {exc}") from None
    except ImportError as exc:
        raise CliError(f"database support is not available: {exc}") from None
    except Exception as exc:  # driver / SQL errors: report them in one line, not a traceback
        raise CliError(f"cannot read votes from {url}: {type(exc).__name__}: {exc}") from None


def run_ratings(args: argparse.Namespace) -> int:
    """The ``ratings`` command: load battles, compute the leaderboard, write it out."""
    anchor = parse_anchor(args.anchor) if args.anchor else None
    if args.style_control and args.method != "bt":
        raise CliError("--style-control is a Bradley-Terry view: use it with --method bt")
    if args.ci == "sandwich" and (args.method == "elo" or args.style_control):
        what = "--style-control" if args.style_control else "--method elo"
        raise CliError(f"--ci sandwich is for bt, davidson and rao-kupper; {what} needs --ci bootstrap")
    rng = np.random.default_rng(args.seed)
    extras: dict[str, Any] = {}
    notes: list[str] = []
    if args.method in ("bt", "davidson", "rao-kupper") and not args.style_control:
        from analysis.pairs import leaderboard_from_counts

        table, info = leaderboard_from_counts(
            _pair_counts(args),
            method=args.method,
            ci=args.ci,
            bootstrap=args.bootstrap,
            rng=rng,
            anchor=anchor,
            progress=args.progress,
        )
        if args.method != "bt":
            extras = {
                k: info[k]
                for k in (
                    "tie_model",
                    "tie_param_name",
                    "tie_param",
                    "tie_param_ci_lower",
                    "tie_param_ci_upper",
                )
            }
            notes.append(
                f"{info['tie_model']} tie parameter {info['tie_param_name']} = {info['tie_param']:.4f} "
                f"(95% CI {info['tie_param_ci_lower']:.4f} to {info['tie_param_ci_upper']:.4f}); "
                f"P(tie) between equal models = {info['tie_prob_equal']:.3f}"
            )
    elif args.style_control:
        from analysis.io import with_style_columns
        from analysis.style import style_ratings_table

        table, coefficients = style_ratings_table(
            with_style_columns(_load(args, answers=True)),
            features=args.style_features,
            bootstrap=args.bootstrap,
            rng=rng,
            anchor=anchor,
            progress=args.progress,
            self_battles=_self_battles(args),
        )
        for row in coefficients.itertuples(index=False):
            extras[f"{row.feature}_coefficient"] = float(row.coefficient)
            notes.append(
                f"style coefficient {row.feature} = {row.coefficient:+.4f} "
                f"(95% CI {row.ci_lower:+.4f} to {row.ci_upper:+.4f}; log-odds per RMS difference)"
            )
    else:
        from analysis.ratings import ratings_table

        table = ratings_table(
            _load(args),
            method=args.method,
            bootstrap=args.bootstrap,
            rng=rng,
            anchor=anchor,
            progress=args.progress,
            self_battles=_self_battles(args),
        )
    emit(render(table, args.format, extras=extras, notes=notes), args.out)
    return 0


def _self_battles(args: argparse.Namespace) -> Literal["error", "drop"]:
    return "drop" if args.drop_self_battles else "error"


def _pair_counts(args: argparse.Namespace) -> Aggregated:
    """Vote counts per model pair and outcome: aggregated by the database (--db), or from the file's
    battles after the same filters and checks as every other method (--battles)."""
    from analysis.ratings import aggregate, validate_battles

    if args.battles is not None:
        fields = ["anony", "tstamp"] + (["category"] if args.category is not None else [])
        return aggregate(validate_battles(_load(args, fields=fields), self_battles=_self_battles(args)))
    from analysis.io import load_pair_counts_db

    return _from_db(args.db, load_pair_counts_db, **_db_filters(args))


def run_report(args: argparse.Namespace) -> int:
    """The ``report`` command: load battles and write the HTML report with its CSV tables."""
    from analysis.report import write_report

    anchor = parse_anchor(args.anchor) if args.anchor else None
    df = _load(args)
    path = write_report(
        df,
        args.out,
        bootstrap=args.bootstrap,
        seed=args.seed,
        title=args.title,
        anchor=anchor,
        progress=True,
        self_battles="drop" if args.drop_self_battles else "error",
    )
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m analysis``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except (CliError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
