"""Operator actions and overviews for the admin page and ``python -m arena admin``.

Both front ends call the same :class:`AdminService` functions, so a change made from the command line
and one made on the page are validated, stored and audited the same way. The database is the source
of truth for a model's ``enabled`` / ``sampling_weight`` / ``deprecated`` settings (the roster YAML
only seeds new models); every running :class:`arena.service.BattleService` reads them again at most
every ``ARENA_MODEL_REFRESH_S`` seconds. Every change writes an ``audit_log`` row (who, when, old →
new) in the same transaction as the change itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from analysis.dedup import DuplicateGroup
from arena.admin_records import (
    AnswerDetail,
    AuditRow,
    BattleDetail,
    FlaggedVoter,
    ImageRef,
    JudgeResultRow,
    ModelOverview,
    ProblemBattle,
    TurnDetail,
    leak_text,
)
from arena.admin_stats import MIN_SAMPLES, MODEL_RESPONSES, RESPONSE_WINDOW, VoteTally, response_timing
from models.health import HealthMonitor
from storage import repo
from storage.images import ImageStore
from storage.schema import (
    AnalysisResult,
    AuditEntry,
    Battle,
    ModelRow,
    ModerationFlag,
    Response,
    Turn,
    Vote,
    VoterSession,
)
from storage.sql import as_utc, utc_now
from storage.vocabulary import ANONY, INVALID, VOTED

#: The audit log's action names (the ``audit_log.action`` vocabulary).
ACTION_SET_MODEL = "set-model"
ACTION_EXCLUDE_BATTLE = "exclude-battle"
ACTION_INCLUDE_BATTLE = "include-battle"
ACTION_BAN_VOTER = "ban-voter"
ACTION_UNBAN_VOTER = "unban-voter"
AUDIT_ACTIONS = (
    ACTION_SET_MODEL,
    ACTION_EXCLUDE_BATTLE,
    ACTION_INCLUDE_BATTLE,
    ACTION_BAN_VOTER,
    ACTION_UNBAN_VOTER,
)
#: The health label of a model when no health monitor is available (the command line).
HEALTH_UNKNOWN = "unknown"


class AdminError(ValueError):
    """An operator request that was refused; the message is safe to show to the operator as it is."""


def parse_weight(value: object) -> float:
    """A sampling weight from a number or its text: finite and at least 0, else :class:`AdminError`."""
    if isinstance(value, bool):
        raise AdminError(f"the sampling weight must be a number, not {value!r}")
    try:
        weight = float(value)  # type: ignore[arg-type]  # any value float() accepts; the rest raise below
    except (TypeError, ValueError):
        raise AdminError(f"the sampling weight must be a number, not {value!r}") from None
    if not math.isfinite(weight):
        raise AdminError(f"the sampling weight must be a finite number, not {value!r}")
    if weight < 0:
        raise AdminError(f"the sampling weight must be 0 or more, not {weight:g}")
    return weight


def _summary(result: dict[str, Any], limit: int = 8) -> str:
    """The top-level numbers and words of a stored result, e.g. ``n=412, cohen_kappa=0.61``."""
    parts = []
    for key, value in result.items():
        if isinstance(value, bool) or value is None or isinstance(value, dict | list):
            continue
        if isinstance(value, float):
            parts.append(f"{key}={value:.3g}")
        elif isinstance(value, int | str):
            parts.append(f"{key}={value}")
        if len(parts) == limit:
            break
    return ", ".join(parts)


class AdminService:
    """Reads and changes what operators manage: model settings, battle exclusion, voter bans."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        now: Callable[[], datetime] = utc_now,
        health: HealthMonitor | None = None,
        images: ImageStore | None = None,
        response_window: int = RESPONSE_WINDOW,
        min_samples: int = MIN_SAMPLES,
        model_responses: int = MODEL_RESPONSES,
    ) -> None:
        self.sessions = sessions
        self.now = now
        self.health = health
        self.images = images
        self.timing_limits = {
            "window": response_window,
            "min_samples": min_samples,
            "per_model": model_responses,
        }
        #: votes per model, kept between calls (see arena.admin_stats.VoteTally)
        self.tally = VoteTally()

    # -- models ----------------------------------------------------------------------------------

    def models_overview(self) -> list[ModelOverview]:
        """One row per model, by name: its settings, votes in total and in the last 24 hours, its share
        of the anonymous battles started in the last 24 hours, health, and time to first token,
        tokens/s and error rate from recent responses.

        See :mod:`arena.admin_stats` for how these are read: votes through one GROUP BY over model
        pairs (after the first call only for the new votes), speed and errors from the arena's last
        ``response_window`` responses (a model with fewer than ``min_samples`` there: its own last
        ``model_responses``), durations computed in SQL and percentiles in numpy.
        """
        with self.sessions() as db:
            models = db.execute(
                select(
                    ModelRow.id,
                    ModelRow.name,
                    ModelRow.display_name,
                    ModelRow.enabled,
                    ModelRow.sampling_weight,
                    ModelRow.deprecated,
                ).order_by(ModelRow.name)
            ).all()
            since = self.now() - timedelta(hours=24)
            totals, recent = self.tally.counts(db, since)
            shares = battle_shares(db, since)
            timing = response_timing(db, [row.id for row in models], **self.timing_limits)
        health = self.health.snapshot() if self.health is not None else None
        out = []
        for row in models:
            if health is None:
                label = HEALTH_UNKNOWN
            elif row.name not in health:
                label = "not loaded"
            else:
                state = health[row.name]
                label = "healthy" if state.healthy else f"unhealthy: {state.last_error or 'failed'}"
            out.append(
                ModelOverview(
                    name=row.name,
                    display_name=row.display_name,
                    enabled=bool(row.enabled),
                    sampling_weight=float(row.sampling_weight),
                    deprecated=bool(row.deprecated),
                    votes_total=totals.get(row.id, 0),
                    votes_24h=recent.get(row.id, 0),
                    health=label,
                    **timing[row.id],
                    battle_share_24h=shares.get(row.id, 0.0) if shares else None,
                )
            )
        return out

    def set_model(
        self,
        actor: str,
        name: str,
        *,
        enabled: bool | None = None,
        weight: float | str | None = None,
        deprecated: bool | None = None,
    ) -> ModelOverview:
        """Change a model's settings and audit the change, in one transaction.

        Refused with :class:`AdminError` (and nothing changed) for an unknown model, a weight that is
        not a finite number ≥ 0, or no change requested. Setting values a model already has writes
        nothing. Returns the model's overview after the change.
        """
        actor = self._actor(actor)
        if enabled is None and weight is None and deprecated is None:
            raise AdminError("no change requested: give enabled, weight or deprecated")
        new_weight = parse_weight(weight) if weight is not None else None
        with self.sessions.begin() as db:
            row = db.execute(
                select(ModelRow.id, ModelRow.enabled, ModelRow.sampling_weight, ModelRow.deprecated)
                .where(ModelRow.name == name)
                .with_for_update()
            ).first()
            if row is None:
                raise AdminError(f"unknown model {name!r}")
            old = {
                "enabled": bool(row.enabled),
                "sampling_weight": float(row.sampling_weight),
                "deprecated": bool(row.deprecated),
            }
            new = dict(old)
            if enabled is not None:
                new["enabled"] = bool(enabled)
            if new_weight is not None:
                new["sampling_weight"] = new_weight
            if deprecated is not None:
                new["deprecated"] = bool(deprecated)
            if new != old:
                db.execute(update(ModelRow).where(ModelRow.id == row.id).values(**new))
                self._audit(db, actor, ACTION_SET_MODEL, name, old, new)
        return next(m for m in self.models_overview() if m.name == name)

    # -- battles and voters ----------------------------------------------------------------------

    def set_battle_excluded(self, actor: str, battle_id: str, excluded: bool) -> None:
        """Leave a battle out of ratings (or count it again); audited. Unknown id: AdminError."""
        actions = (ACTION_INCLUDE_BATTLE, ACTION_EXCLUDE_BATTLE)
        unknown = f"unknown battle {battle_id!r}"
        self._set_flag(actor, Battle, battle_id, "excluded", bool(excluded), actions, unknown)

    def set_voter_banned(self, actor: str, session_id: str, banned: bool) -> None:
        """Ban a voter session (its votes stop counting) or lift the ban; audited."""
        actions = (ACTION_UNBAN_VOTER, ACTION_BAN_VOTER)
        unknown = f"unknown voter session {session_id!r}"
        self._set_flag(actor, VoterSession, session_id, "banned", bool(banned), actions, unknown)

    def _set_flag(
        self,
        actor: str,
        table: type[Battle] | type[VoterSession],
        key: str,
        column: str,
        value: bool,
        actions: tuple[str, str],
        unknown: str,
    ) -> None:
        """Set one row's boolean ``column``, audited as ``actions[value]``; a no-op is not audited."""
        actor = self._actor(actor)
        with self.sessions.begin() as db:
            current = db.execute(
                select(getattr(table, column)).where(table.id == key).with_for_update()
            ).scalar_one_or_none()
            if current is None:
                raise AdminError(unknown)
            if bool(current) == value:
                return
            db.execute(update(table).where(table.id == key).values({column: value}))
            self._audit(db, actor, actions[value], key, {column: bool(current)}, {column: value})

    def problem_battles(self, limit: int = 200) -> list[ProblemBattle]:
        """The most recently updated battles that are invalid, leaked a model's identity, carry an
        unresolved moderation flag, or were excluded by an operator; each with its reasons."""
        flagged = select(ModerationFlag.battle_id).where(
            ModerationFlag.battle_id.is_not(None), ModerationFlag.resolved.is_(False)
        )
        a, b = ModelRow.__table__.alias("ma"), ModelRow.__table__.alias("mb")
        with self.sessions() as db:
            rows = db.execute(
                select(
                    Battle.id,
                    Battle.created_at,
                    Battle.mode,
                    Battle.state,
                    Battle.invalid_reason,
                    Battle.identity_leak,
                    Battle.excluded,
                    a.c.name,
                    b.c.name,
                    Battle.identity_leak_term,
                    Battle.identity_leak_side,
                )
                .join(a, a.c.id == Battle.model_a_id)
                .outerjoin(b, b.c.id == Battle.model_b_id)
                .where(
                    or_(
                        Battle.state == INVALID,
                        Battle.identity_leak.is_(True),
                        Battle.excluded.is_(True),
                        Battle.id.in_(flagged),
                    )
                )
                .order_by(Battle.updated_at.desc(), Battle.id)
                .limit(limit)
            ).all()
            ids = [r.id for r in rows]
            flags: dict[str | None, list[str]] = {}
            if ids:
                for battle_id, reason, detail in db.execute(
                    select(ModerationFlag.battle_id, ModerationFlag.reason, ModerationFlag.detail)
                    .where(ModerationFlag.battle_id.in_(ids), ModerationFlag.resolved.is_(False))
                    .order_by(ModerationFlag.id)
                ):
                    flags.setdefault(battle_id, []).append(
                        f"moderation: {reason}" + (f" ({detail})" if detail else "")
                    )
        out = []
        for r in rows:
            problems = []
            if r.state == INVALID:
                problems.append(f"invalid: {r.invalid_reason or 'no reason recorded'}")
            if r.identity_leak:
                problems.append(leak_text(r.identity_leak_term, r.identity_leak_side))
            problems.extend(flags.get(r.id, []))
            if r.excluded:
                problems.append("excluded by an operator")
            out.append(
                ProblemBattle(
                    id=r.id,
                    created_at=as_utc(r.created_at),
                    mode=r.mode,
                    state=r.state,
                    model_a=r[7],
                    model_b=r[8],
                    problems=tuple(problems),
                    excluded=bool(r.excluded),
                    voted=r.state == VOTED,
                )
            )
        return out

    def flagged_voters(self, limit: int = 200) -> list[FlaggedVoter]:
        """Voter sessions flagged as banned or anomalous, most votes first."""
        votes = (
            select(Vote.session_id, func.count().label("votes"))
            .join(VoterSession, VoterSession.id == Vote.session_id)
            .where(VoterSession.banned | VoterSession.anomalous)
            .group_by(Vote.session_id)
            .subquery()
        )
        count = func.coalesce(votes.c.votes, 0)
        with self.sessions() as db:
            rows = db.execute(
                select(
                    VoterSession.id,
                    VoterSession.banned,
                    VoterSession.anomalous,
                    count,
                    VoterSession.created_at,
                    VoterSession.user_agent,
                )
                .outerjoin(votes, votes.c.session_id == VoterSession.id)
                .where(VoterSession.banned | VoterSession.anomalous)
                .order_by(count.desc(), VoterSession.id)
                .limit(limit)
            ).all()
        return [
            FlaggedVoter(
                session_id=sid,
                banned=bool(banned),
                anomalous=bool(anomalous),
                votes=int(n),
                created_at=as_utc(created),
                user_agent=agent,
            )
            for sid, banned, anomalous, n, created, agent in rows
        ]

    def battle_detail(self, battle_id: str) -> BattleDetail:
        """One battle in full: each turn's prompt, images (hash and file) and both answers, the vote."""
        battle_id = (battle_id or "").strip()
        with self.sessions() as db:
            battle = db.get(Battle, battle_id) if battle_id else None
            if battle is None:
                raise AdminError(f"unknown battle {battle_id!r}")
            names = dict(db.execute(select(ModelRow.id, ModelRow.name)).all())
            vote = db.execute(select(Vote).where(Vote.battle_id == battle_id)).scalar_one_or_none()
            turns = db.execute(select(Turn).where(Turn.battle_id == battle_id).order_by(Turn.index)).scalars()
            turn_rows = list(turns)
            turn_ids = [t.id for t in turn_rows]
            images = repo.turn_image_hashes(db, turn_ids)
            answers: dict[tuple[int, str], AnswerDetail] = {}
            if turn_ids:
                for resp in db.execute(
                    select(Response).where(Response.turn_id.in_(turn_ids), Response.superseded.is_(False))
                ).scalars():
                    started, first = as_utc(resp.started_at), as_utc(resp.first_token_at)
                    answers[(resp.turn_id, resp.side)] = AnswerDetail(
                        model=names.get(resp.model_id, "?"),
                        text=resp.text,
                        error=resp.error,
                        finish_reason=resp.finish_reason,
                        ttft_s=(first - started).total_seconds() if first and started else None,
                    )
            moderation = tuple(
                f"{reason}" + (f" ({detail})" if detail else "") + (" [resolved]" if resolved else "")
                for reason, detail, resolved in db.execute(
                    select(ModerationFlag.reason, ModerationFlag.detail, ModerationFlag.resolved)
                    .where(ModerationFlag.battle_id == battle_id)
                    .order_by(ModerationFlag.id)
                )
            )
        return BattleDetail(
            id=battle.id,
            mode=battle.mode,
            state=battle.state,
            invalid_reason=battle.invalid_reason,
            identity_leak=bool(battle.identity_leak),
            leak=leak_text(battle.identity_leak_term, battle.identity_leak_side)
            if battle.identity_leak
            else None,
            excluded=bool(battle.excluded),
            source=battle.source,
            created_at=as_utc(battle.created_at),
            model_a=names.get(battle.model_a_id, "?"),
            model_b=names.get(battle.model_b_id) if battle.model_b_id is not None else None,
            session_id=battle.session_id,
            winner=vote.winner if vote else None,
            vote_reason=vote.reason if vote else None,
            voted_at=as_utc(vote.created_at) if vote else None,
            voter=(vote.judge or vote.session_id) if vote else None,
            moderation=moderation,
            turns=tuple(
                TurnDetail(
                    index=t.index,
                    prompt=t.prompt,
                    images=tuple(ImageRef(sha, self._image_path(sha)) for sha in images.get(t.id, [])),
                    answer_a=answers.get((t.id, "a")),
                    answer_b=answers.get((t.id, "b")),
                )
                for t in turn_rows
            ),
        )

    def _image_path(self, sha256: str) -> str | None:
        if self.images is None:
            return None
        path = self.images.local_file(sha256)  # a directory store's own file, or a cached copy
        return str(path) if path is not None else None

    # -- judges and the audit log ----------------------------------------------------------------

    def judge_results(self, limit: int = 200) -> list[JudgeResultRow]:
        """Stored analysis results (judge agreement, judge leaderboards, …), newest first."""
        with self.sessions() as db:
            rows = db.execute(
                select(AnalysisResult)
                .order_by(AnalysisResult.computed_at.desc(), AnalysisResult.id.desc())
                .limit(limit)
            ).scalars()
            return [
                JudgeResultRow(
                    id=r.id,
                    kind=r.kind,
                    subject=r.subject,
                    params=dict(r.params or {}),
                    summary=_summary(dict(r.result or {})),
                    computed_at=as_utc(r.computed_at),
                    result=dict(r.result or {}),
                )
                for r in rows
            ]

    def audit_log(self, limit: int = 200) -> list[AuditRow]:
        """The most recent operator actions, newest first."""
        with self.sessions() as db:
            rows = db.execute(
                select(AuditEntry).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit)
            ).scalars()
            return [
                AuditRow(
                    r.id,
                    as_utc(r.created_at),
                    r.actor,
                    r.action,
                    r.target,
                    dict(r.old),
                    dict(r.new),
                )
                for r in rows
            ]

    def duplicate_groups(self, top: int = 20, max_distance: int | None = None) -> list[DuplicateGroup]:
        """The ``top`` largest groups of duplicate first turns among the votes the public leaderboard
        counts (``analysis.dedup``, pHashes within ``max_distance`` bits, default 6); pictures whose
        pHash is not stored yet are hashed from the image store first, once."""
        from analysis.dedup import DEFAULT_MAX_DISTANCE, describe_groups, duplicate_groups, prompt_records
        from storage.counts import VoteFilter
        from storage.dedup import backfill_phashes, first_turns

        if self.images is not None:
            backfill_phashes(self.sessions, self.images)
        with self.sessions() as db:
            records = prompt_records(first_turns(db, VoteFilter()))
        k = DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
        return describe_groups(records, duplicate_groups(records, k)[:top])

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _actor(actor: str) -> str:
        actor = (actor or "").strip()
        if not actor:
            raise AdminError("an action needs an actor (who is making the change)")
        return actor[:200]

    def _audit(
        self, db: Session, actor: str, action: str, target: str, old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        db.add(AuditEntry(actor=actor, action=action, target=target, old=old, new=new, created_at=self.now()))


def battle_shares(db: Session, since: datetime) -> dict[int, float]:
    """Per model id: the share of the anonymous battles started since ``since`` that it was in (the
    sampling policy's fairness floor is about this share); empty when there were none."""
    rows = db.execute(
        select(Battle.model_a_id, Battle.model_b_id, func.count())
        .where(Battle.created_at >= since, Battle.mode == ANONY)
        .group_by(Battle.model_a_id, Battle.model_b_id)
    ).all()
    total = sum(int(n) for _, _, n in rows)
    if not total:
        return {}
    per_model: dict[int, int] = {}
    for model_a, model_b, n in rows:
        for model in {model_a, model_b}:
            if model is not None:
                per_model[model] = per_model.get(model, 0) + int(n)
    return {model: n / total for model, n in per_model.items()}


def overview_records(rows: Sequence[ModelOverview]) -> list[dict[str, Any]]:
    """Model overviews as JSON-ready dicts (the CLI's ``--format json``)."""
    return [asdict(r) for r in rows]


__all__ = [
    "ACTION_BAN_VOTER",
    "ACTION_EXCLUDE_BATTLE",
    "ACTION_INCLUDE_BATTLE",
    "ACTION_SET_MODEL",
    "ACTION_UNBAN_VOTER",
    "AUDIT_ACTIONS",
    "AdminError",
    "AdminService",
    "AnswerDetail",
    "AuditRow",
    "BattleDetail",
    "battle_shares",
    "FlaggedVoter",
    "ImageRef",
    "JudgeResultRow",
    "ModelOverview",
    "ProblemBattle",
    "TurnDetail",
    "overview_records",
    "parse_weight",
]
