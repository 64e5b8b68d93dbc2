"""How fast the Bradley–Terry leaderboard is, against the published FastChat formulation.

Generates N seeded battles among M models (realistic strength spread, popular models battle more,
35% ties of which a third are "tie (bothbad)"), keeps them in memory and writes them as a FastChat
style JSONL file (question_id, model_a, model_b, winner, judge, turn, anony, language, tstamp) into a
temporary directory. Then, with ``--repeat`` runs of each (medians printed, every run listed):

(a/b) in memory, from the same battle frame:
  baseline  the reference formulation of FastChat's ``fastchat/serve/monitor/rating_systems.py``
            (the Chatbot Arena notebook's ``compute_bt`` / ``compute_bootstrap_bt``): unique
            (model_a, model_b, outcome) rows with counts, one ``scipy.optimize.minimize(L-BFGS-B)`` of
            the weighted BT log-likelihood for the point estimate and one per bootstrap round, rounds
            drawn as one multinomial over the unique rows (run in this process, one round after the
            other, BLAS limited to one thread like ours);
  ours      ``analysis.ratings.aggregate`` + ``fit_bt`` + ``bootstrap_bt(..., rounds)``.
  Targets: ours >= 10x faster, <= 3 s, point estimates within 0.01 rating points of the baseline's.
(c) end to end, each in a fresh interpreter (imports, reading the file, fitting, output):
  ours      ``python -m analysis ratings --battles FILE --bootstrap ROUNDS --format json``
  baseline  ``pandas.read_json(FILE, lines=True)`` + the baseline above.
  Target: ours >= 4x faster.

  python benchmarks/ratings_bench.py [--battles 1000000] [--models 100] [--rounds 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import expit  # noqa: E402

TIE_SHARE = 0.35
FAMILIES = (
    "llava-onevision",
    "qwen2-vl",
    "idefics3",
    "paligemma2",
    "gemma3",
    "internvl2.5",
    "minicpm-v",
    "pixtral",
    "molmo",
    "phi-3.5-vision",
)
SIZES = ("2b", "7b", "13b", "34b", "72b")
LANGUAGES = ("English", "Chinese", "German", "Spanish", "French", "Japanese", "Russian", "unknown")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def model_names(m: int) -> list[str]:
    """M distinct, plausible model names."""
    return [
        f"{FAMILIES[i % len(FAMILIES)]}-{SIZES[(i // len(FAMILIES)) % len(SIZES)]}-v{i // 50 + 1}"
        for i in range(m)
    ]


def make_battles(n: int, m: int, seed: int) -> pd.DataFrame:
    """N battles among M models: ratings ~ N(1000, 120), pair choice weighted by a lognormal
    popularity, outcome by BT with 35% ties (a third of them "tie (bothbad)"), all anonymous."""
    rng = np.random.default_rng(seed)
    names = np.array(model_names(m), dtype=object)
    strength = rng.normal(0.0, 120.0, m)
    weight = rng.lognormal(0.0, 0.5, m)
    weight /= weight.sum()
    ia = rng.choice(m, n, p=weight)
    ib = rng.choice(m, n, p=weight)
    while (same := ia == ib).any():
        ib[same] = rng.choice(m, int(same.sum()), p=weight)
    p_a = 1.0 / (1.0 + 10.0 ** ((strength[ib] - strength[ia]) / 400.0))
    tie = rng.random(n) < TIE_SHARE
    bothbad = rng.random(n) < 1.0 / 3.0
    a_won = rng.random(n) < p_a
    winner = np.where(tie, np.where(bothbad, "tie (bothbad)", "tie"), np.where(a_won, "model_a", "model_b"))
    ids = rng.integers(0, 2**63, size=(n, 2))
    return pd.DataFrame(
        {
            "question_id": [f"{x:016x}{y:016x}" for x, y in ids.tolist()],
            "model_a": names[ia],
            "model_b": names[ib],
            "winner": winner.astype(object),
            "judge": [f"arena_user_{k}" for k in rng.integers(0, 40_000, n).tolist()],
            "turn": rng.choice(np.array([1, 1, 1, 2, 3]), n),
            "anony": True,
            "language": np.array(LANGUAGES, dtype=object)[rng.integers(0, len(LANGUAGES), n)],
            "tstamp": np.round(1.72e9 + np.cumsum(rng.exponential(2.0, n)), 2),
        }
    )


def write_jsonl(df: pd.DataFrame, path: Path) -> None:
    """The battles as JSON Lines (compact separators, like FastChat's exports through orjson)."""
    try:
        import orjson

        dumps = orjson.dumps
    except ImportError:  # pragma: no cover

        def dumps(obj: Any) -> bytes:
            return json.dumps(obj, separators=(",", ":")).encode()

    columns = list(df.columns)
    with path.open("wb") as fh:
        for values in zip(*(df[c].tolist() for c in columns), strict=True):
            fh.write(dumps(dict(zip(columns, values, strict=True))))
            fh.write(b"\n")


# --------------------------------------------------------------------------------------------------
# Baseline: FastChat's rating_systems.py formulation
# --------------------------------------------------------------------------------------------------


def baseline_preprocess(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Unique (model_a, model_b, outcome) rows and how often each occurs (outcome 1 / 0.5 / 0)."""
    schedule = np.full((len(df), 3), fill_value=1, dtype=np.int32)
    models, codes = np.unique(df[["model_a", "model_b"]].to_numpy(dtype=object), return_inverse=True)
    schedule[:, :2] = codes.reshape(len(df), 2)
    schedule[(df["winner"] == "model_a").to_numpy(), 2] = 2
    schedule[(df["winner"] == "model_b").to_numpy(), 2] = 0
    matchups_outcomes, weights = np.unique(schedule, return_counts=True, axis=0)
    matchups = matchups_outcomes[:, [0, 1]]
    outcomes = matchups_outcomes[:, 2].astype(np.float64) / 2.0
    return matchups, outcomes, list(models), weights.astype(np.float64)


def baseline_loss_and_grad(
    ratings: np.ndarray, matchups: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, alpha: float
) -> tuple[float, np.ndarray]:
    """Weighted BT negative log-likelihood (a tie is half a win each way) and its gradient."""
    matchup_ratings = ratings[matchups]
    logits = alpha * (matchup_ratings[:, 0] - matchup_ratings[:, 1])
    probs = expit(logits)
    loss = -((np.log(probs) * outcomes + np.log(1.0 - probs) * (1.0 - outcomes)) * weights).sum()
    matchups_grads = -alpha * (outcomes - probs) * weights
    model_grad = np.zeros_like(ratings)
    np.add.at(model_grad, matchups[:, [0, 1]], matchups_grads[:, None] * np.array([1.0, -1.0]))
    return float(loss), model_grad


def baseline_fit(
    matchups: np.ndarray,
    outcomes: np.ndarray,
    weights: np.ndarray,
    n_models: int,
    alpha: float,
    tol: float = 1e-6,
    ftol: float | None = None,
) -> np.ndarray:
    """One L-BFGS-B fit from zero ratings (FastChat's ``fit_bt``; ``ftol`` None = scipy's default)."""
    options: dict[str, Any] = {"maxiter": 100, "gtol": tol}
    if ftol is not None:
        options.update(ftol=ftol, maxiter=10_000)
    result = minimize(
        fun=baseline_loss_and_grad,
        x0=np.zeros(n_models),
        args=(matchups, outcomes, weights, alpha),
        jac=True,
        method="L-BFGS-B",
        options=options,
    )
    return result["x"]


def baseline_ratings(df: pd.DataFrame, rounds: int, seed: int = 0) -> tuple[pd.Series, np.ndarray, pd.Series]:
    """FastChat's ``compute_bt`` point estimate and ``compute_bootstrap_bt`` rounds (400 scale, mean 1000).

    With scipy's default ``ftol`` L-BFGS-B stops once the loss changes by less than ~2e-9 relative,
    which on a million battles is ~0.07 rating points short of the optimum. The point estimate is
    therefore run to convergence (``ftol=1e-15``; see ``baseline_default_point`` for the other). The
    bootstrap rounds keep FastChat's settings (less work per round: conservative for the comparison).
    """
    from threadpoolctl import threadpool_limits

    alpha = math.log(10.0)
    matchups, outcomes, models, weights = baseline_preprocess(df)
    with threadpool_limits(limits=1, user_api="blas"):
        point = baseline_fit(matchups, outcomes, weights, len(models), alpha, ftol=1e-15)
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n=len(df), pvals=weights / weights.sum(), size=rounds)
        boot = np.array(
            [
                baseline_fit(matchups, outcomes, w / len(df), len(models), alpha)
                for w in draws.astype(np.float64)
            ]
        )

    def scaled(x: np.ndarray) -> np.ndarray:
        return 400.0 * (x - x.mean(axis=-1, keepdims=True)) + 1000.0

    return pd.Series(scaled(point), index=models), scaled(boot)


def baseline_default_point(df: pd.DataFrame) -> pd.Series:
    """FastChat's point estimate with its default tolerances (for the printed difference only)."""
    matchups, outcomes, models, weights = baseline_preprocess(df)
    x = baseline_fit(matchups, outcomes, weights, len(models), math.log(10.0))
    return pd.Series(400.0 * (x - x.mean()) + 1000.0, index=models)


def baseline_end_to_end(path: str, rounds: int) -> int:
    """``--baseline-e2e``: read the file with pandas, fit, print the ratings as JSON on stdout."""
    df = pd.read_json(path, lines=True)
    df = df.loc[df["anony"]]
    point, boot = baseline_ratings(df, rounds)
    lower, upper = np.percentile(boot, [2.5, 97.5], axis=0)
    rows = [
        {"model": m, "rating": float(point[m]), "ci_lower": float(lo), "ci_upper": float(hi)}
        for m, lo, hi in zip(point.index, lower, upper, strict=True)
    ]
    json.dump(rows, sys.stdout)
    return 0


# --------------------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------------------


def our_ratings(df: pd.DataFrame, rounds: int, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    from analysis.ratings import aggregate, bootstrap_bt, fit_bt

    agg = aggregate(df)
    point = fit_bt(agg)
    boot = bootstrap_bt(agg, rounds, np.random.default_rng(seed))
    return point, boot


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def run_command(cmd: list[str]) -> tuple[float, list[dict[str, Any]]]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return seconds, json.loads(done.stdout)


def fmt_runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--battles", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--models", type=int, default=100, metavar="M")
    parser.add_argument("--rounds", type=int, default=1000, metavar="R", help="bootstrap rounds")
    parser.add_argument("--repeat", type=int, default=3, metavar="K", help="runs of each measurement")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end (file) comparison")
    parser.add_argument("--baseline-e2e", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_e2e:
        return baseline_end_to_end(args.baseline_e2e, args.rounds)

    df = make_battles(args.battles, args.models, args.seed)
    print(
        f"{len(df):,} battles, {args.models} models, {args.rounds} bootstrap rounds, {args.repeat} run(s) each"
    )
    print(f"ties: {df['winner'].isin(['tie', 'tie (bothbad)']).mean():.1%}")

    b_default = baseline_default_point(df)
    base_t, ours_t, diffs, default_diffs = [], [], [], []
    for _ in range(args.repeat):
        t, (b_point, _) = timed(baseline_ratings, df, args.rounds)
        base_t.append(t)
        t, (o_point, _) = timed(our_ratings, df, args.rounds)
        ours_t.append(t)
        diffs.append(float((o_point - b_point[o_point.index]).abs().max()))
        default_diffs.append(float((o_point - b_default[o_point.index]).abs().max()))
    b, o = statistics.median(base_t), statistics.median(ours_t)
    print("\n(a/b) in memory: point estimate + bootstrap")
    print(f"  baseline (FastChat formulation): median {b:.2f} s  [runs: {fmt_runs(base_t)}]")
    print(f"  ours (aggregate+fit_bt+bootstrap_bt): median {o:.2f} s  [runs: {fmt_runs(ours_t)}]")
    print(f"  speed-up: {b / o:.1f}x")
    print(f"  max |point difference|: {max(diffs):.5f} rating points (baseline fit to convergence)")
    print(f"                          {max(default_diffs):.5f} (baseline with FastChat's default tolerances)")

    if not args.skip_e2e:
        with tempfile.TemporaryDirectory(prefix="arena-ratings-bench-") as tmp:
            path = Path(tmp) / "battles.jsonl"
            write_jsonl(df, path)
            del df
            size_mb = path.stat().st_size / 1e6
            ours_cmd = [
                sys.executable, "-m", "analysis", "ratings", "--battles", str(path),
                "--bootstrap", str(args.rounds), "--format", "json",
            ]  # fmt: skip
            base_cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-e2e", str(path),
                        "--rounds", str(args.rounds)]  # fmt: skip
            e_base, e_ours, e_diff = [], [], []
            for _ in range(args.repeat):
                t, base_rows = run_command(base_cmd)
                e_base.append(t)
                t, our_rows = run_command(ours_cmd)
                e_ours.append(t)
                ref = {r["model"]: r["rating"] for r in base_rows}
                e_diff.append(max(abs(r["rating"] - ref[r["model"]]) for r in our_rows))
        b, o = statistics.median(e_base), statistics.median(e_ours)
        print(f"\n(c) end to end from a {size_mb:.0f} MB JSONL file (fresh interpreter each)")
        print(
            f"  baseline (pandas.read_json + FastChat formulation): median {b:.2f} s  [runs: {fmt_runs(e_base)}]"
        )
        print(
            f"  ours (python -m analysis ratings --format json): median {o:.2f} s  [runs: {fmt_runs(e_ours)}]"
        )
        print(f"  speed-up: {b / o:.1f}x   max |rating difference| (ours rounded to 0.01): {max(e_diff):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
