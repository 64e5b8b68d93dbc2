"""The rows the admin page and ``python -m arena admin`` show: plain, frozen records built by
:class:`arena.admin.AdminService` (import them from there)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ModelOverview:
    """One model as the Models tab and ``admin models`` show it."""

    name: str
    display_name: str
    enabled: bool
    sampling_weight: float
    deprecated: bool
    votes_total: int
    votes_24h: int
    #: "healthy", "unhealthy: <last error>", "not loaded" (no backend in this process) or "unknown".
    health: str
    #: Figures over the most recent responses (see AdminService.models_overview); None without any.
    responses: int
    ttft_median_s: float | None
    ttft_p95_s: float | None
    tokens_per_s: float | None
    error_rate: float | None
    #: Share of the anonymous battles started in the last 24 h that had this model (None: no battles).
    battle_share_24h: float | None = None

    @property
    def sampled(self) -> bool:
        """Whether the settings let battles draw this model (health aside)."""
        return self.enabled and not self.deprecated and self.sampling_weight > 0


@dataclass(frozen=True)
class ProblemBattle:
    """A battle an operator may want to look at, with every reason it is listed."""

    id: str
    created_at: datetime
    mode: str
    state: str
    model_a: str
    model_b: str | None
    problems: tuple[str, ...]
    excluded: bool
    voted: bool


@dataclass(frozen=True)
class FlaggedVoter:
    """A voter session flagged as banned or anomalous, with how much it voted."""

    session_id: str
    banned: bool
    anomalous: bool
    votes: int
    created_at: datetime
    user_agent: str | None


@dataclass(frozen=True)
class ImageRef:
    """An image of a turn: its content hash and, when the image store has it, its file."""

    sha256: str
    path: str | None


@dataclass(frozen=True)
class AnswerDetail:
    model: str
    text: str
    error: str | None
    finish_reason: str | None
    ttft_s: float | None


@dataclass(frozen=True)
class TurnDetail:
    index: int
    prompt: str
    images: tuple[ImageRef, ...]
    answer_a: AnswerDetail | None
    answer_b: AnswerDetail | None


@dataclass(frozen=True)
class BattleDetail:
    """Everything about one battle: the models, each turn with its images and answers, the vote."""

    id: str
    mode: str
    state: str
    invalid_reason: str | None
    identity_leak: bool
    #: What the leak was ("identity leak: answer B named “OpenAI”"), when there was one.
    leak: str | None
    excluded: bool
    source: str
    created_at: datetime
    model_a: str
    model_b: str | None
    session_id: str | None
    winner: str | None
    vote_reason: str | None
    voted_at: datetime | None
    voter: str | None
    moderation: tuple[str, ...]
    turns: tuple[TurnDetail, ...]


@dataclass(frozen=True)
class JudgeResultRow:
    """One stored ``analysis_results`` row: what was computed, about whom, how, and when."""

    id: int
    kind: str
    subject: str
    params: dict[str, Any]
    summary: str
    computed_at: datetime
    result: dict[str, Any]


@dataclass(frozen=True)
class AuditRow:
    id: int
    created_at: datetime
    actor: str
    action: str
    target: str
    old: dict[str, Any]
    new: dict[str, Any]


def leak_text(term: str | None, side: str | None) -> str:
    """An identity leak as operators read it: which answer named what."""
    if not term:
        return "identity leak"
    return f"identity leak: answer {(side or '?').upper()} named “{term}”"
