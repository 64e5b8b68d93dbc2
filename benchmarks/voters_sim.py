"""How well, and how fast, ``python -m analysis voters`` finds anomalous voters.

1. Detection on simulation (``analysis.voters.simulate_arena``): 200 honest voters voting by
   Bradley–Terry strengths of 12 models (ratings ~ Normal(0, 100), 20% ties of which 30% "both bad",
   a 15-point left-side bonus) and 10 planted voters (random clicks, always left, always one model),
   about 100 votes each, pairs drawn uniformly. For every method × p-value variant, with and without
   the side test: detection (planted flagged) and false flags (honest flagged) at alpha 0.05, pooled
   over ``--seeds`` seeds, and per planted kind; then the same at about 30 votes per voter.
2. Calibration under the null: voters whose votes follow the true pair distributions exactly, at
   20, 50 and 100 votes: the share with p < 0.05 and p < 0.01 per method (a calibrated test gives
   0.05 and 0.01) and, for the likelihood test, the KS p-value of uniformity (normal vs Pearson III).
3. Speed: ``detect_anomalous_voters`` on a synthetic frame of ``--votes`` votes (default 1M; 50
   models, 10k voters), median of ``--repeat`` runs.

  python benchmarks/voters_sim.py [--seeds 20] [--votes 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.voters import (  # noqa: E402
    detect_anomalous_voters,
    detection_rates,
    fisher_checkpoints,
    likelihood_p_values,
    vote_p_values,
)

CONFIGURATIONS = [
    ("fisher", "mid", True),
    ("fisher", "randomized", True),
    ("fisher", "conservative", True),
    ("likelihood", "pearson3", True),
    ("likelihood", "normal", True),
    ("fisher", "mid", False),
    ("fisher", "randomized", False),
    ("fisher", "conservative", False),
    ("likelihood", "pearson3", False),
    ("likelihood", "normal", False),
]


def show(frame: pd.DataFrame) -> None:
    """Print a rates table with percentages."""
    shown = frame.copy()
    for column in shown.columns:
        if shown[column].dtype == float:
            shown[column] = shown[column].map(lambda x: f"{x:6.1%}")
    print(shown.to_string(index=False))


def calibration(rng: np.random.Generator, n_voters: int = 4000) -> pd.DataFrame:
    """False-flag shares of each test when every vote follows the true pair distribution."""
    strength = rng.normal(0, 100, 12)
    rows = []
    for n in (20, 50, 100):
        size = n * n_voters
        a = rng.integers(0, 12, size)
        b = (a + rng.integers(1, 12, size)) % 12
        p = 1 / (1 + 10 ** ((strength[b] - strength[a]) / 400))
        q = np.stack([0.8 * p, 0.8 * (1 - p), np.full(size, 0.14), np.full(size, 0.06)], axis=1)
        outcome = (rng.random(size)[:, None] > np.cumsum(q, axis=1)).sum(axis=1)
        voter = np.repeat(np.arange(n_voters), n)
        results = {}
        for variant in ("mid", "randomized", "conservative"):
            per_vote = vote_p_values(q, outcome, variant, rng)
            results[f"fisher-{variant}"] = fisher_checkpoints(per_vote, voter, n_voters, 20)
        for approximation in ("pearson3", "normal"):
            results[f"likelihood-{approximation}"] = likelihood_p_values(
                q, outcome, voter, n_voters, approximation
            )
        for name, values in results.items():
            ks = stats.kstest(values, "uniform").pvalue if name.startswith("likelihood") else float("nan")
            rows.append(
                {
                    "votes": n,
                    "test": name,
                    "p<0.05": float((values < 0.05).mean()),
                    "p<0.01": float((values < 0.01).mean()),
                    "KS p (uniform)": ks,
                }
            )
    return pd.DataFrame(rows)


def big_frame(n_votes: int, seed: int = 0) -> pd.DataFrame:
    """``n_votes`` votes of 10k voters among 50 models (popular models battle more)."""
    rng = np.random.default_rng(seed)
    models = np.array([f"model-{i:02d}" for i in range(50)], dtype=object)
    weight = rng.dirichlet(np.full(50, 2.0))
    a = rng.choice(50, n_votes, p=weight)
    b = (a + rng.integers(1, 50, n_votes)) % 50
    strength = rng.normal(0, 120, 50)
    p = 1 / (1 + 10 ** ((strength[b] - strength[a]) / 400))
    u = rng.random(n_votes)
    winner = np.where(u < 0.2, "tie", np.where(rng.random(n_votes) < p, "model_a", "model_b"))
    voters = np.array([f"voter-{i:05d}" for i in range(10_000)], dtype=object)
    return pd.DataFrame(
        {
            "voter": voters[rng.zipf(1.5, n_votes) % 10_000],
            "model_a": models[a],
            "model_b": models[b],
            "winner": winner,
            "tstamp": np.arange(n_votes, dtype=np.float64),
            "decision_s": rng.lognormal(np.log(12.0), 0.6, n_votes),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20, help="simulated arenas per configuration")
    parser.add_argument("--votes", type=int, default=1_000_000, help="votes in the timing frame")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (median printed)")
    args = parser.parse_args()
    pd.set_option("display.width", 200)

    seeds = range(args.seeds)
    print(f"== detection at alpha 0.05, ~100 votes per voter, {args.seeds} seeds")
    show(detection_rates(seeds, CONFIGURATIONS))
    print(f"\n== detection at alpha 0.05, ~30 votes per voter, {args.seeds} seeds")
    show(detection_rates(seeds, CONFIGURATIONS, votes_per_voter=30))

    print("\n== calibration under the null (voters following the true pair distributions)")
    table = calibration(np.random.default_rng(1))
    table["KS p (uniform)"] = table["KS p (uniform)"].map(lambda x: "" if np.isnan(x) else f"{x:.3f}")
    for column in ("p<0.05", "p<0.01"):
        table[column] = table[column].map(lambda x: f"{x:.2%}")
    print(table.to_string(index=False))

    print(f"\n== speed: {args.votes:,} votes, 10,000 voters, 50 models")
    frame = big_frame(args.votes)
    for method in ("fisher", "likelihood"):
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = detect_anomalous_voters(frame, method=method)  # type: ignore[arg-type]
            times.append(time.perf_counter() - started)
        print(
            f"{method:<10} median {statistics.median(times):.2f} s over {args.repeat} runs "
            f"({', '.join(f'{t:.2f}' for t in times)}); {int(result['p_value'].notna().sum()):,} voters tested, "
            f"{int(result['anomalous'].sum()):,} flagged"
        )


if __name__ == "__main__":
    main()
