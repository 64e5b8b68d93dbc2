"""What the battle service checks before it takes a request or counts a vote, in one object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from arena.guards.identity import IdentityTerms
from arena.guards.limits import RateLimits
from arena.guards.moderation import Moderator, NoModeration
from arena.guards.terms import Terms
from models.roster import ModelSpec


@dataclass(frozen=True)
class GuardPolicy:
    """Identity-leak terms, moderation, per-voter rate limits and the terms of use (None: none asked).

    The defaults (no moderation, no limits, no terms) suit tests and tools; the web app builds its
    policy from the settings (see ``arena.app``).
    """

    identity: IdentityTerms
    moderator: Moderator = field(default_factory=NoModeration)
    limits: RateLimits = RateLimits(0, 0)
    terms: Terms | None = None

    @classmethod
    def for_roster(cls, specs: Sequence[ModelSpec]) -> GuardPolicy:
        """Leak detection with the built-in terms plus the roster's names, and nothing else."""
        return cls(identity=IdentityTerms.from_specs(specs))
