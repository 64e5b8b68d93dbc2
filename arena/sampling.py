"""The live pair-sampling policy: which two models the next anonymous battle draws.

A policy turns the drawable models (enabled, weighted, healthy, able to take the images) into a
probability for every unordered pair, in three steps:

1. **Base masses.** ``uniform``: every pair alike (nothing else applies). ``weighted`` (the default, the
   arena's behaviour before policies existed): the first model drawn by weight, the second by weight
   among the rest. ``active``: the pair's share of the next votes as planned by an optimal design on
   the Bradley–Terry Fisher information (:func:`analysis.active_sampling.design_pair_probabilities`):
   first the votes that most shrink the intervals still wider than ``interval_target``, then, once the
   median interval is that narrow, those that most shrink the overlapping intervals of adjacent models
   among the top ``top_k + 1``; ``explore`` of it uniform. Times both models' weights, so an operator's
   weight still counts (weights of 1 leave it purely active).
   The weights used are the database's ``sampling_weight`` × ``boost`` for a model with fewer than
   ``boost_until_votes`` counted votes (a new model catches up, as in Chatbot Arena's ×5 until 3,000).
2. **Battle targets.** A pair where one model lists the other in its roster ``battle_targets`` gets
   ``target_boost`` times its mass.
3. **Fairness floor.** A model's share is the probability that it is in the battle; under uniform
   sampling of ``n`` models it is ``2/n``. No drawable model may fall below ``min_share × 2/n``: the
   probabilities are mixed with uniform by the smallest amount that lifts every model to the floor.

Live inputs (votes per model, ratings, intervals, pair counts) come from the current ``bt`` leaderboard snapshot,
never from a query per draw: :class:`SnapshotInputs` derives them once per snapshot, and
:class:`PairSampler` keeps the pair table it built for each (inputs, pool), so a draw is a bisection.
Without a snapshot there is no boost and no active information: ``active`` falls back to ``weighted``.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from analysis.active_sampling import design_pair_probabilities
from models.roster import ModelSpec

PolicyName = Literal["uniform", "weighted", "active"]
POLICIES: tuple[PolicyName, ...] = ("uniform", "weighted", "active")
Pair = tuple[str, str]

#: The leaderboard view the live inputs are read from.
INPUT_VIEW = "bt"
#: Pair tables kept per sampler (one per pool of drawable models and inputs version).
TABLE_CACHE_SIZE = 32


@dataclass(frozen=True)
class SamplingPolicy:
    """How battles choose their pair (see the module docstring); built from ``ARENA_SAMPLING_*``."""

    policy: PolicyName = "weighted"
    #: a model's weight is multiplied by this until it has ``boost_until_votes`` counted votes
    boost: float = 5.0
    boost_until_votes: int = 3000
    #: a pair where one model names the other in ``battle_targets`` is this much more likely
    target_boost: float = 3.0
    #: fairness floor, as a fraction of a model's uniform share ``2/n``: 0.5 = at least half of it
    min_share: float = 0.5
    #: ``active``: the full width (upper − lower, rating points) of the 95% interval that the median
    #: model should reach before votes go to separating the top models
    interval_target: float = 25.0
    #: ``active``: how many top models should end in order with separated intervals
    top_k: int = 5
    #: ``active``: share of the pairs drawn uniformly (exploration)
    explore: float = 0.1

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown sampling policy {self.policy!r} (choose from {', '.join(POLICIES)})")
        if not (math.isfinite(self.boost) and self.boost > 0):
            raise ValueError(f"boost must be a positive number, got {self.boost}")
        if self.boost_until_votes < 0:
            raise ValueError(f"boost_until_votes must be >= 0, got {self.boost_until_votes}")
        if not (math.isfinite(self.target_boost) and self.target_boost > 0):
            raise ValueError(f"target_boost must be a positive number, got {self.target_boost}")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError(
                f"min_share must be within [0, 1] (a fraction of the uniform share), got {self.min_share}"
            )
        if not (math.isfinite(self.interval_target) and self.interval_target > 0):
            raise ValueError(f"interval_target must be a positive number, got {self.interval_target}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"explore must be within [0, 1], got {self.explore}")


@dataclass(frozen=True)
class SamplingInputs:
    """What the policy knows about the models beyond their settings, from one leaderboard snapshot."""

    #: identifies the snapshot these come from (pair tables are cached by it)
    version: str
    #: counted votes per model (a model missing here has none)
    votes: Mapping[str, int] = field(default_factory=dict)
    #: ratings of the rated models (400·log10-odds scale)
    ratings: Mapping[str, float] = field(default_factory=dict)
    #: battles per unordered pair (a < b)
    pair_counts: Mapping[Pair, float] = field(default_factory=dict)
    #: half-width of each rated model's 95% interval on the leaderboard (rating points)
    half_widths: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PairTable:
    """Unordered pairs with their probabilities, ready for drawing (cumulative sums)."""

    pairs: tuple[Pair, ...]
    probabilities: tuple[float, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def from_probabilities(cls, probabilities: Mapping[Pair, float]) -> PairTable:
        pairs = tuple(p for p, q in probabilities.items() if q > 0)
        probs = tuple(probabilities[p] for p in pairs)
        running, cumulative = 0.0, []
        for q in probs:
            running += q
            cumulative.append(running)
        return cls(pairs, probs, tuple(cumulative))

    def as_dict(self) -> dict[Pair, float]:
        return dict(zip(self.pairs, self.probabilities, strict=True))


def unordered(a: str, b: str) -> Pair:
    """The pair's key: its two names in sorted order."""
    return (a, b) if a < b else (b, a)


def model_shares(probabilities: Mapping[Pair, float]) -> dict[str, float]:
    """Each model's share of battles: the probability that it is one of the pair."""
    shares: dict[str, float] = {}
    for (a, b), q in probabilities.items():
        shares[a] = shares.get(a, 0.0) + q
        shares[b] = shares.get(b, 0.0) + q
    return shares


def boosted_weights(
    weights: Mapping[str, float], votes: Mapping[str, int] | None, policy: SamplingPolicy
) -> dict[str, float]:
    """The weights × ``boost`` for models with fewer than ``boost_until_votes`` votes (no votes known:
    no boost)."""
    if votes is None:
        return dict(weights)
    return {
        name: w * (policy.boost if votes.get(name, 0) < policy.boost_until_votes else 1.0)
        for name, w in weights.items()
    }


def sequential_masses(weights: Mapping[str, float]) -> dict[Pair, float]:
    """Pair probabilities of drawing the first model by weight and the second by weight among the rest."""
    total = sum(weights.values())
    masses: dict[Pair, float] = {}
    names = sorted(weights)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            wa, wb = weights[a], weights[b]
            mass = 0.0
            if total - wa > 0:
                mass += wa / total * wb / (total - wa)
            if total - wb > 0:
                mass += wb / total * wa / (total - wb)
            masses[(a, b)] = mass
    return masses


def mix_to_floor(probabilities: Mapping[Pair, float], min_share: float) -> dict[Pair, float]:
    """Mix with uniform by the smallest λ that gives every model at least ``min_share × 2/n``.

    Under the mix ``(1−λ)·P + λ·U`` a model's share is ``(1−λ)·s + λ·2/n``, linear in λ, so the
    smallest λ is the largest ``(floor − s) / (2/n − s)`` over the models below the floor.
    """
    pairs = list(probabilities)
    names = {name for pair in pairs for name in pair}
    n = len(names)
    if n < 2 or min_share <= 0:
        return dict(probabilities)
    uniform_share = 2.0 / n
    floor = min_share * uniform_share
    shares = model_shares(probabilities)
    lam = 0.0
    for name in names:
        s = shares.get(name, 0.0)
        if s < floor:
            lam = max(lam, (floor - s) / (uniform_share - s))
    if lam <= 0:
        return dict(probabilities)
    lam = min(lam, 1.0)
    u = 1.0 / len(pairs)
    return {pair: (1.0 - lam) * q + lam * u for pair, q in probabilities.items()}


def pair_probabilities(
    weights: Mapping[str, float],
    policy: SamplingPolicy,
    *,
    votes: Mapping[str, int] | None = None,
    targets: Mapping[str, Iterable[str]] | None = None,
    active: Mapping[Pair, float] | None = None,
) -> dict[Pair, float]:
    """The probability of every unordered pair (a < b) of the drawable models ``weights`` (name →
    database sampling weight, all > 0): base masses by policy, boost, targets, then the floor.

    ``votes``: counted votes per model (None: unknown, no boost). ``targets``: a model's battle targets.
    ``active``: designed probabilities per pair (a < b) for ``policy="active"`` (:func:`active_design`);
    None falls back to ``weighted``.
    """
    names = sorted(weights)
    all_pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    if not all_pairs:
        return {}
    if policy.policy == "uniform":
        return {pair: 1.0 / len(all_pairs) for pair in all_pairs}
    boosted = boosted_weights(weights, votes, policy)
    if policy.policy == "active" and active is not None:
        masses = {(a, b): active.get((a, b), 0.0) * boosted[a] * boosted[b] for a, b in all_pairs}
        if not sum(masses.values()) > 0:
            masses = sequential_masses(boosted)
    else:
        masses = sequential_masses(boosted)
    wanted = {name: set(found) for name, found in (targets or {}).items()}
    masses = {
        (a, b): m * (policy.target_boost if b in wanted.get(a, ()) or a in wanted.get(b, ()) else 1.0)
        for (a, b), m in masses.items()
    }
    total = sum(masses.values())
    if not (total > 0 and math.isfinite(total)):
        probabilities = {pair: 1.0 / len(all_pairs) for pair in all_pairs}
    else:
        probabilities = {pair: m / total for pair, m in masses.items()}
    return mix_to_floor(probabilities, policy.min_share)


def draw_pair(table: PairTable, rng: random.Random) -> Pair:
    """One pair from the table, its two models in random sides."""
    if not table.pairs:
        raise ValueError("no pair to draw")
    total = table.cumulative[-1]
    index = min(bisect.bisect_right(table.cumulative, rng.random() * total), len(table.pairs) - 1)
    a, b = table.pairs[index]
    return (a, b) if rng.random() < 0.5 else (b, a)


def active_design(names: Sequence[str], inputs: SamplingInputs, policy: SamplingPolicy) -> dict[Pair, float]:
    """The designed pair probabilities of ``policy`` for the models ``names`` from the snapshot's
    ratings, intervals and pair counts. A model without a rating yet (too few votes) is placed at the
    mean rating, with the interval its few battles give it: wide, which is the point."""
    known = [inputs.ratings[n] for n in names if n in inputs.ratings]
    fill = sum(known) / len(known) if known else 1000.0
    ratings = {n: float(inputs.ratings.get(n, fill)) for n in names}
    half_widths = {n: float(inputs.half_widths[n]) for n in names if n in inputs.half_widths}
    design = design_pair_probabilities(
        ratings,
        inputs.pair_counts,
        half_widths=half_widths,
        interval_target=policy.interval_target,
        top_k=policy.top_k,
        explore=policy.explore,
    )
    return design.probabilities


class SnapshotLike(Protocol):
    """What :class:`SnapshotInputs` reads of an ``arena.snapshots.Snapshot``."""

    @property
    def data_version(self) -> str: ...
    @property
    def computed_at(self) -> datetime: ...
    @property
    def payload(self) -> dict[str, Any]: ...


def inputs_from_payload(version: str, payload: Mapping[str, Any]) -> SamplingInputs:
    """Votes per model, ratings, interval half-widths and pair counts from a ``bt`` snapshot payload.

    A model's votes are all its battles in the view (the pair counts), not only those against rated
    models that its leaderboard row counts.
    """
    votes: dict[str, int] = {}
    ratings: dict[str, float] = {}
    half_widths: dict[str, float] = {}
    for row in payload.get("rows", []):
        votes[str(row["model"])] = int(row.get("num_battles", 0))
        ratings[str(row["model"])] = float(row["rating"])
        lower, upper = row.get("ci_lower"), row.get("ci_upper")
        if isinstance(lower, int | float) and isinstance(upper, int | float) and upper >= lower:
            half_widths[str(row["model"])] = (float(upper) - float(lower)) / 2.0
    for row in payload.get("not_enough_votes", []):
        votes[str(row["model"])] = int(row.get("votes", 0))
    pair_counts: dict[Pair, float] = {}
    counts = payload.get("pair_counts") or {}
    models = [str(m) for m in counts.get("models", [])]
    battles = counts.get("battles", [])
    for i, a in enumerate(models):
        row_counts = battles[i] if i < len(battles) else []
        votes[a] = max(votes.get(a, 0), int(sum(row_counts)))
        for j in range(i + 1, min(len(models), len(row_counts))):
            n = float(row_counts[j])
            if n > 0:
                key = unordered(a, models[j])
                pair_counts[key] = pair_counts.get(key, 0.0) + n
    return SamplingInputs(
        version=version, votes=votes, ratings=ratings, pair_counts=pair_counts, half_widths=half_widths
    )


class SnapshotInputs:
    """``sampling_inputs()`` over a snapshot source (``lambda: snapshots.current("bt")``): derives the
    inputs once per snapshot (by data version and computation time) and returns them from memory."""

    def __init__(self, current: Callable[[], SnapshotLike | None]) -> None:
        self.current = current
        self._lock = threading.Lock()
        self._cached: tuple[tuple[str, datetime], SamplingInputs] | None = None

    def __call__(self) -> SamplingInputs | None:
        snapshot = self.current()
        if snapshot is None:
            return None
        key = (snapshot.data_version, snapshot.computed_at)
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        inputs = inputs_from_payload(f"{key[0]}@{key[1].isoformat()}", snapshot.payload)
        with self._lock:
            self._cached = (key, inputs)
        return inputs


class PairSampler:
    """Draws battle pairs by a :class:`SamplingPolicy`, with the roster's battle targets and the live
    inputs of ``sampling_inputs`` (None: none yet). Pair tables are cached per (inputs, pool)."""

    def __init__(
        self,
        policy: SamplingPolicy | None = None,
        *,
        targets: Mapping[str, Sequence[str]] | None = None,
        sampling_inputs: Callable[[], SamplingInputs | None] | None = None,
    ) -> None:
        self.policy = policy or SamplingPolicy()
        self.targets = {name: tuple(found) for name, found in (targets or {}).items() if found}
        self.sampling_inputs = sampling_inputs or (lambda: None)
        self._lock = threading.Lock()
        self._tables: dict[tuple[str | None, tuple[tuple[str, float], ...]], PairTable] = {}

    def table(self, weights: Mapping[str, float]) -> PairTable:
        """The pair table for the drawable models ``weights`` (name → database weight) now."""
        inputs = self.sampling_inputs()
        key = (None if inputs is None else inputs.version, tuple(sorted(weights.items())))
        found = self._tables.get(key)
        if found is not None:
            return found
        active = None
        if self.policy.policy == "active" and inputs is not None:
            active = active_design(sorted(weights), inputs, self.policy)
        probabilities = pair_probabilities(
            weights,
            self.policy,
            votes=None if inputs is None else inputs.votes,
            targets=self.targets,
            active=active,
        )
        table = PairTable.from_probabilities(probabilities)
        with self._lock:
            if len(self._tables) >= TABLE_CACHE_SIZE:
                self._tables.clear()
            self._tables[key] = table
        return table

    def draw(self, weights: Mapping[str, float], rng: random.Random) -> Pair:
        """Two distinct models of ``weights``, drawn by the policy, in random sides."""
        return draw_pair(self.table(weights), rng)


def targets_of(specs: Iterable[ModelSpec]) -> dict[str, list[str]]:
    """Each roster model's ``battle_targets``, by name (models without targets left out)."""
    return {spec.name: list(spec.battle_targets) for spec in specs if spec.battle_targets}


__all__ = [
    "INPUT_VIEW",
    "POLICIES",
    "PairSampler",
    "PairTable",
    "PolicyName",
    "SamplingInputs",
    "SamplingPolicy",
    "SnapshotInputs",
    "SnapshotLike",
    "active_design",
    "boosted_weights",
    "draw_pair",
    "inputs_from_payload",
    "mix_to_floor",
    "model_shares",
    "pair_probabilities",
    "sequential_masses",
    "targets_of",
    "unordered",
]
