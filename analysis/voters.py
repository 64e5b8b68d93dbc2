"""Anomalous voters and position bias: per-voter tests against the other voters' outcomes.

A voter's votes are compared with what everyone else voted on the same model pairs (the test of the
Chatbot Arena paper, arXiv 2403.04132 §5.1). For each vote, the outcome distribution of its unordered
model pair is estimated from all OTHER voters' votes (leave-one-voter-out counts plus a small Dirichlet
prior, so an outcome nobody else chose keeps a small probability). The four outcomes are the first
model (in name order) winning, the second winning, "tie" and "tie (bothbad)". The two ties are kept
apart: a voter who clicks "both bad" a quarter of the time is as telling as one who picks underdogs,
and the pair counts are large enough to estimate four cells once the prior keeps empty cells positive.

Two model-outcome tests, both vectorized over all votes at once:

* ``fisher``: each vote's p-value is P(an outcome no more likely than the observed one); a voter's
  p-values are combined with Fisher's method at checkpoints of its votes in time order (every
  ``min_votes`` votes, and all of them), Bonferroni-corrected over the checkpoints. Discrete outcomes
  make the plain ("conservative") p-values weak; ``mid`` (P(less likely) + ½·P(equally likely)) and
  ``randomized`` (+ U·P(equally likely), exactly uniform under the null) are sharper.
* ``likelihood``: the voter's total log-likelihood Σ log p(observed) against its null mean Σ E[log p]
  and variance; the null sum is skewed (rare outcomes are very unlikely), so the p-value comes from a
  Pearson type III (shifted gamma) law matching its first three moments (``pearson3``) rather than
  the normal approximation (``normal``, kept for comparison: too many false flags at 20–100 votes).

Neither test sees a voter who always picks the left answer: such a voter never ties and wins for
the better model half the time, which is about as likely as an honest voter's choices. So a side
test joins either one: a two-sided binomial test of the voter's left share of decisive votes
against the other voters' left share. A voter's ``p_value`` is the Bonferroni combination of the
two (twice the smaller); the voter is flagged when it is below ``alpha``. Voters with fewer than
``min_votes`` votes get no test.

``simulate_arena`` and ``detection_rates`` are the simulation the tests and ``benchmarks/voters_sim.py``
share; on it, Fisher with mid-p values (plus the side test) finds as many planted voters as the
others with the fewest false flags, so it is the default; its flags do not depend on a random seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from storage.vocabulary import TIE, TIE_BOTHBAD, WIN_A, WIN_B, WINNERS

Method = Literal["fisher", "likelihood"]
#: The model-outcome tests; the first is the default (see the simulation in the benchmark).
METHODS: tuple[Method, ...] = ("fisher", "likelihood")
#: The p-value variants of each method; the first is the default.
VARIANTS: dict[str, tuple[str, ...]] = {
    "fisher": ("mid", "randomized", "conservative"),
    "likelihood": ("pearson3", "normal"),
}
#: Pseudo-count added to each of the four outcomes of a pair's leave-one-voter-out counts.
DEFAULT_PRIOR = 0.5
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_VOTES = 20
N_OUTCOMES = 4
#: Columns of ``detect_anomalous_voters``'s result, in order.
RESULT_COLUMNS: tuple[str, ...] = (
    "voter",
    "n_votes",
    "method",
    "p_value",
    "anomalous",
    "p_model",
    "p_side",
    "median_decision_s",
    "n_decisive",
    "left_share",
    "favourite_model",
    "favourite_excess",
)
_TINY = 1e-300


@dataclass(frozen=True)
class PreparedVotes:
    """Votes as integer arrays, sorted by voter then time (voter -1: unknown, never tested)."""

    voters: list[str]
    models: list[str]
    voter: np.ndarray
    pair: np.ndarray
    outcome: np.ndarray
    #: the model codes of each vote's first (lower code) and second model
    low: np.ndarray
    high: np.ndarray
    #: 1 when the left answer (model_a) won, 0 when the right one did, -1 for a tie
    left_win: np.ndarray
    decision_s: np.ndarray


def prepare_votes(votes: pd.DataFrame) -> PreparedVotes:
    """Encode a vote frame (columns ``voter, model_a, model_b, winner``; optional ``tstamp`` and
    ``decision_s``) for the tests. Self-battles are dropped; an unknown winner is a ``ValueError``."""
    winner = votes["winner"].astype(object).to_numpy()
    bad = ~np.isin(winner, np.array(WINNERS, dtype=object))
    if bad.any():
        raise ValueError(f"unknown winner {winner[bad][0]!r}; expected one of {', '.join(WINNERS)}")
    names_a = votes["model_a"].astype(str).to_numpy()
    names_b = votes["model_b"].astype(str).to_numpy()
    keep = names_a != names_b
    codes, models = pd.factorize(np.concatenate([names_a[keep], names_b[keep]]), sort=True)
    n = int(keep.sum())
    a, b = codes[:n].astype(np.int64), codes[n:].astype(np.int64)
    winner = winner[keep]
    raw_voter = votes["voter"].to_numpy(dtype=object)[keep] if "voter" in votes else np.full(n, None)
    voter, voters = pd.factorize(pd.Series(raw_voter, dtype=object), sort=True, use_na_sentinel=True)
    tstamp = (
        pd.to_numeric(votes["tstamp"], errors="coerce").to_numpy(dtype=np.float64)[keep]
        if "tstamp" in votes
        else np.zeros(n)
    )
    decision = (
        pd.to_numeric(votes["decision_s"], errors="coerce").to_numpy(dtype=np.float64)[keep]
        if "decision_s" in votes
        else np.full(n, np.nan)
    )
    order = np.lexsort((np.arange(n), np.nan_to_num(tstamp, nan=np.inf), voter))
    a, b, winner, voter, decision = a[order], b[order], winner[order], voter[order], decision[order]
    low, high = np.minimum(a, b), np.maximum(a, b)
    _, pair = np.unique(low * max(len(models), 1) + high, return_inverse=True)
    won_a, won_b = winner == WIN_A, winner == WIN_B
    first_won = (won_a & (a == low)) | (won_b & (b == low))
    outcome = np.select([first_won, won_a | won_b, winner == TIE], [0, 1, 2], default=3)
    return PreparedVotes(
        voters=[str(v) for v in voters],
        models=[str(m) for m in models],
        voter=voter.astype(np.int64),
        pair=pair.astype(np.int64).reshape(-1),
        outcome=outcome.astype(np.int64),
        low=low,
        high=high,
        left_win=np.where(won_a, 1, np.where(won_b, 0, -1)).astype(np.int8),
        decision_s=decision,
    )


def outcome_probabilities(
    voter: np.ndarray, pair: np.ndarray, outcome: np.ndarray, prior: float = DEFAULT_PRIOR
) -> np.ndarray:
    """Per vote, the outcome distribution (n × 4) of its pair among the OTHER voters' votes (votes of
    an unknown voter, -1, count for everyone and are compared with all votes)."""
    n_pairs = int(pair.max()) + 1 if len(pair) else 0
    totals = np.bincount(pair * N_OUTCOMES + outcome, minlength=n_pairs * N_OUTCOMES)
    counts = totals.reshape(n_pairs, N_OUTCOMES)[pair].astype(np.float64)
    known = voter >= 0
    _, group = np.unique(voter[known] * max(n_pairs, 1) + pair[known], return_inverse=True)
    group = group.reshape(-1)
    own = np.bincount(group * N_OUTCOMES + outcome[known], minlength=(group.max(initial=-1) + 1) * N_OUTCOMES)
    counts[known] -= own.reshape(-1, N_OUTCOMES)[group]
    counts += prior
    return counts / counts.sum(axis=1, keepdims=True)


def vote_p_values(
    q: np.ndarray,
    outcome: np.ndarray,
    variant: str = "randomized",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Per vote, P(an outcome no more likely than the observed one) under ``q``: ``conservative``
    counts equally likely outcomes fully, ``mid`` half, ``randomized`` a uniform share (from ``rng``)."""
    observed = q[np.arange(len(q)), outcome][:, None]
    less = np.where(q < observed, q, 0.0).sum(axis=1)
    equal = np.where(q == observed, q, 0.0).sum(axis=1)
    if variant == "conservative":
        share: np.ndarray | float = 1.0
    elif variant == "mid":
        share = 0.5
    elif variant == "randomized":
        share = (rng if rng is not None else np.random.default_rng()).random(len(q))
    else:
        raise ValueError(f"unknown p-value variant {variant!r}")
    return np.clip(less + share * equal, _TINY, 1.0)


def fisher_combined(p: np.ndarray) -> float:
    """Fisher's method: P(chi2 with 2k degrees of freedom >= -2 Σ log p) for k p-values."""
    return float(stats.chi2.sf(-2.0 * np.log(np.clip(p, _TINY, 1.0)).sum(), 2 * len(p)))


def _within(voter: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For votes sorted by voter: each vote's 1-based rank within its voter, the voter's vote count,
    and the start index of its voter's run."""
    n = len(voter)
    starts = np.flatnonzero(np.r_[True, voter[1:] != voter[:-1]]) if n else np.array([], dtype=np.int64)
    sizes = np.diff(np.r_[starts, n])
    start_of = np.repeat(starts, sizes)
    return np.arange(n) - start_of + 1, np.repeat(sizes, sizes), start_of


def fisher_checkpoints(p: np.ndarray, voter: np.ndarray, n_voters: int, step: int) -> np.ndarray:
    """Per voter, Fisher's combination of its p-values (votes sorted by voter, then time) at every
    ``step`` votes and at its last vote, Bonferroni-corrected over those checkpoints."""
    out = np.full(n_voters, np.nan)
    known = voter >= 0
    p, voter = p[known], voter[known]
    if not len(p):
        return out
    rank, size, start = _within(voter)
    total = np.cumsum(-2.0 * np.log(p))
    before = np.where(start > 0, total[np.maximum(start - 1, 0)], 0.0)
    statistic = total - before
    check = (rank % step == 0) | (rank == size)
    at = np.flatnonzero(check)
    p_check = stats.chi2.sf(statistic[at], 2 * rank[at])
    best = pd.Series(p_check).groupby(voter[at]).agg(["min", "size"])
    out[best.index.to_numpy()] = np.minimum(1.0, best["min"].to_numpy() * best["size"].to_numpy())
    return out


def likelihood_p_values(
    q: np.ndarray, outcome: np.ndarray, voter: np.ndarray, n_voters: int, approximation: str = "pearson3"
) -> np.ndarray:
    """Per voter, P(total log-likelihood this low) under the others' pair distributions ``q``: the
    null law of Σ log p(outcome) by its mean, variance and skewness (``pearson3``) or normal."""
    if approximation not in VARIANTS["likelihood"]:
        raise ValueError(f"unknown likelihood approximation {approximation!r}")
    known = voter >= 0
    q, outcome, voter = q[known], outcome[known], voter[known]
    logq = np.log(q)
    mean = (q * logq).sum(axis=1)
    dev = logq - mean[:, None]
    var = (q * dev**2).sum(axis=1)
    third = (q * dev**3).sum(axis=1)
    observed = logq[np.arange(len(q)), outcome]

    def per_voter(values: np.ndarray) -> np.ndarray:
        return np.bincount(voter, weights=values, minlength=n_voters)

    # D = -(Σ log p - Σ E[log p]): large when the voter's choices are unlikely (right-skewed).
    d = -(per_voter(observed) - per_voter(mean))
    v, k3 = per_voter(var), -per_voter(third)
    sd = np.sqrt(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = d / sd
        p = stats.norm.sf(z)
        if approximation == "pearson3":
            skew = k3 / v**1.5
            skewed = np.isfinite(skew) & (skew > 1e-6)
            shape = 4.0 / skew[skewed] ** 2
            # D = shift + Gamma(shape, scale) with scale = sd·skew/2 and mean 0
            p[skewed] = stats.gamma.sf(shape + z[skewed] * np.sqrt(shape), shape)
    return np.where(v > 0, p, 1.0)


def side_p_values(left_win: np.ndarray, voter: np.ndarray, n_voters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per voter: the two-sided binomial p-value of its left wins among decisive votes against the
    other voters' left share, and its number of decisive votes."""
    decisive = (left_win >= 0) & (voter >= 0)
    left = np.bincount(voter[decisive], weights=left_win[decisive], minlength=n_voters)
    n = np.bincount(voter[decisive], minlength=n_voters).astype(np.float64)
    all_decisive = left_win >= 0
    total_left, total_n = float(left_win[all_decisive].sum()), float(all_decisive.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        p0 = np.clip((total_left - left + 0.5) / (total_n - n + 1.0), 1e-9, 1 - 1e-9)
    low = stats.binom.cdf(left, n, p0)
    high = stats.binom.sf(left - 1, n, p0)
    return np.where(n > 0, np.minimum(1.0, 2.0 * np.minimum(low, high)), 1.0), n


def model_p_values(
    prepared: PreparedVotes,
    q: np.ndarray,
    method: str,
    variant: str,
    *,
    min_votes: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per voter, the p-value of the chosen model-outcome test (``method`` with its ``variant``)."""
    n_voters = len(prepared.voters)
    if method == "fisher":
        if variant not in VARIANTS["fisher"]:
            raise ValueError(f"unknown p-value variant {variant!r} for fisher")
        p = vote_p_values(q, prepared.outcome, variant, rng)
        return fisher_checkpoints(p, prepared.voter, n_voters, max(min_votes, 1))
    if method == "likelihood":
        return likelihood_p_values(q, prepared.outcome, prepared.voter, n_voters, variant)
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def _favourites(prepared: PreparedVotes, q: np.ndarray) -> tuple[list[str | None], np.ndarray]:
    """Per voter, the model it made win most beyond the others' odds, and that excess per battle."""
    n_voters, n_models = len(prepared.voters), len(prepared.models)
    known = prepared.voter >= 0
    voter = np.concatenate([prepared.voter[known]] * 2)
    model = np.concatenate([prepared.low[known], prepared.high[known]])
    outcome, qk = prepared.outcome[known], q[known]
    excess = np.concatenate([(outcome == 0) - qk[:, 0], (outcome == 1) - qk[:, 1]])
    key = voter * max(n_models, 1) + model
    size = n_voters * n_models
    battles = np.bincount(key, minlength=size).reshape(n_voters, n_models)
    summed = np.bincount(key, weights=excess, minlength=size).reshape(n_voters, n_models)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_battle = np.where(battles > 0, summed / np.maximum(battles, 1), -np.inf)
    best = per_battle.argmax(axis=1) if n_models else np.zeros(n_voters, dtype=np.int64)
    value = per_battle[np.arange(n_voters), best] if n_models else np.full(n_voters, -np.inf)
    names = [prepared.models[int(m)] if np.isfinite(x) else None for m, x in zip(best, value, strict=True)]
    return names, np.where(np.isfinite(value), value, np.nan)


def detect_anomalous_voters(
    votes: pd.DataFrame,
    *,
    method: Method = METHODS[0],
    variant: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    min_votes: int = DEFAULT_MIN_VOTES,
    side_test: bool = True,
    prior: float = DEFAULT_PRIOR,
    rng: np.random.Generator | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Test every voter of ``votes`` (see ``prepare_votes`` for the columns); one row per voter with
    ``RESULT_COLUMNS``, most suspicious first. ``p_value`` combines the model test (``p_model``) and,
    with ``side_test``, the left/right test (``p_side``); voters with fewer than ``min_votes`` votes
    have no p-values and are never ``anomalous``. ``rng`` draws the randomized p-values."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if method not in VARIANTS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    variant = variant or VARIANTS[method][0]
    rng = rng if rng is not None else np.random.default_rng(0)
    steps = tqdm(total=4, desc="voters", disable=not progress, leave=False)
    prepared = prepare_votes(votes)
    steps.update()
    q = outcome_probabilities(prepared.voter, prepared.pair, prepared.outcome, prior)
    steps.update()
    n_voters = len(prepared.voters)
    p_model = model_p_values(prepared, q, method, variant, min_votes=min_votes, rng=rng)
    p_side, n_decisive = side_p_values(prepared.left_win, prepared.voter, n_voters)
    steps.update()
    known = prepared.voter >= 0
    n_votes = np.bincount(prepared.voter[known], minlength=n_voters)
    p_value = np.minimum(1.0, 2.0 * np.minimum(p_model, p_side)) if side_test else p_model
    tested = n_votes >= min_votes
    decisions = pd.Series(prepared.decision_s[known]).groupby(prepared.voter[known]).median()
    median_decision = np.full(n_voters, np.nan)
    median_decision[decisions.index.to_numpy(dtype=np.int64)] = decisions.to_numpy()
    left = np.bincount(
        prepared.voter[known], weights=(prepared.left_win[known] == 1).astype(float), minlength=n_voters
    )
    favourite, excess = _favourites(prepared, q)
    steps.update()
    steps.close()
    label = f"{method}-{variant}" + ("+side" if side_test else "")
    frame = pd.DataFrame(
        {
            "voter": prepared.voters,
            "n_votes": n_votes.astype(np.int64),
            "method": label,
            "p_value": np.where(tested, p_value, np.nan),
            "anomalous": tested & (p_value < alpha),
            "p_model": np.where(tested, p_model, np.nan),
            "p_side": np.where(tested, p_side, np.nan) if side_test else np.nan,
            "median_decision_s": median_decision,
            "n_decisive": n_decisive.astype(np.int64),
            "left_share": np.where(n_decisive > 0, left / np.maximum(n_decisive, 1), np.nan),
            "favourite_model": pd.Series(favourite, dtype=object),
            "favourite_excess": excess,
        },
        columns=list(RESULT_COLUMNS),
    )
    return frame.sort_values(["p_value", "voter"], na_position="last", kind="stable").reset_index(drop=True)


def voter_records(result: pd.DataFrame) -> list[dict[str, Any]]:
    """The result of ``detect_anomalous_voters`` as JSON-ready dicts (NaN as None)."""
    records: list[dict[str, Any]] = []
    for row in result.to_dict(orient="records"):
        record: dict[str, Any] = {}
        for key in RESULT_COLUMNS:
            value = row[key]
            if isinstance(value, float | np.floating):
                record[key] = None if math.isnan(value) else float(value)
            elif isinstance(value, bool | np.bool_):
                record[key] = bool(value)
            elif isinstance(value, int | np.integer):
                record[key] = int(value)
            else:
                record[key] = None if value is None or value is pd.NA else str(value)
        records.append(record)
    return records


# --- human position bias ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionBias:
    """The share of decisive votes that went to the left answer (A), with a 95% Wilson interval."""

    left_wins: int
    decisive: int
    share: float | None
    ci_lower: float | None
    ci_upper: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (a snapshot payload, a report)."""
        return {
            "left_wins": self.left_wins,
            "decisive": self.decisive,
            "share": self.share,
            "ci_lower": self.ci_lower,
            "ci_upper": self.ci_upper,
        }


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def position_bias(left_wins: int, right_wins: int) -> PositionBias:
    """Position bias from the counts of decisive votes for the left (A) and right (B) answers."""
    n = int(left_wins) + int(right_wins)
    if n == 0:
        return PositionBias(0, 0, None, None, None)
    lo, hi = wilson_interval(int(left_wins), n)
    return PositionBias(int(left_wins), n, int(left_wins) / n, lo, hi)


def position_bias_of_votes(winners: Iterable[Any] | pd.Series) -> PositionBias:
    """Position bias of a column of winners (``model_a`` = left won, ``model_b`` = right won)."""
    values = pd.Series(winners, dtype=object) if not isinstance(winners, pd.Series) else winners
    values = values.astype(object)
    return position_bias(int((values == WIN_A).sum()), int((values == WIN_B).sum()))


def position_bias_from_counts(rows: Iterable[Sequence[Any]]) -> PositionBias:
    """Position bias from ``(model_a, model_b, winner, count)`` rows, model_a being the left side
    (``storage.counts.pair_outcome_counts``)."""
    left = right = 0
    for _, _, winner, count in rows:
        if winner == WIN_A:
            left += int(count)
        elif winner == WIN_B:
            right += int(count)
    return position_bias(left, right)


# --- simulation ----------------------------------------------------------------------------------

#: Kinds of planted voters, in the order they are planted.
PLANTED_KINDS: tuple[str, ...] = ("random", "left", "one-model")


@dataclass(frozen=True)
class SimulatedArena:
    """Votes of honest and planted voters, and each voter's kind ("honest" or a planted kind)."""

    votes: pd.DataFrame
    kinds: dict[str, str]


def simulate_arena(
    seed: int,
    *,
    n_honest: int = 200,
    n_planted: int = 10,
    n_models: int = 12,
    votes_per_voter: int = 100,
    rating_spread: float = 100.0,
    tie_share: float = 0.2,
    bothbad_share: float = 0.3,
    left_bonus: float = 15.0,
) -> SimulatedArena:
    """Honest voters vote by Bradley–Terry strengths (ratings ~ Normal(0, ``rating_spread``) on the
    400·log10 scale, the left answer ``left_bonus`` points ahead; a tie with probability ``tie_share``,
    ``bothbad_share`` of them both bad); planted voters click one of the four buttons at random,
    always vote for the left answer, or always for one model (at random when it is absent), in turn.
    Each voter casts about ``votes_per_voter`` votes (Poisson) on uniformly drawn pairs."""
    rng = np.random.default_rng(seed)
    ratings = rng.normal(0.0, rating_spread, n_models)
    names = np.array([f"model-{i:02d}" for i in range(n_models)], dtype=object)
    kinds = {f"honest-{i:03d}": "honest" for i in range(n_honest)}
    for i in range(n_planted):
        kind = PLANTED_KINDS[i % len(PLANTED_KINDS)]
        kinds[f"planted-{kind}-{i:02d}"] = kind
    voters = list(kinds)
    counts = np.maximum(rng.poisson(votes_per_voter, len(voters)), 1)
    voter = np.repeat(np.arange(len(voters)), counts)
    n = len(voter)
    a = rng.integers(0, n_models, n)
    b = (a + rng.integers(1, n_models, n)) % n_models
    p_left = 1.0 / (1.0 + 10.0 ** ((ratings[b] - ratings[a] - left_bonus) / 400.0))
    u = rng.random(n)
    tie = rng.random(n) < tie_share
    honest = np.where(tie, np.where(rng.random(n) < bothbad_share, 3, 2), np.where(u < p_left, 0, 1))
    kind_of = np.array([kinds[v] for v in voters], dtype=object)[voter]
    clicks = rng.integers(0, 4, n)  # 0 left, 1 right, 2 tie, 3 both bad
    favourite = rng.integers(0, n_models, len(voters))[voter]
    one_model = np.where(a == favourite, 0, np.where(b == favourite, 1, clicks))
    choice = np.select(
        [kind_of == "honest", kind_of == "random", kind_of == "left"],
        [honest, clicks, np.zeros(n, np.int64)],
        one_model,
    )
    winner = np.array([WIN_A, WIN_B, TIE, TIE_BOTHBAD], dtype=object)[choice]
    decision = np.where(
        kind_of == "honest", rng.lognormal(np.log(12.0), 0.6, n), rng.lognormal(np.log(2.0), 0.5, n)
    )
    frame = pd.DataFrame(
        {
            "voter": np.array(voters, dtype=object)[voter],
            "model_a": names[a],
            "model_b": names[b],
            "winner": winner,
            "tstamp": rng.permutation(n).astype(np.float64),
            "decision_s": decision,
        }
    )
    return SimulatedArena(frame, kinds)


def detection_rates(
    seeds: Iterable[int],
    configurations: Sequence[tuple[Method, str, bool]],
    *,
    alpha: float = DEFAULT_ALPHA,
    min_votes: int = DEFAULT_MIN_VOTES,
    **simulation: Any,
) -> pd.DataFrame:
    """Detection (planted voters flagged) and false-flag (honest voters flagged) rates of each
    ``(method, variant, side_test)`` configuration, pooled over ``seeds``; also per planted kind."""
    flagged: dict[tuple[Method, str, bool], list[pd.DataFrame]] = {c: [] for c in configurations}
    for seed in seeds:
        arena = simulate_arena(seed, **simulation)
        for config in configurations:
            method, variant, side = config
            result = detect_anomalous_voters(
                arena.votes,
                method=method,
                variant=variant,
                side_test=side,
                alpha=alpha,
                min_votes=min_votes,
                rng=np.random.default_rng(seed + 1),
            )
            result["kind"] = result["voter"].map(arena.kinds)
            flagged[config].append(result[["kind", "anomalous"]])
    rows = []
    for (method, variant, side), parts in flagged.items():
        both = pd.concat(parts, ignore_index=True)
        planted = both["kind"] != "honest"
        row: dict[str, Any] = {
            "method": method,
            "variant": variant,
            "side_test": side,
            "detection": float(both.loc[planted, "anomalous"].mean()),
            "false_flags": float(both.loc[~planted, "anomalous"].mean()),
        }
        for kind in PLANTED_KINDS:
            row[f"found_{kind}"] = float(both.loc[both["kind"] == kind, "anomalous"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_VOTES",
    "DEFAULT_PRIOR",
    "METHODS",
    "PLANTED_KINDS",
    "RESULT_COLUMNS",
    "VARIANTS",
    "Method",
    "PositionBias",
    "PreparedVotes",
    "SimulatedArena",
    "detect_anomalous_voters",
    "detection_rates",
    "fisher_checkpoints",
    "fisher_combined",
    "likelihood_p_values",
    "model_p_values",
    "outcome_probabilities",
    "position_bias",
    "position_bias_from_counts",
    "position_bias_of_votes",
    "prepare_votes",
    "side_p_values",
    "simulate_arena",
    "vote_p_values",
    "voter_records",
    "wilson_interval",
]
