"""Repository functions for LLM-as-judge runs: which battles still need a verdict, what the judge sees,
and storing verdicts so that a run resumes where it stopped and never judges the same thing twice.

A verdict row is keyed by (battle, judge model, template version, answer order); the unique
constraint on that key, written with ON CONFLICT DO NOTHING, is what makes resuming and concurrent
runs safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import FromClause, Select, and_, exists, func, select
from sqlalchemy.orm import Session

from storage.repo import turn_image_hashes
from storage.schema import (
    AnalysisResult,
    Battle,
    BattleTag,
    ModelRow,
    Response,
    Turn,
    Vote,
)
from storage.schema import JudgeVerdict as JudgeVerdictRow
from storage.sql import as_utc, chunked, dialect_insert, rowcount
from storage.vocabulary import ANONY, ANSWER_ORDERS, READY, VOTED

#: Battle states whose answers are complete and may be judged.
JUDGEABLE_STATES = (READY, VOTED)


def _model_aliases() -> tuple[FromClause, FromClause]:
    """Two aliases of the models table, for the names of a battle's model A and model B."""
    return ModelRow.__table__.alias("ma"), ModelRow.__table__.alias("mb")


def _with_model_names(stmt: Select[Any], a: FromClause, b: FromClause) -> Select[Any]:
    """``stmt`` (which selects from battles) joined to both sides' model rows through ``a`` and ``b``."""
    return stmt.join(a, a.c.id == Battle.model_a_id).join(b, b.c.id == Battle.model_b_id)


@dataclass(frozen=True)
class JudgeTurn:
    prompt: str
    image_hashes: list[str]
    answer_a: str
    answer_b: str


@dataclass(frozen=True)
class JudgeBattle:
    """What a judge needs of one battle: the conversation, both sides' answers, the model names."""

    battle_id: str
    model_a: str
    model_b: str
    turns: list[JudgeTurn] = field(default_factory=list)


@dataclass(frozen=True)
class NewVerdict:
    battle_id: str
    judge_model: str
    template_version: str
    answer_order: str
    verdict: str | None
    raw_output: str
    error: str | None
    input_tokens: int | None
    output_tokens: int | None
    created_at: datetime


def battles_to_judge(
    session: Session,
    *,
    judge_model: str,
    template_version: str,
    anony_only: bool = True,
    voted_only: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    category: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """Ids of complete battles that lack a verdict of this judge and template in either order, oldest first."""
    done = (
        select(func.count())
        .select_from(JudgeVerdictRow)
        .where(
            JudgeVerdictRow.battle_id == Battle.id,
            JudgeVerdictRow.judge_model == judge_model,
            JudgeVerdictRow.template_version == template_version,
        )
        .scalar_subquery()
    )
    stmt = (
        select(Battle.id)
        .where(Battle.state.in_((VOTED,) if voted_only else JUDGEABLE_STATES), Battle.model_b_id.is_not(None))
        .where(done < len(ANSWER_ORDERS))
        .order_by(Battle.created_at, Battle.id)
    )
    if anony_only:
        stmt = stmt.where(Battle.mode == ANONY)
    if since is not None:
        stmt = stmt.where(Battle.created_at >= since)
    if until is not None:
        stmt = stmt.where(Battle.created_at < until)
    if category is not None:
        stmt = stmt.where(exists().where(and_(BattleTag.battle_id == Battle.id, BattleTag.tag == category)))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def done_orders(
    session: Session, battle_ids: Sequence[str], judge_model: str, template_version: str
) -> set[tuple[str, str]]:
    """The (battle, answer order) pairs this judge and template have already answered."""
    done: set[tuple[str, str]] = set()
    for chunk in chunked(battle_ids, session):
        rows = session.execute(
            select(JudgeVerdictRow.battle_id, JudgeVerdictRow.answer_order).where(
                JudgeVerdictRow.battle_id.in_(chunk),
                JudgeVerdictRow.judge_model == judge_model,
                JudgeVerdictRow.template_version == template_version,
            )
        )
        done.update((battle_id, order) for battle_id, order in rows)
    return done


def load_for_judging(session: Session, battle_ids: Sequence[str]) -> list[JudgeBattle]:
    """The battles' conversations (prompts, image hashes, both answers per turn), in the given order."""
    a, b = _model_aliases()
    heads: dict[str, tuple[str, str]] = {}
    turns: dict[str, list[tuple[int, int, str]]] = {}
    for chunk in chunked(battle_ids, session):
        heads.update(
            (battle_id, (model_a, model_b))
            for battle_id, model_a, model_b in session.execute(
                _with_model_names(select(Battle.id, a.c.name, b.c.name), a, b).where(Battle.id.in_(chunk))
            )
        )
        for turn_id, battle_id, index, prompt in session.execute(
            select(Turn.id, Turn.battle_id, Turn.index, Turn.prompt)
            .where(Turn.battle_id.in_(chunk))
            .order_by(Turn.battle_id, Turn.index)
        ):
            turns.setdefault(battle_id, []).append((turn_id, index, prompt))
    turn_ids = [t[0] for ts in turns.values() for t in ts]
    images = turn_image_hashes(session, turn_ids)
    answers: dict[tuple[int, str], str] = {}
    for turn_chunk in chunked(turn_ids, session):
        for turn_id, side, text in session.execute(
            select(Response.turn_id, Response.side, Response.text).where(
                Response.turn_id.in_(turn_chunk), Response.superseded.is_(False)
            )
        ):
            answers[(turn_id, side)] = text
    out = []
    for battle_id in battle_ids:
        if battle_id not in heads:
            continue
        model_a, model_b = heads[battle_id]
        out.append(
            JudgeBattle(
                battle_id=battle_id,
                model_a=model_a,
                model_b=model_b,
                turns=[
                    JudgeTurn(
                        prompt=prompt,
                        image_hashes=images.get(turn_id, []),
                        answer_a=answers.get((turn_id, "a"), ""),
                        answer_b=answers.get((turn_id, "b"), ""),
                    )
                    for turn_id, _, prompt in turns.get(battle_id, [])
                ],
            )
        )
    return out


def save_verdicts(session: Session, verdicts: Iterable[NewVerdict]) -> int:
    """Insert verdicts; one that already exists for its key is left as it is. Returns rows inserted."""
    rows = [vars(v) for v in verdicts]
    if not rows:
        return 0
    stmt = dialect_insert(session, JudgeVerdictRow.__table__).values(rows)
    result = session.execute(
        stmt.on_conflict_do_nothing(
            index_elements=["battle_id", "judge_model", "template_version", "answer_order"]
        )
    )
    return rowcount(result)


def verdict_records(
    session: Session, *, judge_model: str, template_version: str | None = None
) -> list[dict[str, object]]:
    """Every stored verdict of a judge, with the battle's models and (if any) the human vote."""
    a, b = _model_aliases()
    columns = select(
        JudgeVerdictRow.battle_id,
        a.c.name,
        b.c.name,
        JudgeVerdictRow.template_version,
        JudgeVerdictRow.answer_order,
        JudgeVerdictRow.verdict,
        JudgeVerdictRow.error,
        JudgeVerdictRow.created_at,
        Vote.winner,
    ).join(Battle, Battle.id == JudgeVerdictRow.battle_id)
    stmt = (
        _with_model_names(columns, a, b)
        .outerjoin(Vote, Vote.battle_id == Battle.id)
        .where(JudgeVerdictRow.judge_model == judge_model)
        .order_by(JudgeVerdictRow.battle_id, JudgeVerdictRow.answer_order)
    )
    if template_version is not None:
        stmt = stmt.where(JudgeVerdictRow.template_version == template_version)
    return [
        {
            "battle_id": battle_id,
            "model_a": model_a,
            "model_b": model_b,
            "template_version": template,
            "answer_order": order,
            "verdict": verdict,
            "error": error,
            "tstamp": as_utc(created).timestamp(),
            "human_winner": human,
        }
        for battle_id, model_a, model_b, template, order, verdict, error, created, human in session.execute(
            stmt
        )
    ]


def save_analysis_result(
    session: Session,
    *,
    kind: str,
    subject: str,
    params: dict[str, object],
    result: dict[str, object],
    now: datetime,
) -> None:
    """Keep a computed figure set (JSON-ready dicts) for the admin page; earlier ones stay as history."""
    session.add(AnalysisResult(kind=kind, subject=subject, params=params, result=result, computed_at=now))


def latest_analysis_result(session: Session, kind: str) -> dict[str, Any] | None:
    """The newest figure set of this kind (any subject) as ``subject, params, result, computed_at``."""
    row = session.scalars(
        select(AnalysisResult)
        .where(AnalysisResult.kind == kind)
        .order_by(AnalysisResult.computed_at.desc(), AnalysisResult.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "subject": row.subject,
        "params": row.params,
        "result": row.result,
        "computed_at": row.computed_at,
    }
