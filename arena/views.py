"""Leaderboard views: what each snapshot shows, and how one is computed from the database.

A view is a method (Bradley–Terry, online Elo, Davidson, Rao–Kupper, style-controlled BT) over a set of
votes (anonymous only or all, a category tag, a time window). ``compute_view`` builds one view's
snapshot payload from counts aggregated in SQL (``storage.counts``) or, for Elo and style control, from
per-vote integer columns (``storage.snapshots.battle_arrays``); it never builds one object per vote.

Few votes: a model is rated only once it has at least ``min_votes`` votes in the view. The fit then
uses only the battles among such models, and only the largest group of them whose ratings can be
estimated at all: every model of the group has won and lost (a tie counts as both) against others of
the group, directly or through others (the graph of "scored against" is strongly connected). Outside
such a group the maximum-likelihood rating is infinite, which is what showed up as 2235 / −235 after
one vote. Every other model is listed under ``not_enough_votes``; a rating or interval that is not
finite is never published.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sqlalchemy.orm import Session

from analysis.pairs import aggregated_from_counts, leaderboard_from_counts
from analysis.ratings import SUMMARY_COLUMNS, Aggregated, online_elo, rank_upper_bound, summarize
from analysis.style import style_ratings_table
from storage import repo
from storage.counts import VoteFilter, pair_outcome_counts, votes_per_day
from storage.snapshots import battle_arrays
from storage.vocabulary import WINNERS

ViewMethod = Literal["bt", "elo", "davidson", "rao-kupper"]

#: Key prefix of the per-category views: ``bt:cat=<tag>``.
CATEGORY_PREFIX = "bt:cat="
#: Category views kept: the tags with the most votes.
TOP_CATEGORIES = 10
#: Heavy views are refreshed at most once every this many refresh periods; ``bt`` and the two tie
#: models (which share one count query) whenever votes change. Heavy: Elo and style control (they read
#: every vote), and the views with a query of their own (all votes, time windows, categories).
HEAVY_EVERY = 5
#: Bootstrap rounds of the style-controlled view (it has no sandwich intervals; each round refits
#: every vote, so this stays small).
STYLE_BOOTSTRAP = 20
#: U+2212, the minus sign the interval column prints.
MINUS = "\u2212"


@dataclass(frozen=True)
class ViewSpec:
    """One leaderboard view: its key, its title, who sees it, and what it computes from which votes."""

    key: str
    title: str
    #: shown on the public Leaderboard tab (the admin page shows every view)
    public: bool
    method: ViewMethod = "bt"
    style_control: bool = False
    anony_only: bool = True
    category: str | None = None
    window_days: int | None = None
    #: refreshed at most once every this many refresh periods (1: whenever the votes change)
    every: int = 1

    def vote_filter(self, now: datetime) -> VoteFilter:
        """The votes this view counts, at ``now`` (time windows end now)."""
        since = now - timedelta(days=self.window_days) if self.window_days else None
        return VoteFilter(anony_only=self.anony_only, since=since, category=self.category)

    def version(self, data_version: str, now: datetime) -> str:
        """The data version a snapshot of this view is current for: a time window also moves hourly."""
        if self.window_days:
            return f"{data_version}@{now:%Y%m%d%H}"
        return data_version


STANDARD_VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec("bt", "Bradley–Terry (anonymous votes)", public=True),
    ViewSpec(
        "bt-style",
        "Style-controlled Bradley–Terry (anonymous votes, answer length controlled)",
        public=True,
        style_control=True,
        every=HEAVY_EVERY,
    ),
    ViewSpec("davidson", "Davidson ties model (anonymous votes)", public=False, method="davidson"),
    ViewSpec("rao-kupper", "Rao–Kupper ties model (anonymous votes)", public=False, method="rao-kupper"),
    ViewSpec(
        "bt-all",
        "Bradley–Terry (anonymous and named votes)",
        public=False,
        anony_only=False,
        every=HEAVY_EVERY,
    ),
    ViewSpec(
        "bt-7d",
        "Bradley–Terry (anonymous votes, last 7 days)",
        public=False,
        window_days=7,
        every=HEAVY_EVERY,
    ),
    ViewSpec(
        "bt-30d",
        "Bradley–Terry (anonymous votes, last 30 days)",
        public=False,
        window_days=30,
        every=HEAVY_EVERY,
    ),
    ViewSpec(
        "elo", "Online Elo (anonymous votes, in vote order)", public=False, method="elo", every=HEAVY_EVERY
    ),
)


def category_view(tag: str) -> ViewSpec:
    """The public Bradley–Terry view of the anonymous votes on battles tagged ``tag``."""
    return ViewSpec(
        f"{CATEGORY_PREFIX}{tag}",
        f"Bradley–Terry (anonymous votes, category “{tag}”)",
        public=True,
        category=tag,
        every=HEAVY_EVERY,
    )


def view_spec(key: str) -> ViewSpec | None:
    """The view a stored snapshot key names (None for a key this version does not know)."""
    for spec in STANDARD_VIEWS:
        if spec.key == key:
            return spec
    if key.startswith(CATEGORY_PREFIX) and len(key) > len(CATEGORY_PREFIX):
        return category_view(key[len(CATEGORY_PREFIX) :])
    return None


def format_interval(rating: float, lower: float, upper: float) -> str:
    """A 95% interval as distances from the rating, e.g. ``+12 / −9`` (never a doubled sign)."""
    plus = max(0, round(upper - rating))
    minus = max(0, round(rating - lower))
    return f"+{plus} / {MINUS}{minus}"


# --------------------------------------------------------------------------------------------------
# Which models get a rating
# --------------------------------------------------------------------------------------------------


def subset(agg: Aggregated, models: list[str]) -> Aggregated:
    """The pair counts among ``models`` only (a sorted subset of ``agg.models``)."""
    keep_model = np.isin(np.asarray(agg.models, dtype=object), np.asarray(models, dtype=object))
    remap = np.cumsum(keep_model) - 1
    keep = keep_model[agg.a] & keep_model[agg.b] if len(agg.a) else np.zeros(0, dtype=bool)
    return Aggregated(
        models=[m for m, k in zip(agg.models, keep_model, strict=True) if k],
        a=remap[agg.a[keep]].astype(np.int64),
        b=remap[agg.b[keep]].astype(np.int64),
        wins_a=agg.wins_a[keep],
        wins_b=agg.wins_b[keep],
        ties=agg.ties[keep],
    )


def rated_group(agg: Aggregated, min_votes: int) -> list[str]:
    """The models that get a rating: enough votes, and the largest group whose ratings are finite.

    Among the models with at least ``min_votes`` battles, draw an arrow i → j when i won or tied
    against j at least once (in battles between such models). The maximum-likelihood ratings of a
    group are finite exactly when every model can reach every other along arrows (Zermelo, Ford), so
    the largest strongly connected component is rated (ties broken by votes, then names).
    """
    votes = agg.num_battles()
    eligible = sorted(m for m in agg.models if votes[m] >= min_votes)
    if len(eligible) < 2:
        return []
    sub = subset(agg, eligible)
    m = len(sub.models)
    a_scored = (sub.wins_a + sub.ties) > 0
    b_scored = (sub.wins_b + sub.ties) > 0
    rows = np.concatenate([sub.a[a_scored], sub.b[b_scored]])
    cols = np.concatenate([sub.b[a_scored], sub.a[b_scored]])
    graph = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(m, m)).tocsr()
    _, labels = connected_components(graph, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for name, label in zip(sub.models, labels.tolist(), strict=True):
        groups.setdefault(label, []).append(name)
    best = min(groups.values(), key=lambda g: (-len(g), -sum(int(votes[x]) for x in g), g[0]))
    return best if len(best) >= 2 else []


# --------------------------------------------------------------------------------------------------
# Computing one view
# --------------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """A JSON-safe float, or None for NaN / infinity."""
    number = float(value)
    return number if math.isfinite(number) else None


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars made plain and non-finite floats made None (JSON for both databases)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _finite(value)
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _pair_counts(agg: Aggregated, order: list[str]) -> dict[str, Any]:
    """Battles and wins (ties as half) per ordered model pair, in ``order``, for the admin heatmaps."""
    index = {name: i for i, name in enumerate(order)}
    k = len(order)
    battles = np.zeros((k, k), dtype=np.int64)
    wins = np.zeros((k, k), dtype=np.float64)
    ia = np.array([index[agg.models[i]] for i in agg.a], dtype=np.int64)
    ib = np.array([index[agg.models[i]] for i in agg.b], dtype=np.int64)
    n = agg.wins_a + agg.wins_b + agg.ties
    np.add.at(battles, (ia, ib), n)
    np.add.at(battles, (ib, ia), n)
    np.add.at(wins, (ia, ib), agg.wins_a + 0.5 * agg.ties)
    np.add.at(wins, (ib, ia), agg.wins_b + 0.5 * agg.ties)
    return {"models": order, "battles": battles.tolist(), "wins": wins.tolist()}


def _battle_frame(db: Session, spec: ViewSpec, now: datetime, group: list[str]) -> pd.DataFrame:
    """The view's votes among ``group``, in vote order, as a battle frame (lengths for style control)."""
    arrays = battle_arrays(db, spec.vote_filter(now), lengths=spec.style_control)
    names = {m.id: m.name for m in repo.list_models(db)}
    categories = sorted(group)
    code = {name: i for i, name in enumerate(categories)}
    lookup = np.full(max(names, default=0) + 1, -1, dtype=np.int64)
    for model_id, name in names.items():
        lookup[model_id] = code.get(name, -1)
    ca, cb = lookup[arrays.model_a], lookup[arrays.model_b]
    keep = (ca >= 0) & (cb >= 0)
    frame = pd.DataFrame(
        {
            "model_a": pd.Categorical.from_codes(ca[keep], categories=pd.Index(categories)),
            "model_b": pd.Categorical.from_codes(cb[keep], categories=pd.Index(categories)),
            "winner": pd.Categorical.from_codes(arrays.winner[keep], categories=pd.Index(WINNERS)),
        }
    )
    if spec.style_control:
        assert arrays.len_a is not None and arrays.len_b is not None
        frame["len_a"] = arrays.len_a[keep]
        frame["len_b"] = arrays.len_b[keep]
    return frame


def _fit(
    db: Session, spec: ViewSpec, now: datetime, sub: Aggregated, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, Any], str]:
    """The leaderboard frame, extras and interval kind of ``spec`` over the rated models' votes."""
    if spec.method == "elo":
        frame = _battle_frame(db, spec, now, sub.models)
        point = online_elo(frame)
        note = "online Elo (K=4) in vote order; no intervals"
        return summarize(point, None, sub.num_battles()), {"method": "elo", "note": note}, "none"
    if spec.style_control:
        frame = _battle_frame(db, spec, now, sub.models)
        if not bool(np.any(frame["len_a"].to_numpy() != frame["len_b"].to_numpy())):
            # e.g. votes imported without their conversations: nothing to control for
            unavailable = "style control needs the models' answers, and no stored answers differ in length"
            return pd.DataFrame(columns=list(SUMMARY_COLUMNS)), {"unavailable": unavailable}, "bootstrap"
        table, coefs = style_ratings_table(frame, features=("length",), bootstrap=STYLE_BOOTSTRAP, rng=rng)
        extras = {"method": "bt", "style_control": True, "coefficients": coefs.to_dict("records")}
        return table, extras, "bootstrap"
    table, extras = leaderboard_from_counts(sub, method=spec.method, ci="sandwich")
    return table, extras, "sandwich"


class Counts:
    """The aggregate queries of one refresh cycle, each run once per vote filter (views share them)."""

    def __init__(self) -> None:
        self._pairs: dict[VoteFilter, list[tuple[str, str, str, int]]] = {}
        self._days: dict[VoteFilter, list[tuple[str, int]]] = {}

    def pairs(self, db: Session, flt: VoteFilter) -> list[tuple[str, str, str, int]]:
        """``storage.counts.pair_outcome_counts``, remembered."""
        if flt not in self._pairs:
            self._pairs[flt] = pair_outcome_counts(db, flt)
        return self._pairs[flt]

    def days(self, db: Session, flt: VoteFilter) -> list[tuple[str, int]]:
        """``storage.counts.votes_per_day``, remembered."""
        if flt not in self._days:
            self._days[flt] = votes_per_day(db, flt)
        return self._days[flt]


def compute_view(
    db: Session,
    spec: ViewSpec,
    *,
    now: datetime,
    min_votes: int,
    rng: np.random.Generator,
    counts: Counts | None = None,
) -> dict[str, Any]:
    """One view's snapshot payload (see ``arena.snapshots`` for its keys), read from ``db`` at ``now``.

    ``counts`` shares the aggregate queries between the views of one refresh.
    """
    counts = counts or Counts()
    flt = spec.vote_filter(now)
    agg = aggregated_from_counts(counts.pairs(db, flt))
    votes = agg.num_battles()
    info = {m.name: m for m in repo.list_models(db)}
    group = rated_group(agg, min_votes)
    rows: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    ci = "none" if spec.method == "elo" else "bootstrap" if spec.style_control else "sandwich"
    if group:
        table, extras, ci = _fit(db, spec, now, subset(agg, group), rng)
        finite = np.isfinite(table[["rating", "ci_lower", "ci_upper"]].to_numpy(dtype=np.float64)).all(axis=1)
        table = table[finite].reset_index(drop=True)
        ranks = rank_upper_bound(table["ci_lower"], table["ci_upper"])
        for row, rank in zip(table.itertuples(index=False), ranks.tolist(), strict=True):
            model = info.get(str(row.model))
            rows.append(
                {
                    "model": str(row.model),
                    "display_name": model.display_name if model else str(row.model),
                    "rating": float(row.rating),
                    "ci_lower": float(row.ci_lower),
                    "ci_upper": float(row.ci_upper),
                    "rank_ub": int(rank),
                    "num_battles": int(row.num_battles),
                    "organization": model.organization if model else "",
                    "license": model.license if model else "",
                    "link": model.link if model else "",
                    "deprecated": bool(model.deprecated) if model else False,
                }
            )
    rated = {r["model"] for r in rows}
    # models outside the group, and any whose fit was not finite (a style view without answers
    # rates nobody and says why in its extras)
    dropped = set(group) - rated if not extras.get("unavailable") else set()
    waiting = sorted(
        (m for m in agg.models if m not in group or m in dropped), key=lambda m: (-int(votes[m]), m)
    )
    not_enough = [
        {"model": m, "display_name": info[m].display_name if m in info else m, "votes": int(votes[m])}
        for m in waiting
    ]
    order = [r["model"] for r in rows] + sorted(m for m in agg.models if m not in rated)
    payload = {
        "rows": rows,
        "not_enough_votes": not_enough,
        "total_votes": agg.n_battles,
        "method": spec.method,
        "ci": ci,
        "min_votes": int(min_votes),
        "pair_counts": _pair_counts(agg, order),
        "votes_per_day": [{"day": day, "votes": n} for day, n in counts.days(db, flt)],
        "extras": extras,
    }
    return json_safe(payload)


__all__ = [
    "CATEGORY_PREFIX",
    "Counts",
    "HEAVY_EVERY",
    "MINUS",
    "STANDARD_VIEWS",
    "STYLE_BOOTSTRAP",
    "TOP_CATEGORIES",
    "ViewSpec",
    "category_view",
    "compute_view",
    "format_interval",
    "json_safe",
    "rated_group",
    "subset",
    "view_spec",
]
