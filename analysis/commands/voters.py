"""``python -m analysis voters``: find voters whose votes do not look like the other voters' (and flag them)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from analysis.commands.options import CliError, add_output_options, positive_int
from analysis.commands.output import emit
from analysis.commands.sources import add_source_options, db_filters, from_db, load_battles

#: Who the audit log names for flags set by ``--apply``.
AUDIT_ACTOR = "analysis voters"

HELP = "anomalous voters (random, one-sided, one-model) by a test against the other voters' votes"

DESCRIPTION = """\
Test every voter against what all OTHER voters voted on the same model pairs (Chatbot Arena
paper, arXiv 2403.04132 section 5.1), and flag the voters whose votes are unlikely under it.
  fisher      per-vote p-values (P of an outcome no more likely than the one chosen),
              combined with Fisher's method every --min-votes votes in time order and at
              the last vote, Bonferroni-corrected; --variant mid (default), randomized or
              conservative p-values.
  likelihood  the voter's total log-likelihood against its null mean and variance, with a
              skew-corrected (Pearson III) p-value; --variant normal for the plain normal.
A side test (two-sided binomial: the voter's left share of decisive votes against the other
voters') joins either method unless --no-side-test; p_value = 2 * min(p_model, p_side).
A voter is flagged when p_value < --alpha; voters with fewer than --min-votes votes are not
tested. Also shown per voter: the median decision time (both answers complete -> vote), the
share of decisive votes that went to the left answer and the model it favours most beyond the
other voters' odds. In a battle file the voter is the 'judge' field; in the database the
imported judge label or the voter session. --apply (with --db) marks the flagged voter
sessions as anomalous: their votes then leave every leaderboard. It never clears a flag."""

EPILOG = """\
examples:
  python -m analysis voters --db sqlite:///arena.db
  python -m analysis voters --battles clean_battle.json --format json --out voters.json
  python -m analysis voters --db sqlite:///arena.db --alpha 0.01 --apply"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``voters`` command's options."""
    from analysis.voters import DEFAULT_ALPHA, DEFAULT_MIN_VOTES, METHODS, VARIANTS

    add_source_options(p)
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"flag a voter when its p-value is below this (default: {DEFAULT_ALPHA})",
    )
    p.add_argument(
        "--min-votes",
        type=positive_int,
        default=DEFAULT_MIN_VOTES,
        metavar="N",
        help=f"test only voters with at least N votes; also the Fisher checkpoint step "
        f"(default: {DEFAULT_MIN_VOTES})",
    )
    p.add_argument("--method", choices=METHODS, default=METHODS[0], help=f"the test (default: {METHODS[0]})")
    variants = sorted({v for vs in VARIANTS.values() for v in vs})
    p.add_argument(
        "--variant",
        choices=variants,
        help="p-values of the method: fisher " + "|".join(VARIANTS["fisher"]) + " (default: "
        f"{VARIANTS['fisher'][0]}), likelihood " + "|".join(VARIANTS["likelihood"]) + " (default: "
        f"{VARIANTS['likelihood'][0]})",
    )
    p.add_argument("--no-side-test", action="store_true", help="leave out the left/right side test")
    p.add_argument(
        "--apply",
        action="store_true",
        help="with --db: mark the flagged voter sessions as anomalous (one audit-log row each)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of randomized p-values (default: 0)"
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    add_output_options(p, ("table", "json"), format_help="output format (default: table)")


def run(args: argparse.Namespace) -> int:
    """The ``voters`` command: load the votes, test every voter, print (and with --apply, flag)."""
    from analysis.voters import VARIANTS, detect_anomalous_voters, position_bias_of_votes, voter_records

    if args.apply and args.db is None:
        raise CliError("--apply changes the arena database: use it with --db URL, not --battles")
    if not 0 < args.alpha < 1:
        raise CliError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.variant is not None and args.variant not in VARIANTS[args.method]:
        raise CliError(
            f"--variant {args.variant} is not a variant of {args.method}: " + ", ".join(VARIANTS[args.method])
        )
    votes = _votes(args)
    result = detect_anomalous_voters(
        votes,
        method=args.method,
        variant=args.variant,
        alpha=args.alpha,
        min_votes=args.min_votes,
        side_test=not args.no_side_test,
        rng=np.random.default_rng(args.seed),
        progress=args.progress,
    )
    if args.format == "json":
        emit(json.dumps(voter_records(result), indent=2) + "\n", args.out)
    else:
        bias = position_bias_of_votes(votes["winner"])
        emit(format_voters(result, args.alpha, args.min_votes, bias.as_dict()), args.out)
    if args.apply:
        from analysis.io import flag_anomalous_voters

        flagged = result.loc[result["anomalous"], "voter"].astype(str).tolist()
        changed = from_db(
            args.db, flag_anomalous_voters, voters=flagged, actor=AUDIT_ACTOR, now=datetime.now(UTC)
        )
        stream = sys.stderr if args.format == "json" and not args.out else sys.stdout
        print(
            f"flagged {len(changed)} voter session(s) as anomalous "
            f"({len(flagged) - len(changed)} of {len(flagged)} flagged voter(s) were no unflagged session)",
            file=stream,
        )
    return 0


def _votes(args: argparse.Namespace) -> pd.DataFrame:
    """The votes with their voters: from the database, or a battle file's ``judge`` field."""
    if args.db is not None:
        from analysis.io import load_voter_votes_db

        return from_db(args.db, load_voter_votes_db, **db_filters(args))
    battles = load_battles(args)
    if args.drop_self_battles:
        battles = battles.loc[battles["model_a"].astype(str) != battles["model_b"].astype(str)]
    votes = pd.DataFrame(
        {
            "voter": battles["judge"].astype(object),
            "model_a": battles["model_a"].astype(str),
            "model_b": battles["model_b"].astype(str),
            "winner": battles["winner"].astype(object),
            "tstamp": battles["tstamp"],
        }
    )
    if "decision_s" in battles.columns:
        votes["decision_s"] = pd.to_numeric(battles["decision_s"], errors="coerce")
    return votes.reset_index(drop=True)


def _number(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_voters(result: pd.DataFrame, alpha: float, min_votes: int, bias: dict[str, Any]) -> str:
    """An aligned plain-text table of the voters, flagged first, with a summary below."""
    header = ["voter", "votes", "p_value", "flag", "median_s", "left", "favourite (excess)"]
    body = [
        [
            str(r["voter"]),
            str(int(r["n_votes"])),
            _number(r["p_value"], ".2g"),
            "ANOMALOUS" if r["anomalous"] else "",
            _number(r["median_decision_s"], ".1f"),
            _number(r["left_share"], ".0%"),
            "-" if r["favourite_model"] is None else f"{r['favourite_model']} ({r['favourite_excess']:+.0%})",
        ]
        for r in result.to_dict(orient="records")
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    left = {0, 3, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    tested = int(result["p_value"].notna().sum())
    flagged = int(result["anomalous"].sum())
    method = str(result["method"].iloc[0]) if len(result) else "-"
    lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body), ""]
    lines.append(
        f"{len(result)} voter(s), {tested} tested (>= {min_votes} votes), {flagged} flagged at "
        f"alpha {alpha:g}; method {method}"
    )
    if bias["share"] is not None:
        lines.append(
            f"position bias: {bias['share']:.1%} of {bias['decisive']:,} decisive votes went to the left "
            f"answer (95% CI {bias['ci_lower']:.1%} to {bias['ci_upper']:.1%})"
        )
    return "\n".join(lines) + "\n"


__all__ = ["AUDIT_ACTOR", "add_arguments", "format_voters", "run"]
