"""The judge commands of ``python -m analysis``: ``judge``, ``agreement`` and ``compare``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from analysis.cli_output import CliError, emit, render_figures, to_records


def run_judge(args: argparse.Namespace) -> int:
    """The ``judge`` command: judge pending battles with a roster model and print a JSON summary."""
    from dataclasses import replace

    from analysis.judge import JudgeRunner
    from models.registry import BackendContext, create_backend
    from models.roster import RosterError, load_roster
    from models.wrapper import ManagedBackend
    from storage.db import make_engine, session_factory
    from storage.images import ImageStore

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
    store = ImageStore(Path(args.images))

    def load_image(sha256: str) -> Image.Image | None:
        path = store.find(sha256)
        return Image.open(path) if path is not None else None

    engine = make_engine(args.db)
    try:
        runner = JudgeRunner(
            session_factory(engine),
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
    finally:
        engine.dispose()
    sys.stdout.write(json.dumps({"judge": spec.name, **summary.to_dict()}, indent=2) + "\n")
    return 0


def read_jsonl(path: str, what: str) -> pd.DataFrame:
    try:
        return pd.read_json(path, lines=True)
    except FileNotFoundError:
        raise CliError(f"{what} file not found: {path}") from None
    except ValueError as exc:
        raise CliError(f"{what} file {path} is not valid JSON Lines: {exc}") from None


def judge_frames(  # type: ignore[no-untyped-def]
    url: str, judge: str, *, template: str | None, include_named: bool, categories: bool = False
):
    """From a database: (human votes, the judge's per-order verdicts, its final verdicts)."""
    from analysis.agreement import combine_orders
    from analysis.io import load_battles_db, load_judge_verdicts_db

    per_order = load_judge_verdicts_db(url, judge, template_version=template)
    if per_order.empty:
        raise CliError(f"no verdicts of judge {judge!r} in {url}: run `python -m analysis judge` first")
    final = combine_orders(per_order[["battle_id", "model_a", "model_b", "answer_order", "verdict"]])
    final = final.rename(columns={"battle_id": "question_id"}).assign(turn=1)
    human = load_battles_db(url, anony_only=not include_named, categories=categories).assign(turn=1)
    return human, per_order, final


def store_result(url: str, kind: str, subject: str, params: dict[str, Any], result: dict[str, Any]) -> None:
    """Keep figures computed from the arena database in it, for the admin page."""
    from storage.db import make_engine, session_factory
    from storage.judging import save_analysis_result

    engine = make_engine(url)
    try:
        with session_factory(engine).begin() as db:
            save_analysis_result(
                db, kind=kind, subject=subject, params=params, result=result, now=datetime.now(UTC)
            )
    finally:
        engine.dispose()


def run_agreement(args: argparse.Namespace) -> int:
    """The ``agreement`` command."""
    from analysis.agreement import agreement, human_human_agreement, position_consistency

    rng = np.random.default_rng(args.seed)
    if args.db and args.judge and not (args.human or args.judge_file):
        human, per_order, judge = judge_frames(
            args.db,
            args.judge,
            template=args.template,
            include_named=args.include_named,
            categories=args.by_category,
        )
        result = agreement(human, judge, bootstrap=args.bootstrap, rng=rng, by_category=args.by_category)
        figures = {"judge": args.judge, **result.to_dict()}
        figures["position_consistency"] = position_consistency(
            per_order[["battle_id", "answer_order", "verdict"]]
        ).to_dict()
        params = {"template": args.template, "include_named": args.include_named, "bootstrap": args.bootstrap}
        store_result(args.db, "judge_agreement", args.judge, {**params, "seed": args.seed}, figures)
    elif args.human and args.judge_file and not (args.db or args.judge):
        human = read_jsonl(args.human, "human votes")
        judge = read_jsonl(args.judge_file, "judge verdicts")
        result = agreement(human, judge, bootstrap=args.bootstrap, rng=rng, by_category=args.by_category)
        figures = result.to_dict()
        figures["human_human"] = human_human_agreement(human).to_dict()
    else:
        raise CliError("give either --db URL --judge NAME, or --human PATH --judge-file PATH")
    emit(render_figures(figures, args.format), args.out)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """The ``compare`` command."""
    from analysis.compare import compare
    from analysis.ratings import ratings_table

    candidate_map = None
    if args.map_candidate:
        try:
            candidate_map = json.loads(Path(args.map_candidate).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CliError(f"name map not found: {args.map_candidate}") from None
        except ValueError as exc:
            raise CliError(f"name map {args.map_candidate} is not valid JSON: {exc}") from None
        if not isinstance(candidate_map, dict):
            raise CliError(f"name map {args.map_candidate} must be a JSON object of candidate -> reference")
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
        store_result(
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
