"""Active pair sampling: spend the next votes on the pairs that sharpen the leaderboard most.

Two rules, both pure numpy; the live policy (``arena/sampling.py``) uses the second, the simulation
(``benchmarks/sampling_sim.py``) compares both.

**The Chatbot Arena rule** (arXiv 2403.04132, §5): a pair's probability is proportional to the
expected reduction of the standard error of its win-rate estimate from one more battle,
``sqrt(σ²/n) − sqrt(σ²/(n+1))`` with ``σ² = p(1−p)`` and ``p`` the Bradley–Terry win probability of
the pair (:func:`pair_uncertainty_weights`, :func:`active_pair_probabilities`).

**The designed rule** (:func:`design_pair_probabilities`): optimal experimental design on the
Bradley–Terry Fisher information. With strengths ``u`` (natural-log units) a battle of ``(a, b)``
adds ``w·d·dᵀ`` to the information ``L``, ``d = e_a − e_b``, ``w = p(1−p)``; the covariance of the
mean-centred strengths is ``C = L⁺``. One more battle changes it by the Sherman–Morrison rank-one
update ``C' = C − w·(Cd)(Cd)ᵀ / (1 + w·dᵀCd)``, so it lowers a weighted sum of variances
``Σ_i c_i·C_ii`` (the L-optimality, or weighted A-optimality, criterion of optimal design) by
``w·Σ_i c_i (Cd)_i² / (1 + w·dᵀCd)`` in closed form (:func:`design_gains`). The next votes are planned
greedily, a chunk at a time, always on the pair of largest gain with ``C`` updated after each chunk
(the sequential construction of Wynn and Fedorov); the planned shares are the probabilities
(:func:`greedy_design`). What the votes are for decides the model weights ``c``, in two stages
(:func:`objective_weights`):

1. **Intervals.** While the median 95 % interval is wider than the target, ``c_i = 1`` for every model
   whose interval is still wider than it (plain A-optimality over those models).
2. **Separation.** Then, for each adjacent pair of the current top ``k + 1`` whose intervals overlap,
   ``z·(se_a + se_b) > r_a − r_b``, both models get the weight ``(overlap ratio − 1)·∂(se_a+se_b)/∂var``
   (the overlap ratio ``z·(se_a + se_b)/(r_a − r_b)`` capped at ``SEPARATION_CAP``, the derivative
   ``1/(2·se)``): votes go where the widest relative overlaps shrink fastest.

Once both hold, every model weighs 1 again. A uniform share ``explore`` is always mixed in. Inputs are
what a leaderboard snapshot holds: ratings, pair counts and (optionally) the displayed intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtri

from analysis.fitting import pair_laplacian

__all__ = [
    "DESIGN_STEPS",
    "HORIZON_SHARE",
    "SEPARATION_CAP",
    "PairDesign",
    "Stage",
    "active_pair_probabilities",
    "centred_covariance",
    "design_gains",
    "design_pair_probabilities",
    "greedy_design",
    "objective_weights",
    "pair_uncertainty_weights",
]

Stage = Literal["intervals", "separation", "refine"]
#: Chunks the planned votes are placed in (one greedy choice per chunk).
DESIGN_STEPS = 50
#: Votes planned per design: this share of the votes so far (plus one per pair), i.e. roughly the
#: votes until the next leaderboard snapshot at a steady rate.
HORIZON_SHARE = 0.1
#: Largest overlap ratio a separation weight uses (a near-zero gap would otherwise dominate).
SEPARATION_CAP = 10.0
#: Battles every pair is assumed to have on top of its count (keeps the information invertible).
PRIOR_COUNT = 0.5


def pair_uncertainty_weights(
    ratings: Mapping[str, float],
    pair_counts: Mapping[tuple[str, str], float],
    *,
    scale: float = 400.0,
    base: float = 10.0,
    prior_count: float = 1.0,
) -> dict[tuple[str, str], float]:
    """For every unordered pair (a < b) of the models in ``ratings``: how much one more battle of that
    pair is expected to shrink the uncertainty of its win-rate estimate (the §5 rule).

    ``P(pair) ∝ sqrt(σ²/n) − sqrt(σ²/(n+1))`` with ``σ² = p(1−p)`` from the BT win probability ``p`` of
    the pair (ratings on the ``scale·log_base`` odds scale) and ``n`` = its battle count + ``prior_count``.
    Keys of ``pair_counts`` may come in either order; counts of ``(a, b)`` and ``(b, a)`` add up.
    Pairs absent from ``pair_counts`` have ``n = prior_count``; pairs naming models that are not in
    ``ratings`` are ignored. All weights are non-negative.
    """
    if scale <= 0 or base <= 1:
        raise ValueError("scale must be > 0 and base > 1")
    if prior_count < 0:
        raise ValueError("prior_count must be >= 0")
    names, r, counts = _arrays(ratings, pair_counts)
    m = len(names)
    if m < 2:
        return {}
    iu, ju = np.triu_indices(m, k=1)
    p = _win_probability((r[iu] - r[ju]) * (np.log(base) / scale))
    var = p * (1.0 - p)
    n = np.maximum(counts[iu, ju], 0.0) + prior_count
    with np.errstate(divide="ignore", invalid="ignore"):
        # sqrt(v/n) - sqrt(v/(n+1)), written as sqrt(v) * (1/sqrt(n) - 1/sqrt(n+1)); n == 0 gives inf.
        shrink = np.sqrt(var) * (1.0 / np.sqrt(n) - 1.0 / np.sqrt(n + 1.0))
    shrink = np.where(np.isfinite(shrink), shrink, np.sqrt(var))
    shrink = np.maximum(shrink, 0.0)
    return {(names[i], names[j]): float(w) for i, j, w in zip(iu, ju, shrink, strict=True)}


def active_pair_probabilities(
    ratings: Mapping[str, float],
    pair_counts: Mapping[tuple[str, str], float],
    *,
    scale: float = 400.0,
    base: float = 10.0,
    prior_count: float = 1.0,
    uniform_floor: float = 0.0,
) -> dict[tuple[str, str], float]:
    """Sampling probabilities over unordered pairs (a < b) by the §5 rule: the uncertainty weights
    normalised to sum to one, mixed with a uniform share ``uniform_floor`` (0 ≤ floor ≤ 1) so that every
    pair keeps being sampled. Falls back to uniform when every weight is zero."""
    if not 0.0 <= uniform_floor <= 1.0:
        raise ValueError("uniform_floor must be within [0, 1]")
    weights = pair_uncertainty_weights(ratings, pair_counts, scale=scale, base=base, prior_count=prior_count)
    if not weights:
        return {}
    w = np.array(list(weights.values()), dtype=float)
    return dict(zip(weights, _mix(w, uniform_floor).tolist(), strict=True))


# -- the designed rule ----------------------------------------------------------------------------


def centred_covariance(
    strengths: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    counts: np.ndarray,
    *,
    prior_count: float = PRIOR_COUNT,
) -> tuple[np.ndarray, np.ndarray]:
    """The Fisher covariance ``L⁺`` of mean-centred BT strengths (natural-log units) and the per-battle
    information ``w = p(1−p)`` of each pair ``(first[k], second[k])`` with ``counts[k]`` battles.

    ``L = Σ_k (counts_k + prior_count)·w_k·d_k d_kᵀ``; with a connected design its pseudo-inverse is
    ``(L + 11ᵀ/m)⁻¹ − 11ᵀ/m``.
    """
    u = np.asarray(strengths, dtype=float)
    m = u.size
    w = _win_probability(u[first] - u[second])
    w = w * (1.0 - w)
    info = pair_laplacian(first, second, (np.asarray(counts, dtype=float) + prior_count) * w, m)
    ones = np.full((m, m), 1.0 / m)
    cov = np.linalg.inv(info + ones) - ones
    return 0.5 * (cov + cov.T), w


def design_gains(
    cov: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    info: np.ndarray,
    model_weights: np.ndarray,
    battles: float = 1.0,
) -> np.ndarray:
    """How much ``battles`` more battles of each pair lower ``Σ_i c_i·var_i`` (exact, rank one).

    ``gain_k = t·w_k·‖diag(√c)·C·d_k‖² / (1 + t·w_k·d_kᵀ C d_k)`` with ``t = battles``, ``w = info``,
    ``c = model_weights``; computed from ``M = C·diag(c)·C`` as ``M_aa + M_bb − 2·M_ab``.
    """
    weighted = (cov * model_weights) @ cov
    num = weighted[first, first] + weighted[second, second] - 2.0 * weighted[first, second]
    quad = cov[first, first] + cov[second, second] - 2.0 * cov[first, second]
    tw = battles * info
    return tw * np.maximum(num, 0.0) / (1.0 + tw * np.maximum(quad, 0.0))


def greedy_design(
    cov: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    info: np.ndarray,
    model_weights: np.ndarray,
    horizon: float,
    *,
    steps: int = DESIGN_STEPS,
) -> np.ndarray:
    """Shares of ``horizon`` planned battles per pair: ``steps`` chunks, each on the pair of largest
    :func:`design_gains`, the covariance updated (Sherman–Morrison) after each chunk."""
    if horizon <= 0 or steps < 1:
        raise ValueError("horizon and steps must be positive")
    c_mat = np.array(cov, dtype=float, copy=True)
    plan = np.zeros(first.size)
    chunk = horizon / steps
    for _ in range(steps):
        gains = design_gains(c_mat, first, second, info, model_weights, chunk)
        k = int(np.argmax(gains))
        plan[k] += chunk
        v = c_mat[:, first[k]] - c_mat[:, second[k]]
        tw = chunk * info[k]
        c_mat -= np.outer(v, v) * (tw / (1.0 + tw * float(v[first[k]] - v[second[k]])))
    return plan / plan.sum()


def objective_weights(
    ratings: np.ndarray, se: np.ndarray, *, interval_target: float, top_k: int, z: float
) -> tuple[np.ndarray, Stage]:
    """The model weights ``c`` of the design objective and the stage they belong to (module docstring).

    ``ratings`` and ``se`` in rating points; ``interval_target`` is the full width (upper − lower) of
    a ``z``-interval that the median model should reach.
    """
    width = 2.0 * z * se
    if float(np.median(width)) > interval_target:
        return (width > interval_target).astype(float), "intervals"
    c = np.zeros(ratings.size)
    order = np.argsort(-ratings, kind="stable")
    for i in range(min(top_k, ratings.size - 1)):
        a, b = int(order[i]), int(order[i + 1])
        spread = z * (se[a] + se[b])
        gap = float(ratings[a] - ratings[b])
        if spread > gap:
            ratio = min(spread / gap, SEPARATION_CAP) if gap > 0 else SEPARATION_CAP
            for j in (a, b):
                c[j] += (ratio - 1.0) / (2.0 * max(float(se[j]), 1e-9))
    if c.sum() > 0:
        return c, "separation"
    return np.ones(ratings.size), "refine"


@dataclass(frozen=True)
class PairDesign:
    """A designed sampling distribution over the unordered pairs (a < b) and why."""

    probabilities: dict[tuple[str, str], float]
    stage: Stage
    #: per model: the 95 % half-width (rating points) the stage was decided on
    half_widths: dict[str, float]


def design_pair_probabilities(
    ratings: Mapping[str, float],
    pair_counts: Mapping[tuple[str, str], float],
    *,
    half_widths: Mapping[str, float] | None = None,
    interval_target: float = 25.0,
    top_k: int = 5,
    explore: float = 0.1,
    level: float = 0.95,
    scale: float = 400.0,
    base: float = 10.0,
    horizon: float | None = None,
    steps: int = DESIGN_STEPS,
) -> PairDesign:
    """The designed rule (module docstring) for the models of ``ratings`` (rating points).

    ``half_widths``: the leaderboard's own ``level`` half-widths where known (e.g. sandwich intervals
    of a snapshot); other models get the Fisher one. ``horizon``: battles to plan (default
    ``HORIZON_SHARE × (battles so far + pairs)``). ``explore``: uniform share mixed in.
    """
    if not 0.0 <= explore <= 1.0:
        raise ValueError("explore must be within [0, 1]")
    if not (interval_target > 0 and top_k >= 0 and 0.0 < level < 1.0 and scale > 0 and base > 1):
        raise ValueError("interval_target > 0, top_k >= 0, 0 < level < 1, scale > 0 and base > 1 required")
    names, r, counts = _arrays(ratings, pair_counts)
    m = len(names)
    if m < 2:
        return PairDesign({}, "intervals", {})
    to_nat = math.log(base) / scale
    z = float(ndtri(0.5 + level / 2.0))
    first, second = (x.astype(np.int64) for x in np.triu_indices(m, k=1))
    n = np.maximum(counts[first, second], 0.0)
    cov, info = centred_covariance(r * to_nat, first, second, n)
    se = np.sqrt(np.maximum(np.diag(cov), 0.0)) / to_nat
    known = half_widths or {}
    se = np.array(
        [float(known[x]) / z if x in known and known[x] >= 0 else s for x, s in zip(names, se, strict=True)]
    )
    c, stage = objective_weights(r, se, interval_target=interval_target, top_k=top_k, z=z)
    planned = HORIZON_SHARE * (float(n.sum()) + first.size) if horizon is None else horizon
    plan = greedy_design(cov, first, second, info, c, planned, steps=steps)
    probs = _mix(plan, explore)
    pairs = [(names[i], names[j]) for i, j in zip(first, second, strict=True)]
    return PairDesign(
        dict(zip(pairs, probs.tolist(), strict=True)),
        stage,
        {x: float(z * s) for x, s in zip(names, se, strict=True)},
    )


# -- helpers ----------------------------------------------------------------------------------------


def _arrays(
    ratings: Mapping[str, float], pair_counts: Mapping[tuple[str, str], float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sorted names, their ratings, and the symmetric pair-count matrix (unknown names ignored)."""
    names = sorted(ratings)
    index = {name: i for i, name in enumerate(names)}
    r = np.array([float(ratings[name]) for name in names], dtype=float)
    counts = np.zeros((len(names), len(names)), dtype=float)
    for (a, b), c in pair_counts.items():
        i, j = index.get(a), index.get(b)
        if i is None or j is None or i == j:
            continue
        counts[i, j] += float(c)
        counts[j, i] += float(c)
    return names, r, counts


def _win_probability(diff: np.ndarray) -> np.ndarray:
    """The logistic function of natural-log strength differences, overflow-safe."""
    return 1.0 / (1.0 + np.exp(-np.clip(diff, -700.0, 700.0)))


def _mix(weights: np.ndarray, uniform_share: float) -> np.ndarray:
    """Normalise ``weights`` and mix a ``uniform_share`` of uniform in (uniform if they sum to 0)."""
    uniform = np.full(weights.size, 1.0 / weights.size)
    total = float(weights.sum())
    normed = weights / total if total > 0 and math.isfinite(total) else uniform
    probs = (1.0 - uniform_share) * normed + uniform_share * uniform
    return probs / probs.sum()

