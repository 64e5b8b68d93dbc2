"""``python -m analysis judge``: a roster model judges stored battles in both answer orders."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path

from analysis.commands.options import CliError, iso_date, non_negative_int, positive_int

DESCRIPTION = """\
Ask a judge model from a roster (any backend; a vision judge also gets the battle's
images) which of the two answers of each stored battle is better, once in the battle's
order and once swapped. Every raw output and parsed verdict is stored in the database
under the judge's name and the prompt template version, so a run resumes where it
stopped and never judges twice. Prints a JSON summary."""

EPILOG = """\
example:
  python -m analysis judge --db sqlite:///arena.db --config configs/example-api.yaml \
--judge gpt-4o-2024-11-20 --limit 500 --concurrency 16"""


HELP = "have a roster model judge stored battles (both answer orders), storing every verdict"


def add_arguments(j: argparse.ArgumentParser) -> None:
    """The ``judge`` command's options."""
    j.add_argument("--db", metavar="URL", required=True, help="SQLAlchemy database URL of the arena")
    j.add_argument("--config", metavar="FILE", required=True, help="roster YAML that lists the judge model")
    j.add_argument("--judge", metavar="NAME", required=True, help="the judge's name in the roster")
    j.add_argument("--limit", type=non_negative_int, metavar="N", help="judge at most N battles")
    j.add_argument(
        "--concurrency", type=positive_int, default=8, metavar="C", help="requests at once (default: 8)"
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
        "--since", type=iso_date, metavar="DATE", help="battles started on or after (ISO date/time, UTC)"
    )
    j.add_argument(
        "--until", type=iso_date, metavar="DATE", help="battles started before (ISO date/time, UTC)"
    )
    j.add_argument("--category", metavar="TAG", help="only battles with this category tag")
    j.add_argument("--progress", action="store_true", help="show a progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    """The ``judge`` command: judge pending battles with a roster model and print a JSON summary."""
    from analysis.io import db_sessions, image_loader
    from analysis.judge import JudgeRunner
    from models.registry import BackendContext, create_backend
    from models.roster import RosterError, load_roster
    from models.wrapper import ManagedBackend

    try:
        spec = load_roster(args.config).get(args.judge)
    except RosterError as exc:
        raise CliError(str(exc)) from None
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    cache = Path(args.cache_dir) if args.cache_dir else Path.home() / ".cache" / "vlm-arena"
    try:
        backend = create_backend(spec, BackendContext(cache_dir=cache))
    except Exception as exc:  # the judge cannot be loaded or reached: one line, not a traceback
        raise CliError(f"cannot start judge {spec.name!r}: {exc}") from None
    load_image = image_loader(args.images)

    with db_sessions(args.db) as sessions:
        runner = JudgeRunner(
            sessions,
            ManagedBackend.for_spec(spec, backend),
            judge_name=spec.name,
            # Judges answer deterministically (temperature 0), as MT-Bench and Arena-Hard run them.
            params=replace(spec.generation.to_params(), temperature=0.0),
            max_images=spec.max_images,
            load_image=load_image,
            concurrency=args.concurrency,
        )
        pending = runner.pending(
            anony_only=not args.include_named,
            voted_only=args.voted_only,
            since=args.since,
            until=args.until,
            category=args.category,
            limit=args.limit,
        )
        summary = asyncio.run(runner.run(pending, progress=args.progress))
    sys.stdout.write(json.dumps({"judge": spec.name, **summary.to_dict()}, indent=2) + "\n")
    return 0
