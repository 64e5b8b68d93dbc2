"""``python -m analysis judge``: roster models judge stored battles in both answer orders.

Several ``--judge`` options run several judges (for an ensemble, see ``agreement --ensemble``)
*concurrently*, each with its own ``--concurrency`` limit, its own resumable run and its own stored
verdicts: judges are usually separate servers or APIs with separate rate limits, so the run takes about
as long as the slowest judge instead of the sum. (Local ``hf`` judges are all loaded at once; run them
one command at a time when memory is short.) With ``--describe-with NAME`` the images are first
described by that captioning model (stored and reused), then the judges read the descriptions instead
of seeing the images (``analysis.describe``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from analysis.commands.options import CliError, add_model_run_options, non_negative_int, positive_int

DESCRIPTION = """\
Ask judge models from a roster (any backend; a vision judge also gets the battle's
images) which of the two answers of each stored battle is better, once in the battle's
order and once swapped. Every raw output and parsed verdict is stored in the database
under the judge's name and the prompt template version, so a run resumes where it
stopped and never judges twice. Several --judge options run the judges concurrently.
With --describe-with, a captioning model describes each image once (stored, reused) and
the judges read those descriptions instead of the images (TouchStone-style); their
verdicts are stored under the judge key "JUDGE|desc:DESCRIBER". Prints a JSON summary."""

EPILOG = """\
examples:
  python -m analysis judge --db sqlite:///arena.db --config configs/example-api.yaml \\
--judge gpt-4o-2024-11-20 --limit 500 --concurrency 16
  python -m analysis judge --db sqlite:///arena.db --config roster.yaml \\
--judge judge-a --judge judge-b --judge judge-c
  python -m analysis judge --db sqlite:///arena.db --config roster.yaml \\
--judge text-llm --describe-with captioner"""


HELP = "have roster models judge stored battles (both answer orders), storing every verdict"


def add_arguments(j: argparse.ArgumentParser) -> None:
    """The ``judge`` command's options."""
    j.add_argument("--db", metavar="URL", required=True, help="SQLAlchemy database URL of the arena")
    j.add_argument("--config", metavar="FILE", required=True, help="roster YAML that lists the judge models")
    j.add_argument(
        "--judge",
        metavar="NAME",
        required=True,
        action="append",
        help="a judge's name in the roster; repeat to run several judges concurrently",
    )
    j.add_argument(
        "--describe-with",
        metavar="NAME",
        help="a captioning model of the roster: judges read its stored image descriptions, not the images",
    )
    j.add_argument("--limit", type=non_negative_int, metavar="N", help="judge at most N battles per judge")
    j.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="C",
        help="requests at once per judge, and for the describer (default: 8)",
    )
    add_model_run_options(j, "judge")
    j.add_argument("--category", metavar="TAG", help="only battles with this category tag")
    j.add_argument("--progress", action="store_true", help="show progress bars on stderr")


def run(args: argparse.Namespace) -> int:
    """The ``judge`` command: judge pending battles with each judge and print a JSON summary."""
    from analysis.describe import (
        DESCRIBED_TEMPLATE_VERSION,
        DescriptionRunner,
        described_judge_name,
    )
    from analysis.io import db_sessions, image_loader
    from analysis.judge import TEMPLATE_VERSION, JudgeRunner, JudgeRunSummary
    from analysis.model_tasks import ModelStartError, start_roster_model, task_params
    from storage.descriptions import battle_images, load_descriptions

    names = list(dict.fromkeys(args.judge))
    if len(names) < len(args.judge):
        raise CliError("each --judge may be given once")
    cache = Path(args.cache_dir) if args.cache_dir else None
    try:  # start every model before judging anything, so a typo costs nothing
        judges = [start_roster_model(args.config, name, cache) for name in names]
        describer = start_roster_model(args.config, args.describe_with, cache) if args.describe_with else None
    except ModelStartError as exc:
        raise CliError(str(exc)) from None
    load_image = image_loader(args.images)
    filters: dict[str, Any] = {
        "anony_only": not args.include_named,
        "voted_only": args.voted_only,
        "since": args.since,
        "until": args.until,
        "category": args.category,
        "limit": args.limit,
    }

    out: dict[str, Any] = {}
    with db_sessions(args.db) as sessions:
        runners = [
            JudgeRunner(
                sessions,
                backend,
                judge_name=spec.name
                if describer is None
                else described_judge_name(spec.name, describer[0].name),
                params=task_params(spec),
                max_images=spec.max_images if describer is None else 0,
                load_image=load_image if describer is None else None,
                concurrency=args.concurrency,
                template_version=TEMPLATE_VERSION if describer is None else DESCRIBED_TEMPLATE_VERSION,
            )
            for spec, backend in judges
        ]
        pending = {runner.judge_name: runner.pending(**filters) for runner in runners}
        if describer is not None:
            spec, backend = describer
            wanted = sorted({b for ids in pending.values() for b in ids})
            with sessions() as db:
                images = battle_images(db, wanted)
            hashes = list(dict.fromkeys(sha for shas in images.values() for sha in shas))
            describing = DescriptionRunner(
                sessions,
                backend,
                describer_name=spec.name,
                params=task_params(spec),
                load_image=load_image,
                concurrency=args.concurrency,
            )
            described = asyncio.run(describing.run(hashes, progress=args.progress))
            with sessions() as db:
                texts = load_descriptions(db, hashes, spec.name, describing.template_version)
            ready = {b for b in wanted if all(sha in texts for sha in images.get(b, []))}
            out["describer"] = spec.name
            out["descriptions"] = {
                **described.to_dict(),
                "battles_without_description": len(wanted) - len(ready),
            }
            for runner in runners:
                runner.descriptions = texts
                pending[runner.judge_name] = [b for b in pending[runner.judge_name] if b in ready]

        async def judge_all() -> list[JudgeRunSummary]:
            return list(
                await asyncio.gather(
                    *(runner.run(pending[runner.judge_name], progress=args.progress) for runner in runners)
                )
            )

        summaries = asyncio.run(judge_all())
    results = [
        {"judge": runner.judge_name, **summary.to_dict()}
        for runner, summary in zip(runners, summaries, strict=True)
    ]
    report = results[0] if len(results) == 1 else {"judges": results}
    sys.stdout.write(json.dumps({**report, **out}, indent=2) + "\n")
    return 0
