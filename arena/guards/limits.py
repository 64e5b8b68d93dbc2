"""Per-voter rate limits, counted from the database (see :mod:`storage.voter_guards`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.voter_guards import LimitReached

#: What a banned voter sees: no reason, no appeal form, nothing to probe.
BANNED_MESSAGE = "This session can no longer start battles or vote."


@dataclass(frozen=True)
class RateLimits:
    """How much one voter (a browser session, and all sessions from its IP hash) may do; 0: no limit."""

    battles_per_hour: int = 60
    votes_per_day: int = 500


def _wait(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    if minutes < 90:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = round(minutes / 60)
    return f"{hours} hour{'s' if hours != 1 else ''}"


def limit_message(what: str, reached: LimitReached, now: datetime) -> str:
    """A voter-facing explanation of a reached limit that says when they can go on."""
    if reached.limit == 1 and what.endswith("s"):
        what = what[:-1]  # "the limit of 1 new battle"
    period = "hour" if reached.window.total_seconds() <= 3600 else "24 hours"
    when = reached.retry_at.strftime("%H:%M UTC")
    wait = _wait((reached.retry_at - now).total_seconds())
    return (
        f"You have reached the limit of {reached.limit} {what} per {period}. "
        f"You can go on at {when} (in about {wait}). Thank you for taking part!"
    )
