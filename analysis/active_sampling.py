"""Active pair sampling: spend the next vote on the pair whose estimate it sharpens most.

Chatbot Arena (arXiv 2403.04132, §5) samples a pair with probability proportional to the expected
reduction of the standard error of its win-rate estimate from one more battle:
``sqrt(σ²/n) − sqrt(σ²/(n+1))`` with ``σ² = p(1−p)`` and ``p`` the Bradley–Terry win probability of
the pair. Close pairs (p ≈ ½) and rarely compared pairs get the most weight. Pure numpy; the live
policy in ``arena/sampling.py`` and the simulation in ``benchmarks/sampling_sim.py`` both use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["active_pair_probabilities", "pair_uncertainty_weights"]


def pair_uncertainty_weights(
    ratings: Mapping[str, float],
    pair_counts: Mapping[tuple[str, str], float],
    *,
    scale: float = 400.0,
    base: float = 10.0,
    prior_count: float = 1.0,
) -> dict[tuple[str, str], float]:
    """For every unordered pair (a < b) of the models in ``ratings``: how much one more battle of that
    pair is expected to shrink the uncertainty of its win-rate estimate.

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
    names = sorted(ratings)
    m = len(names)
    if m < 2:
        return {}
    index = {name: i for i, name in enumerate(names)}
    r = np.array([float(ratings[name]) for name in names], dtype=float)
    counts = np.zeros((m, m), dtype=float)
    for (a, b), c in pair_counts.items():
        i, j = index.get(a), index.get(b)
        if i is None or j is None or i == j:
            continue
        counts[i, j] += float(c)
        counts[j, i] += float(c)
    iu, ju = np.triu_indices(m, k=1)
    diff = (r[iu] - r[ju]) * (np.log(base) / scale)
    p = 1.0 / (1.0 + np.exp(-np.clip(diff, -700.0, 700.0)))
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
    """Sampling probabilities over unordered pairs (a < b): the uncertainty weights normalised to sum
    to one, mixed with a uniform share ``uniform_floor`` (0 ≤ floor ≤ 1) so that every pair keeps being
    sampled. Falls back to uniform when every weight is zero."""
    if not 0.0 <= uniform_floor <= 1.0:
        raise ValueError("uniform_floor must be within [0, 1]")
    weights = pair_uncertainty_weights(ratings, pair_counts, scale=scale, base=base, prior_count=prior_count)
    if not weights:
        return {}
    w = np.array(list(weights.values()), dtype=float)
    uniform = np.full(w.size, 1.0 / w.size)
    total = w.sum()
    active = w / total if total > 0 and np.isfinite(total) else uniform
    probs = (1.0 - uniform_floor) * active + uniform_floor * uniform
    probs = probs / probs.sum()
    return {pair: float(q) for pair, q in zip(weights, probs, strict=True)}
