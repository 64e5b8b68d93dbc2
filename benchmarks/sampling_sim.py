"""How many votes each pair-sampling policy needs before the leaderboard is sharp (issue 14 §2).

The world (one per seed): 20 models with true ratings ~ Normal(1000, 120), sorted; the top 5 are then
rebuilt as near-ties, each ``Uniform(15, 40)`` points below the one above it (the others kept at least
40 points below the fifth). A battle of (a, b) has
BT win probability ``p = 1/(1 + 10^((r_b − r_a)/400))``; a tie happens with probability
``t = k·min(p, 1 − p)`` and takes ``t/2`` from each side, so a tie counted as half a win (the project's
BT fit) stays an unbiased estimator of the true ratings; ``k`` gives about 20 % ties overall.

Policies (pairs drawn in batches of ``--every`` votes, checked after each batch):

- ``uniform``: every one of the 190 pairs equally likely.
- ``weighted``: what an operator sets: 4 "popular" models (true ranks 2, 6, 10, 14) get weight ×3 and
  4 "new" models (true ranks 4, 8, 12, 16) the new-model boost ×5 until each has 3,000 battles (counted
  at the start of each batch, as the live policy reads snapshot counts); pair ∝ w_a·w_b.
- ``§5 rule``: pair ∝ ``analysis.active_sampling.pair_uncertainty_weights`` of the latest fit
  (refitted after every batch, like the live leaderboard snapshot) mixed with a ``--floor`` uniform
  share; the first batch is uniform.
- ``active``: the live policy itself (``arena.sampling.pair_probabilities`` with ``policy="active"``,
  default settings but no new-model boost: the designed rule of ``analysis.active_sampling`` with a
  10 % uniform share, then the fairness floor) on what a snapshot would hold: the latest fit's ratings
  and sandwich intervals and the pair counts; the first batch is uniform. One row per
  ``--targets`` value of its interval target (the full width the median interval should reach before
  votes go to the top models): 25 (the default, the issue's "interval ≤ 25 points" read literally)
  and 50 (the "± 25" reading).

After each batch the ratings are fitted with the project's BT fit and 95 % sandwich intervals
(``analysis.sandwich.sandwich_bt``, rating ± 1.96·se) and three stopping rules are checked:

- ``a: half ≤ 25``: the median over models of the interval half-width is ≤ 25 points (the issue's
  "median 95 % interval ≤ 25 points" read as ± 25);
- ``a: width ≤ 25``: the same for the full width (upper − lower), the stricter reading;
- ``b: top 5``: the fitted top 5 is the true top 5 in order and the intervals of ranks 1–2, 2–3, 3–4
  and 4–5 do not overlap.

A run stops when all three hold or at ``--cap`` votes. The table gives, per policy and rule, the
median votes over ``--seeds`` seeds (a seed that never got there counts as infinite, so the median is
"> cap" when fewer than half did), how many seeds got there, and the change against uniform.

  python benchmarks/sampling_sim.py [--seeds 10] [--cap 100000] [--every 500] [--floor 0.1] [--targets 25,50]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.active_sampling import active_pair_probabilities  # noqa: E402
from analysis.aggregation import Aggregated  # noqa: E402
from analysis.sandwich import sandwich_bt  # noqa: E402
from arena.sampling import SamplingInputs, SamplingPolicy, active_design, pair_probabilities  # noqa: E402

N_MODELS = 20
TOP = 5
POPULAR = (1, 5, 9, 13)  # true rank - 1
NEW = (3, 7, 11, 15)
POPULAR_WEIGHT = 3.0
BOOST = 5.0
BOOST_UNTIL = 3000
TIE_K = 0.55
PAPER = "§5 rule"
RULES = ("a: half ≤ 25", "a: width ≤ 25", "b: top 5")


@dataclass(frozen=True)
class World:
    """True ratings (index = model, best first) and the pair layout shared by every policy."""

    ratings: np.ndarray
    names: list[str]
    first: np.ndarray  # pair k = (first[k], second[k]), first < second
    second: np.ndarray
    outcome_probs: np.ndarray  # pairs x 3: first wins, second wins, tie

    @property
    def n_pairs(self) -> int:
        """Number of unordered pairs."""
        return int(self.first.size)


def make_world(rng: np.random.Generator) -> World:
    """A seeded world: Normal(1000, 120) ratings, best first, with a near-tied top 5."""
    r = np.sort(rng.normal(1000.0, 120.0, N_MODELS))[::-1].copy()
    gaps = rng.uniform(15.0, 40.0, TOP - 1)
    r[1:TOP] = r[0] - np.cumsum(gaps)
    r[TOP:] = np.minimum(r[TOP:], r[TOP - 1] - 40.0)
    r = np.sort(r)[::-1]
    names = [f"m{i:02d}" for i in range(N_MODELS)]
    first, second = np.triu_indices(N_MODELS, k=1)
    p = 1.0 / (1.0 + 10.0 ** ((r[second] - r[first]) / 400.0))
    tie = TIE_K * np.minimum(p, 1.0 - p)
    probs = np.column_stack([p - tie / 2.0, 1.0 - p - tie / 2.0, tie])
    return World(r, names, first.astype(np.int64), second.astype(np.int64), probs)


@dataclass
class Run:
    """Votes so far for one policy in one world, and the vote count at which each rule first held."""

    world: World
    cells: np.ndarray = field(init=False)
    reached: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cells = np.zeros((self.world.n_pairs, 3), dtype=np.int64)

    @property
    def votes(self) -> int:
        """Votes cast so far."""
        return int(self.cells.sum())

    def model_battles(self) -> np.ndarray:
        """Battles per model."""
        per_pair = self.cells.sum(axis=1)
        w = self.world
        return np.bincount(w.first, per_pair, N_MODELS) + np.bincount(w.second, per_pair, N_MODELS)

    def add(self, probs: np.ndarray, n: int, rng: np.random.Generator) -> None:
        """Cast ``n`` votes: pairs drawn from ``probs``, outcomes from the true model."""
        drawn = rng.multinomial(n, probs)
        self.cells += rng.multinomial(drawn, self.world.outcome_probs)

    def aggregated(self) -> Aggregated:
        """The counts as the project's fits take them."""
        w = self.world
        keys = w.first * N_MODELS + w.second
        seen = self.cells.sum(axis=1) > 0
        return Aggregated.from_cells(list(w.names), keys[seen], self.cells[seen])


#: The latest fit: (ratings, 95 % sandwich half-widths) by model name, or None before the first fit.
Fit = tuple[dict[str, float], dict[str, float]] | None
Policy = Callable[[Run, Fit], np.ndarray]


def uniform_policy(run: Run, fitted: Fit) -> np.ndarray:
    """Every pair equally likely."""
    return np.full(run.world.n_pairs, 1.0 / run.world.n_pairs)


def weighted_policy(run: Run, fitted: Fit) -> np.ndarray:
    """Operator weights: popular ×3, new models ×5 until they have ``BOOST_UNTIL`` battles; pair ∝ w_a·w_b."""
    w = np.ones(N_MODELS)
    w[list(POPULAR)] *= POPULAR_WEIGHT
    battles = run.model_battles()
    for i in NEW:
        if battles[i] < BOOST_UNTIL:
            w[i] *= BOOST
    pair = w[run.world.first] * w[run.world.second]
    return pair / pair.sum()


def pair_counts_of(run: Run) -> dict[tuple[str, str], float]:
    """Battles per unordered pair by name, as a snapshot's ``pair_counts`` give them."""
    w = run.world
    per_pair = run.cells.sum(axis=1)
    return {(w.names[a], w.names[b]): float(c) for a, b, c in zip(w.first, w.second, per_pair, strict=True)}


def as_vector(run: Run, probs: dict[tuple[str, str], float]) -> np.ndarray:
    """Pair probabilities by name as the world's pair vector."""
    w = run.world
    return np.array([probs[(w.names[a], w.names[b])] for a, b in zip(w.first, w.second, strict=True)])


def make_paper_policy(floor: float) -> Policy:
    """Pairs ∝ the §5 uncertainty weights of the latest fit, with a ``floor`` uniform share."""

    def paper_policy(run: Run, fitted: Fit) -> np.ndarray:
        if fitted is None:
            return uniform_policy(run, fitted)
        return as_vector(run, active_pair_probabilities(fitted[0], pair_counts_of(run), uniform_floor=floor))

    return paper_policy


def make_active_policy(interval_target: float) -> Policy:
    """The live ``active`` policy (default settings, no boost) over the latest fit, as over a snapshot."""
    policy = SamplingPolicy(policy="active", boost_until_votes=0, interval_target=interval_target)

    def active_policy(run: Run, fitted: Fit) -> np.ndarray:
        if fitted is None:
            return uniform_policy(run, fitted)
        inputs = SamplingInputs(
            "sim", ratings=fitted[0], half_widths=fitted[1], pair_counts=pair_counts_of(run)
        )
        weights = dict.fromkeys(run.world.names, 1.0)
        active = active_design(run.world.names, inputs, policy)
        return as_vector(run, pair_probabilities(weights, policy, active=active))

    return active_policy


def check(run: Run) -> Fit:
    """Fit, record every rule that holds for the first time, and return the fitted ratings."""
    try:
        s = sandwich_bt(run.aggregated())
    except ValueError:  # not connected yet
        return None
    names = run.world.names
    if len(s.ratings) < N_MODELS:
        return None
    lower, upper = s.lower.reindex(names).to_numpy(), s.upper.reindex(names).to_numpy()
    width = upper - lower
    votes = run.votes
    if float(np.median(width)) / 2.0 <= 25.0:
        run.reached.setdefault(RULES[0], votes)
    if float(np.median(width)) <= 25.0:
        run.reached.setdefault(RULES[1], votes)
    top = [names.index(m) for m in s.ratings.index[:TOP]]
    if top == list(range(TOP)) and all(lower[i] > upper[i + 1] for i in range(TOP - 1)):
        run.reached.setdefault(RULES[2], votes)
    return (
        {str(k): float(v) for k, v in s.ratings.items()},
        {name: float(h) for name, h in zip(names, width / 2.0, strict=True)},
    )


def simulate(seed: int, policy: Policy, *, cap: int, every: int) -> Run:
    """One policy in the world of ``seed`` until every rule held or ``cap`` votes."""
    world = make_world(np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    run = Run(world)
    fitted: Fit = None
    while run.votes < cap and len(run.reached) < len(RULES):
        run.add(policy(run, fitted), every, rng)
        fitted = check(run)
    return run


def median_votes(values: list[float]) -> float:
    """Median with unreached seeds as infinity."""
    return float(statistics.median(values))


def show(value: float, cap: int) -> str:
    """A vote count for the table."""
    return f"> {cap:,}" if math.isinf(value) else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    """Run every policy on every seed and print the markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10, help="number of seeded worlds (default 10)")
    parser.add_argument(
        "--cap", type=int, default=100_000, help="votes after which a run stops (default 100000)"
    )
    parser.add_argument("--every", type=int, default=500, help="votes between fits/checks (default 500)")
    parser.add_argument(
        "--floor", type=float, default=0.1, help="uniform share mixed into the §5 rule (default 0.1)"
    )
    parser.add_argument(
        "--targets",
        default="25,50",
        help="interval targets (full width, points) of the active rows, comma-separated (default 25,50)",
    )
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",") if t.strip()]
    policies: dict[str, Policy] = {
        "uniform": uniform_policy,
        "weighted": weighted_policy,
        PAPER: make_paper_policy(args.floor),
    }
    for target in targets:
        policies[f"active, target {target:g}"] = make_active_policy(target)
    names = list(policies)
    start = time.perf_counter()
    results: dict[str, list[dict[str, int]]] = {name: [] for name in names}
    ties: list[float] = []
    top_share: dict[str, list[float]] = {name: [] for name in names}
    for seed in range(args.seeds):
        for name in names:
            run = simulate(seed, policies[name], cap=args.cap, every=args.every)
            results[name].append(run.reached)
            ties.append(float(run.cells[:, 2].sum()) / max(run.votes, 1))
            w = run.world
            in_top = (w.first < TOP) & (w.second < TOP)
            top_share[name].append(float(run.cells[in_top].sum()) / max(run.votes, 1))
    elapsed = time.perf_counter() - start

    medians = {
        (name, rule): median_votes([float(r.get(rule, math.inf)) for r in results[name]])
        for name in names
        for rule in RULES
    }
    print(
        f"{args.seeds} seeds, 20 models, cap {args.cap:,} votes, checked every {args.every} votes, "
        f"§5 floor {args.floor}; ties {np.mean(ties):.0%}; {elapsed:.0f} s\n"
    )
    print("| policy | " + " | ".join(RULES) + " | votes on top-5 pairs |")
    print("|---" * (len(RULES) + 2) + "|")
    for name in names:
        row = [name]
        for rule in RULES:
            value = medians[(name, rule)]
            got = sum(rule in r for r in results[name])
            base = medians[("uniform", rule)]
            cell = f"{show(value, args.cap)} ({got}/{args.seeds})"
            if name != "uniform" and math.isfinite(value) and math.isfinite(base):
                cell += f", {1.0 - value / base:+.0%} fewer"
            row.append(cell)
        row.append(f"{np.mean(top_share[name]):.1%}")
        print("| " + " | ".join(row) + " |")
    print(
        "\nCells: median votes over seeds until the rule first held (seeds that got there by the cap), "
        "and the share fewer than uniform (negative = more). Last column: share of all votes spent on "
        "the 10 pairs within the true top 5 (uniform: 5.3 %)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
