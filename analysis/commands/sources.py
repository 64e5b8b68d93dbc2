"""Where the analysis commands read their data: battles from a file or the arena database (``ratings``,
``report``), and a judge's verdicts beside people's votes (``agreement``, ``compare``).

Every database read goes through ``analysis.io``; problems surface as one-line ``CliError``s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd

from analysis.commands.options import CliError, add_dedup_options, iso_date

_T = TypeVar("_T")


def add_source_options(p: argparse.ArgumentParser) -> None:
    """Where battles come from, and which of them count (shared by ratings and report)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--db", metavar="URL", help="SQLAlchemy database URL of the arena (e.g. sqlite:///arena.db)"
    )
    src.add_argument(
        "--battles", metavar="PATH", help="battle records (FastChat format): JSON list, JSONL or Parquet"
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
        "--since", type=iso_date, metavar="DATE", help="only votes cast on or after (ISO date/time, UTC)"
    )
    p.add_argument(
        "--until", type=iso_date, metavar="DATE", help="only votes cast before (ISO date/time, UTC)"
    )
    p.add_argument("--category", metavar="TAG", help="only battles with this category tag")
    p.add_argument(
        "--exclude-category",
        metavar="TAG",
        help="leave out battles with this tag (e.g. identity-question: the voter asked a model who it is)",
    )
    p.add_argument(
        "--include-flagged",
        action="store_true",
        help="with --db: also votes from voters flagged as anomalous",
    )
    add_dedup_options(p)


def self_battles(args: argparse.Namespace) -> Literal["error", "drop"]:
    """What the rating code does with rows where a model battles itself (``--drop-self-battles``)."""
    return "drop" if args.drop_self_battles else "error"


def load_battles(
    args: argparse.Namespace, *, answers: bool = False, fields: Sequence[str] | None = None
) -> pd.DataFrame:
    """Load battles from --battles or --db with the filters: anonymous only unless --include-named,
    time range and category; ``answers`` also reads the answer texts from a database; ``fields``
    (with --battles) reads only those record fields, besides the models and the winner."""
    from analysis.io import load_battles_db, load_battles_file

    if args.battles is not None:
        dedup = bool(getattr(args, "dedup", False))
        try:
            df = load_battles_file(args.battles, fields=None if dedup else fields)
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
        if args.exclude_category is not None and "category" in df.columns:
            keep &= df["category"].astype(str) != args.exclude_category
        df = df.loc[keep.to_numpy()].reset_index(drop=True)
        if dedup:
            df = _dedup_file_battles(df, args)
        return df
    return from_db(args.db, load_battles_db, **db_filters(args), answers=answers)


def db_filters(args: argparse.Namespace) -> dict[str, Any]:
    """The vote filters of ``add_source_options`` as keywords of the ``analysis.io`` database loaders;
    with ``--dedup``, also the battles the cap leaves out (``dedup_exclusions``)."""
    filters: dict[str, Any] = {
        "anony_only": not args.include_named,
        "since": args.since,
        "until": args.until,
        "category": args.category,
        "exclude_category": args.exclude_category,
        "include_flagged": args.include_flagged,
    }
    if getattr(args, "dedup", False):
        filters["exclude_battles"] = dedup_exclusions(args, filters)
    return filters


def image_store(args: argparse.Namespace) -> str | None:
    """``--images`` when there is something to read there (a URL, or a directory that exists)."""
    location = str(args.images)
    return location if "://" in location or Path(location).is_dir() else None


def dedup_exclusions(args: argparse.Namespace, filters: dict[str, Any]) -> frozenset[str]:
    """The battles ``--dedup`` leaves out of the votes ``filters`` count: the first turns of those
    votes are grouped (pHashes missing from the database are computed from ``--images`` first) and
    every group is capped at ``--dedup-cap``; what was done is reported on stderr."""
    from analysis.dedup import dedup_plan, prompt_records
    from analysis.io import load_first_turns_db

    turns = from_db(args.db, load_first_turns_db, images=image_store(args), **filters)
    plan = dedup_plan(prompt_records(turns), cap=args.dedup_cap, max_distance=args.dedup_distance)
    _report_dedup(plan.cap, plan.groups_capped, len(plan.excluded), args.dedup_cap is None)
    return plan.excluded


def _dedup_file_battles(df: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """``--dedup`` on a battle file: records grouped by their first user message and first-turn image
    hashes (exact hashes: a file carries no pictures to compare), earliest ``tstamp`` kept."""
    from analysis.dedup import dedup_plan, frame_prompt_records

    order = df["tstamp"].rank(method="first", na_option="bottom").to_numpy().argsort()
    records = frame_prompt_records(df)
    ordered = [records[i] for i in order]
    plan = dedup_plan(ordered, cap=args.dedup_cap, max_distance=args.dedup_distance)
    _report_dedup(plan.cap, plan.groups_capped, len(plan.excluded), args.dedup_cap is None)
    keep = np.ones(len(df), dtype=bool)
    keep[[int(pos) for pos in plan.excluded]] = False
    return df.loc[keep].reset_index(drop=True)


def _report_dedup(cap: int, groups: int, left_out: int, percentile: bool) -> None:
    how = " (99.99th percentile of group sizes)" if percentile else ""
    print(
        f"dedup: at most {cap} battles per duplicate group{how}; {groups} groups capped, "
        f"{left_out} battles left out",
        file=sys.stderr,
    )


def from_db(url: str, loader: Callable[..., _T], **kwargs: Any) -> _T:
    """``loader(url, **kwargs)`` with database problems reported as one ``CliError`` line."""
    try:
        return loader(url, **kwargs)
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot read votes from {url}: {exc}") from None
    except ImportError as exc:
        raise CliError(f"database support is not available: {exc}") from None
    except Exception as exc:  # driver / SQL errors: report them in one line, not a traceback
        raise CliError(f"cannot read votes from {url}: {type(exc).__name__}: {exc}") from None


def read_jsonl(path: str, what: str) -> pd.DataFrame:
    """A JSON Lines file as a frame; a missing or malformed file is a ``CliError`` naming ``what``."""
    try:
        return pd.read_json(path, lines=True)
    except FileNotFoundError:
        raise CliError(f"{what} file not found: {path}") from None
    except ValueError as exc:
        raise CliError(f"{what} file {path} is not valid JSON Lines: {exc}") from None


def judge_frames(
    url: str, judge: str, *, template: str | None, include_named: bool, categories: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
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


__all__ = [
    "add_source_options",
    "db_filters",
    "dedup_exclusions",
    "image_store",
    "from_db",
    "judge_frames",
    "load_battles",
    "read_jsonl",
    "self_battles",
]
