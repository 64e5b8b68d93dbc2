"""Reproduce published leaderboards: WildVision-Bench scores and Chatbot Arena rank (UB)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.io import load_battles_file
from analysis.ratings import aggregate, fit_bt, predict_win_rate, summarize, validate_battles
from tests.reference import ARENA_HARD_NOTEBOOK, WILDVISION_BENCH

WV_BATTLES = WILDVISION_BENCH / "vision_bench_battles.jsonl"
WV_TABLE = WILDVISION_BENCH / "elo_leaderboard_6d1ab63.md"
WV_BOOT = WILDVISION_BENCH / "bootstrapping_results.jsonl"
CA_BOOT = ARENA_HARD_NOTEBOOK / "chatbot_arena_bootstrap_df_20240329.json"
CA_TABLE = ARENA_HARD_NOTEBOOK / "chatbot_arena_leaderboard_table_20240329.json"
BASELINE = "claude-3-sonnet-20240229"


def published_wildvision_scores() -> dict[str, float]:
    """Model -> Score from the published WildVision-Bench markdown table."""
    scores: dict[str, float] = {}
    for line in WV_TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in {"Model", ""} or cells[0].startswith(":"):
            continue
        scores[cells[0]] = float(cells[1])
    return scores


@pytest.fixture(scope="module")
def wildvision_fit() -> pd.Series:
    """BT ratings of the WildVision-Bench judge battles, anchored baseline = 1000."""
    # the file holds 500 baseline-vs-baseline rows; the published fit skips them (m_a == m_b)
    df = validate_battles(load_battles_file(WV_BATTLES), self_battles="drop")
    assert len(df) == 19_644 - 500
    return fit_bt(aggregate(df), anchor=(BASELINE, 1000.0))


def test_wildvision_bench_scores_match_published_table(wildvision_fit: pd.Series) -> None:
    published = published_wildvision_scores()
    assert len(published) == 21
    # Score = predicted win rate vs the baseline x 100, rounded to two decimals
    win_rate = predict_win_rate(wildvision_fit)[BASELINE]
    ours = {m: round(float(win_rate[m]) * 100, 2) for m in published}
    mismatched = {m: (ours[m], published[m]) for m in published if ours[m] != published[m]}
    assert not mismatched, mismatched


def test_wildvision_bench_ratings_match_published_full_fit(wildvision_fit: pd.Series) -> None:
    full_fit = pd.read_json(WV_BOOT, lines=True).iloc[0]  # row 0 = their fit on all battles
    diff = (wildvision_fit - full_fit[wildvision_fit.index].astype(float)).abs()
    assert diff.max() < 0.01, diff.sort_values().tail()


def test_chatbot_arena_rank_ub_and_intervals() -> None:
    boot = pd.read_json(CA_BOOT, orient="split")
    table = pd.read_json(CA_TABLE)
    assert boot.shape == (100, 76)
    point = table.set_index("model")["rating"]
    ours = summarize(point, boot, table.set_index("model")["num_battles"]).set_index("model")
    ref = table.set_index("model").loc[ours.index]
    np.testing.assert_allclose(ours["ci_lower"], ref["rating_q025"], atol=1e-8)
    np.testing.assert_allclose(ours["ci_upper"], ref["rating_q975"], atol=1e-8)
    assert (ours["rank_ub"] == ref["final_ranking"]).all(), ours.loc[
        ours["rank_ub"] != ref["final_ranking"], "rank_ub"
    ]
    assert (ours["num_battles"] == ref["num_battles"]).all()


def published_wildvision_intervals() -> dict[str, tuple[float, float]]:
    """Model -> (lower, upper) offsets of the published '95% CI' column, e.g. (-1.9, 1.5)."""
    out: dict[str, tuple[float, float]] = {}
    for line in WV_TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[2].startswith("("):
            lo, hi = cells[2].strip("()").split(",")
            out[cells[0]] = (float(lo), float(hi))
    return out


def test_wildvision_bench_intervals_from_the_published_bootstrap(wildvision_fit: pd.Series) -> None:
    """Each bootstrap round's ratings -> win rate vs the baseline (x100); the 2.5/97.5 percentiles,
    as offsets from the score, give the published interval to within 0.1."""
    rounds = pd.read_json(WV_BOOT, lines=True).iloc[1:]  # row 0 is the full fit
    published = published_wildvision_intervals()
    scores = predict_win_rate(wildvision_fit)[BASELINE] * 100
    assert len(published) == 21
    worst = 0.0
    for model, (lo, hi) in published.items():
        diff = rounds[model].to_numpy(float) - rounds[BASELINE].to_numpy(float)
        boot = 100 / (1 + 10 ** (-diff / 400))
        ours = (np.percentile(boot, 2.5) - scores[model], np.percentile(boot, 97.5) - scores[model])
        worst = max(worst, abs(ours[0] - lo), abs(ours[1] - hi))
    assert worst <= 0.1 + 1e-9, worst
