"""Command line for offline analysis: ``python -m analysis <command> ...``.

Commands: ``ratings`` (BT or online-Elo leaderboard with bootstrap confidence intervals), ``report``
(one self-contained HTML file with leaderboards, heatmaps and ratings over time), ``judge`` (an LLM
judge over stored battles), ``agreement`` (judge vs people), ``compare`` (leaderboard vs
leaderboard), ``voters`` (anomalous voters, position bias), ``categorize`` (category, language
and flags by a model), ``image-need`` (does a prompt need its image) and ``duplicates`` (the
largest groups of duplicate prompts). Each command lives in its own module of ``analysis.commands`` (named after it, with
``HELP``, ``DESCRIPTION``, ``EPILOG``, ``add_arguments`` and ``run``); this module assembles the parser
and runs the chosen command.
Errors in the input (unreadable or malformed file, unknown winner, bad anchor, ...) print one line
on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from analysis.commands import (
    agreement,
    categorize,
    compare,
    duplicates,
    image_need,
    judge,
    ratings,
    report,
    voters,
)
from analysis.commands.options import CliError

EXIT_USAGE = 2
#: The command modules, in the order ``--help`` lists them.
COMMANDS = (ratings, report, judge, agreement, compare, voters, duplicates, categorize, image_need)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m analysis`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Offline analysis of VLM Arena battles.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        name = getattr(command, "NAME", command.__name__.rsplit(".", 1)[-1])
        # RawDescriptionHelpFormatter keeps the line breaks of each command's description and examples.
        p = sub.add_parser(
            name,
            help=command.HELP,
            description=command.DESCRIPTION,
            epilog=command.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=command.run)
        command.add_arguments(p)
    return parser


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
