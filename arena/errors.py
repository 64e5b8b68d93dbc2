"""The one exception type whose message the arena shows to a voter as it is."""

from __future__ import annotations


class ArenaError(Exception):
    """A request the arena refuses; the message is safe to show to the voter as it is."""
