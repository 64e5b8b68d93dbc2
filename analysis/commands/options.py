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


__all__ = [
    "CliError",
    "add_anchor_option",
    "add_bootstrap_options",
    "add_output_options",
    "iso_date",
    "non_negative_int",
    "parse_anchor",
    "positive_int",
]
