"""Argument types and option groups shared by the analysis commands, and the error they all report.

Each group is declared once here; a command passes only the help text that differs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from datetime import UTC, datetime


class CliError(Exception):
    """An error the user can fix; reported as one line on stderr with exit status 2."""


def non_negative_int(text: str) -> int:
    """argparse type for a count >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type for a count >= 1."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def iso_date(text: str) -> datetime:
    """argparse type for an ISO date or date-time; naive values are UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date such as 2026-11-01, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_anchor(text: str) -> tuple[str, float]:
    """Parse ``MODEL=RATING`` (the model name may itself contain '=')."""
    model, sep, value = text.rpartition("=")
    if not sep or not model:
        raise CliError(f"bad --anchor {text!r}: expected MODEL=RATING, e.g. gpt-4o=1000")
    try:
        rating = float(value)
    except ValueError:
        raise CliError(f"bad --anchor {text!r}: RATING must be a number") from None
    if not math.isfinite(rating):
        raise CliError(f"bad --anchor {text!r}: RATING must be finite")
    return model, rating


def add_bootstrap_options(p: argparse.ArgumentParser, *, rounds_help: str, seed_help: str) -> None:
    """``--bootstrap N`` (rounds, default 1000) and ``--seed S`` (the random seed, default 0)."""
    p.add_argument("--bootstrap", type=non_negative_int, default=1000, metavar="N", help=rounds_help)
    p.add_argument("--seed", type=int, default=0, metavar="S", help=seed_help)


def add_anchor_option(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--anchor MODEL=RATING`` (read with ``parse_anchor``)."""
    p.add_argument("--anchor", metavar="MODEL=RATING", help=help)


def add_output_options(
    p: argparse.ArgumentParser, formats: Sequence[str], *, format_help: str = "output format"
) -> None:
    """``--format`` (one of ``formats``, the first is the default) and ``--out PATH`` (else stdout)."""
    p.add_argument("--format", choices=tuple(formats), default=formats[0], help=format_help)
    p.add_argument("--out", metavar="PATH", help="write the output here instead of stdout")


def add_dedup_distance_option(p: argparse.ArgumentParser) -> None:
    """``--dedup-distance K`` (pHash bits two duplicate pictures may differ in) and ``--images PATH``
    (the image store the missing pHashes are computed from)."""
    from analysis.dedup import DEFAULT_MAX_DISTANCE, HASH_BITS

    p.add_argument(
        "--dedup-distance",
        type=non_negative_int,
        default=DEFAULT_MAX_DISTANCE,
        metavar="K",
        help=f"near-duplicate pictures: pHashes within K of {HASH_BITS} bits (0 = identical hashes only; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--images",
        metavar="PATH",
        default="arena_data/images",
        help="with --db: the arena's image store (a directory or fsspec URL), read once per picture to "
        "store its pHash when missing; a missing directory is skipped (default: %(default)s)",
    )


def add_dedup_options(p: argparse.ArgumentParser) -> None:
    """``--dedup``, ``--dedup-cap N`` and the ``add_dedup_distance_option`` options."""
    p.add_argument(
        "--dedup",
        action="store_true",
        help="cap each group of duplicate first turns (same normalised text, same or near-identical "
        "pictures) at --dedup-cap battles, keeping the earliest votes",
    )
    p.add_argument(
        "--dedup-cap",
        type=positive_int,
        metavar="N",
        help="with --dedup: battles kept per group (default: the 99.99th percentile of the group "
        "sizes, rounded down, at least 1, as Chatbot Arena)",
    )
    add_dedup_distance_option(p)


def add_model_run_options(p: argparse.ArgumentParser, verb: str) -> None:
    """The options shared by the commands that run a roster model over stored battles (``judge``,
    ``categorize``, ``image-need``): the image store, the demo-model cache, and which battles.
    ``verb`` names what the command does to a battle, for the help text."""
    p.add_argument(
        "--images",
        metavar="STORE",
        default="arena_data/images",
        help="the arena's image store: a directory or an fsspec URL (default: %(default)s)",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR", help="where demo models are built (default: ~/.cache/vlm-arena)"
    )
    p.add_argument("--include-named", action="store_true", help=f"also {verb} named (non-anonymous) battles")
    p.add_argument("--voted-only", action="store_true", help="only battles with a human vote")
    p.add_argument(
        "--since", type=iso_date, metavar="DATE", help="battles started on or after (ISO date/time, UTC)"
    )
    p.add_argument(
        "--until", type=iso_date, metavar="DATE", help="battles started before (ISO date/time, UTC)"
    )


__all__ = [
    "add_model_run_options",
    "CliError",
    "add_anchor_option",
    "add_bootstrap_options",
    "add_dedup_distance_option",
    "add_dedup_options",
    "add_output_options",
    "iso_date",
    "non_negative_int",
    "parse_anchor",
    "positive_int",
]
