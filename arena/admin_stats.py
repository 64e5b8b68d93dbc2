"""The figures behind the admin page's Models table, read so that a million votes stay cheap.

* Votes per model (:class:`VoteTally`): one GROUP BY over model pairs of the votes joined to their
  battles, done in full once and then only for votes newer than the last one counted (votes have
  increasing ids); the total vote count is checked on every call, and any mismatch (deleted votes, a
  vote committed out of id order) makes the next count a full one. Votes in the last 24 hours come
  from the index on ``votes.created_at``.
* Speed and errors (:func:`response_timing`): durations computed in SQL over the most recent
  responses of the whole arena (one range of the primary key, read in order), grouped in numpy; a
  model with too few responses in that range gets its own most recent ones (an index range).

Nothing here builds one Python object per vote.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from storage.schema import Battle, Response, Vote

#: Responses (the arena's most recent, by id) that speed and error figures are read from.
RESPONSE_WINDOW = 100_000
#: A model with fewer responses than this in the window gets its own most recent ones instead...
MIN_SAMPLES = 100
#: ...this many of them.
MODEL_RESPONSES = 2000

_NO_TIMING: dict[str, Any] = {
    "responses": 0,
    "ttft_median_s": None,
    "ttft_p95_s": None,
    "tokens_per_s": None,
    "error_rate": None,
}


def _seconds(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    """Seconds from ``earlier`` to ``later``, computed in SQL on either database."""
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _pair_counts(rows: Iterable[tuple[int | None, int | None, int]], into: dict[int, int]) -> int:
    """Add (model_a, model_b, votes) rows to per-model counts; return the votes added."""
    added = 0
    for model_a, model_b, count in rows:
        added += int(count)
        for model in (model_a, model_b):
            if model is not None:
                into[model] = into.get(model, 0) + int(count)
    return added


class VoteTally:
    """Votes per model id, kept by one process across calls (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_model: dict[int, int] | None = None
        self._max_id = 0
        self._total = 0
        #: full recounts so far (for tests and logs)
        self.full_counts = 0

    @staticmethod
    def _pairs(
        db: Session, after_id: int | None, upto_id: int
    ) -> Iterable[tuple[int | None, int | None, int]]:
        stmt = (
            select(Battle.model_a_id, Battle.model_b_id, func.count())
            .join(Vote, Vote.battle_id == Battle.id)
            .where(Vote.id <= upto_id)
            .group_by(Battle.model_a_id, Battle.model_b_id)
        )
        if after_id is not None:
            stmt = stmt.where(Vote.id > after_id)
        return db.execute(stmt)

    def counts(self, db: Session, since: datetime) -> tuple[dict[int, int], dict[int, int]]:
        """Votes per model id: in total, and cast at or after ``since``."""
        total, max_id = db.execute(select(func.count(), func.coalesce(func.max(Vote.id), 0))).one()
        with self._lock:
            per_model: dict[int, int] | None
            if self._per_model is not None and max_id >= self._max_id:
                per_model = dict(self._per_model)
                added = _pair_counts(self._pairs(db, self._max_id, max_id), per_model)
                if self._total + added != total:
                    per_model = None
            else:
                per_model = None
            if per_model is None:
                per_model = {}
                _pair_counts(self._pairs(db, None, max_id), per_model)
                self.full_counts += 1
            self._per_model, self._max_id, self._total = per_model, int(max_id), int(total)
        recent: dict[int, int] = {}
        _pair_counts(
            db.execute(
                select(Battle.model_a_id, Battle.model_b_id, func.count())
                .select_from(Vote)
                .join(Battle, Battle.id == Vote.battle_id)
                .where(Vote.created_at >= since)
                .group_by(Battle.model_a_id, Battle.model_b_id)
            ),
            recent,
        )
        return dict(per_model), recent


def _timing_columns(dialect: str) -> list[Any]:
    return [
        _seconds(Response.first_token_at, Response.started_at, dialect),
        _seconds(Response.finished_at, Response.first_token_at, dialect),
        func.coalesce(Response.output_tokens, Response.output_chunks),
        case((Response.error.is_(None), 0), else_=1),
    ]


def _matrix(rows: Sequence[Any], width: int) -> np.ndarray:
    """Result rows as a float matrix, NULL as NaN (plain tuples first: numpy is slow on Row objects)."""
    return np.array([tuple(r) for r in rows], dtype=np.float64).reshape(-1, width)


def _summary(data: np.ndarray) -> dict[str, Any]:
    """Figures from rows of (ttft s, seconds after the first token, tokens, failed)."""
    if not len(data):
        return dict(_NO_TIMING)
    ttft = data[:, 0][np.isfinite(data[:, 0])]
    generation, tokens = data[:, 1], data[:, 2]
    ok = np.isfinite(generation) & (generation > 0) & (tokens > 0)
    speeds = tokens[ok] / generation[ok]
    return {
        "responses": int(len(data)),
        "ttft_median_s": float(np.median(ttft)) if ttft.size else None,
        "ttft_p95_s": float(np.percentile(ttft, 95)) if ttft.size else None,
        "tokens_per_s": float(np.median(speeds)) if speeds.size else None,
        "error_rate": float(data[:, 3].mean()),
    }


def response_timing(
    db: Session,
    model_ids: Sequence[int],
    *,
    window: int = RESPONSE_WINDOW,
    min_samples: int = MIN_SAMPLES,
    per_model: int = MODEL_RESPONSES,
) -> dict[int, dict[str, Any]]:
    """Per model id: responses counted, median and p95 time to first token, median tokens/s after the
    first token (tokens, or streamed chunks when the backend did not count tokens), error rate.

    Read from the arena's last ``window`` responses; a model with fewer than ``min_samples`` of them
    there is read from its own last ``per_model`` responses.
    """
    dialect = db.get_bind().dialect.name
    columns = _timing_columns(dialect)
    last = db.execute(select(func.coalesce(func.max(Response.id), 0))).scalar_one()
    rows = db.execute(select(Response.model_id, *columns).where(Response.id > last - window)).all()
    data = _matrix(rows, 5)
    out: dict[int, dict[str, Any]] = {}
    for model_id in model_ids:
        mine = data[data[:, 0] == model_id, 1:]
        if len(mine) < min_samples:
            own = db.execute(
                select(*columns)
                .where(Response.model_id == model_id)
                .order_by(Response.id.desc())
                .limit(per_model)
            ).all()
            mine = _matrix(own, 4)
        out[model_id] = _summary(mine)
    return out
