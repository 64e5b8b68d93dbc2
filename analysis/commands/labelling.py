"""Options and the run loop shared by the labelling commands (``categorize``, ``image-need``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.commands.options import CliError, add_model_run_options, non_negative_int, positive_int

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from analysis.model_tasks import LabelRunner
    from models.roster import ModelSpec
    from models.wrapper import ManagedBackend


def add_worker_options(p: argparse.ArgumentParser, *, model_help: str) -> None:
    """The database, the roster model, and which battles to label."""
    p.add_argument("--db", metavar="URL", required=True, help="SQLAlchemy database URL of the arena")
    p.add_argument("--config", metavar="ROSTER", required=True, help="roster YAML that lists the model(s)")
    p.add_argument("--model", metavar="NAME", required=True, help=model_help)
    p.add_argument("--limit", type=non_negative_int, metavar="N", help="label at most N battles")
    p.add_argument(
        "--concurrency", type=positive_int, default=8, metavar="N", help="requests at once (default: 8)"
    )
    add_model_run_options(p, "label")
    p.add_argument("--progress", action="store_true", help="show a progress bar on stderr")


def start_model(args: argparse.Namespace, name: str) -> tuple[ModelSpec, ManagedBackend]:
    """A roster model by name, or a one-line ``CliError``."""
    from analysis.model_tasks import ModelStartError, start_roster_model

    try:
        return start_roster_model(args.config, name, Path(args.cache_dir) if args.cache_dir else None)
    except ModelStartError as exc:
        raise CliError(str(exc)) from None


def run_labelling(
    args: argparse.Namespace,
    make_runner: Callable[[sessionmaker[Session]], LabelRunner],
    extra: dict[str, Any],
) -> int:
    """Label the pending battles with the runner ``make_runner`` builds; print the JSON summary."""
    from analysis.io import db_sessions

    sessions_block: AbstractContextManager[sessionmaker[Session]] = db_sessions(args.db)
    with sessions_block as sessions:
        runner = make_runner(sessions)
        pending = runner.pending(
            anony_only=not args.include_named,
            voted_only=args.voted_only,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
        summary = asyncio.run(runner.run(pending, progress=args.progress))
    sys.stdout.write(json.dumps({**extra, **summary.to_dict()}, indent=2, ensure_ascii=False) + "\n")
    return 0
