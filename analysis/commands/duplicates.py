"""``python -m analysis duplicates``: the largest groups of duplicate first turns."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from analysis.commands.options import (
    CliError,
    add_dedup_distance_option,
    add_output_options,
    positive_int,
)
from analysis.commands.output import emit
from analysis.commands.sources import from_db, image_store
from analysis.dedup import DuplicateGroup
from storage.vocabulary import WINNERS

HELP = "the largest groups of duplicate prompts (same text, same or near-identical pictures)"

DESCRIPTION = """\
List the largest groups of duplicate first turns among the counted votes: prompts whose
normalised text is equal (Unicode NFKC, casefolded, whitespace collapsed, punctuation stripped
at both ends) and whose pictures pair up with pHashes within --dedup-distance bits. With --db,
the pictures' pHashes missing from the database are computed from --images once and stored.
A battle file carries no pictures: its image hashes must match exactly.
`ratings --dedup` caps each such group (default: at the 99.99th percentile of group sizes)."""

EPILOG = """\
examples:
  python -m analysis duplicates --db sqlite:///arena.db
  python -m analysis duplicates --db sqlite:///arena.db --top 50 --format json --out dups.json
  python -m analysis duplicates --battles clean_battle.json --dedup-distance 0"""

#: Characters of the normalised prompt the table shows.
PROMPT_WIDTH = 60


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``duplicates`` command's options."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", metavar="URL", help="SQLAlchemy database URL of the arena")
    src.add_argument("--battles", metavar="PATH", help="battle records (FastChat format) instead of --db")
    p.add_argument(
        "--include-named", action="store_true", help="also named battles (by default only anony battles)"
    )
    p.add_argument(
        "--top", type=positive_int, default=20, metavar="N", help="largest N groups (default: %(default)s)"
    )
    p.add_argument(
        "--min-size",
        type=positive_int,
        default=2,
        metavar="N",
        help="only groups of at least N battles (default: %(default)s)",
    )
    add_dedup_distance_option(p)
    add_output_options(p, ("table", "json"), format_help="output format (default: table)")


def run(args: argparse.Namespace) -> int:
    """The ``duplicates`` command: read the first turns, group them, print the largest groups."""
    from analysis.dedup import describe_groups, duplicate_groups, frame_prompt_records, prompt_records

    if args.battles is not None:
        from analysis.io import load_battles_file

        try:
            frame = load_battles_file(args.battles)
        except (FileNotFoundError, IsADirectoryError):
            raise CliError(f"battles file not found: {args.battles}") from None
        if not args.include_named:
            frame = frame.loc[frame["anony"].astype(bool).to_numpy()].reset_index(drop=True)
        order = frame["tstamp"].rank(method="first", na_option="bottom").to_numpy().argsort()
        records = [frame_prompt_records(frame)[i] for i in order]
    else:
        from analysis.io import load_first_turns_db

        turns = from_db(
            args.db, load_first_turns_db, images=image_store(args), anony_only=not args.include_named
        )
        records = prompt_records(turns)
    groups = duplicate_groups(records, args.dedup_distance)
    listed = describe_groups(records, groups[: args.top], min_size=args.min_size)
    if args.battles is not None:  # file records are grouped by row: show their question_id instead
        ids = [str(q) if q is not None else f"row {pos}" for pos, q in enumerate(frame["question_id"])]
        listed = [replace(g, battle_ids=tuple(ids[int(pos)] for pos in g.battle_ids)) for g in listed]
    emit(render_groups(listed, args.format), args.out)
    return 0


def render_groups(groups: list[DuplicateGroup], fmt: str) -> str:
    """The groups as JSON (a list of objects) or an aligned text table."""
    if fmt == "json":
        return json.dumps([g.as_dict() for g in groups], ensure_ascii=False, indent=2) + "\n"
    if not groups:
        return "no duplicate prompts\n"
    header = ["size", "votes a/b/tie/bothbad", "models", "images", "prompt"]
    body = [
        [
            str(g.size),
            "/".join(str(g.outcomes.get(w, 0)) for w in WINNERS),
            ", ".join(f"{m}×{n}" for m, n in list(g.models.items())[:3]),
            " ".join(token[:16] for token in g.images) or "-",
            _short(g.prompt),
        ]
        for g in groups
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    ]
    return "\n".join(lines) + "\n"


def _short(text: str) -> str:
    """The normalised prompt (one line already), cut at ``PROMPT_WIDTH`` characters."""
    return text if len(text) <= PROMPT_WIDTH else text[: PROMPT_WIDTH - 1] + "…"
