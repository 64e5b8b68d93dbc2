"""Command line for the model side: ``python -m models <command> ...``.

Commands: ``serve`` (vLLM or SGLang servers for a roster's hf models, and a roster that uses them).
Each command module has ``HELP``, ``DESCRIPTION``, ``EPILOG``, ``add_arguments`` and ``run``; this
module assembles the parser and runs the chosen command. A command that cannot go on prints its
reason on stderr and exits with its status (2 for usage and set-up problems).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from models import serve

EXIT_USAGE = 2
#: The command modules, in the order ``--help`` lists them.
COMMANDS = (serve,)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m models`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="python -m models", description="VLM Arena model tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        name = command.__name__.rsplit(".", 1)[-1]
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
    """Entry point of ``python -m models``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except serve.ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except serve.Stop:
        return 0
