"""The anomalous-voter tests of ``analysis.voters``: per-vote p-values, their combinations, the per-voter
figures, position bias, and detection on a simulated arena with planted voters."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.voters import (
    METHODS,
    RESULT_COLUMNS,
    VARIANTS,
    detect_anomalous_voters,
    detection_rates,
    fisher_checkpoints,
    fisher_combined,
    likelihood_p_values,
    outcome_probabilities,
    position_bias,
    position_bias_from_counts,
    position_bias_of_votes,
    prepare_votes,
    side_p_values,
    simulate_arena,
    vote_p_values,
    voter_records,
    wilson_interval,
)


def null_votes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcome distributions of Bradley–Terry pairs with ties, and outcomes drawn from them."""
    strength = rng.normal(0, 100, 12)
    a = rng.integers(0, 12, n)
    b = (a + rng.integers(1, 12, n)) % 12
    p = 1 / (1 + 10 ** ((strength[b] - strength[a]) / 400))
    q = np.stack([0.8 * p, 0.8 * (1 - p), np.full(n, 0.14), np.full(n, 0.06)], axis=1)
    outcome = (rng.random(n)[:, None] > np.cumsum(q, axis=1)).sum(axis=1)
    return q, outcome


def test_default_method_finds_planted_voters_and_spares_honest_ones() -> None:
    """The issue's target on simulation: ≥ 80% of planted voters found, ≤ 5% of honest ones flagged."""
    default = (METHODS[0], VARIANTS[METHODS[0]][0], True)
    rates = detection_rates([11, 12, 13], [default]).iloc[0]
    assert rates["detection"] >= 0.8, rates.to_dict()
    assert rates["false_flags"] <= 0.05, rates.to_dict()
    for kind in ("random", "left", "one-model"):
        assert rates[f"found_{kind}"] >= 0.6, rates.to_dict()


def test_side_test_is_what_finds_always_left_voters() -> None:
    """An always-left voter looks like an honest one to the model-outcome tests alone."""
    rates = detection_rates([21, 22], [("fisher", "mid", False), ("fisher", "mid", True)])
    without, with_side = rates.iloc[0], rates.iloc[1]
    assert without["found_left"] <= 0.25 and with_side["found_left"] == 1.0


def test_conservative_p_values_are_weak_on_discrete_outcomes() -> None:
    """Fisher's method over conservative p-values misses most random voters that mid-p finds."""
    rates = detection_rates([31, 32], [("fisher", "conservative", False), ("fisher", "mid", False)])
    assert rates.iloc[0]["found_random"] < rates.iloc[1]["found_random"] - 0.3


def test_vote_p_values_by_hand() -> None:
    q = np.array([[0.5, 0.3, 0.1, 0.1]] * 3)
    outcome = np.array([0, 1, 2])
    assert vote_p_values(q, outcome, "conservative") == pytest.approx([1.0, 0.5, 0.2])
    assert vote_p_values(q, outcome, "mid") == pytest.approx([0.75, 0.35, 0.1])
    randomized = vote_p_values(q, outcome, "randomized", np.random.default_rng(0))
    assert 0.5 <= randomized[0] <= 1.0 and 0.2 <= randomized[1] <= 0.5 and 0.0 < randomized[2] <= 0.2
    with pytest.raises(ValueError, match="variant"):
        vote_p_values(q, outcome, "exact")


def test_randomized_p_values_are_uniform_under_the_null() -> None:
    rng = np.random.default_rng(0)
    q, outcome = null_votes(rng, 20_000)
    randomized = vote_p_values(q, outcome, "randomized", rng)
    assert stats.kstest(randomized, "uniform").pvalue > 0.01
    conservative = vote_p_values(q, outcome, "conservative")
    mid = vote_p_values(q, outcome, "mid")
    assert stats.kstest(conservative, "uniform").pvalue < 1e-6  # discrete: far from uniform
    assert conservative.mean() > 0.55 and abs(mid.mean() - 0.5) < 0.01


def test_likelihood_p_values_are_calibrated_with_the_skew_correction() -> None:
    rng = np.random.default_rng(6)
    n_voters, n = 3000, 20
    q, outcome = null_votes(rng, n_voters * n)
    voter = np.repeat(np.arange(n_voters), n)
    p = likelihood_p_values(q, outcome, voter, n_voters, "pearson3")
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert abs((p < 0.05).mean() - 0.05) < 0.015


def test_fisher_combination_and_checkpoints() -> None:
    p = np.array([0.01, 0.2, 0.5, 0.9])
    assert fisher_combined(p) == pytest.approx(stats.combine_pvalues(p, method="fisher").pvalue)
    # voter 0: 5 votes, checkpoints after 2, 4 and 5; voter 1: 1 vote (its only checkpoint)
    p = np.array([0.01, 0.02, 0.9, 0.8, 0.7, 0.3])
    voter = np.array([0, 0, 0, 0, 0, 1])
    combined = fisher_checkpoints(p, voter, 3, step=2)
    expected = 3 * min(fisher_combined(p[:2]), fisher_combined(p[:4]), fisher_combined(p[:5]))
    assert combined[0] == pytest.approx(min(1.0, expected))
    assert combined[1] == pytest.approx(0.3)
    assert math.isnan(combined[2])  # no votes


def test_leave_one_voter_out_probabilities() -> None:
    votes = pd.DataFrame(
        {
            "voter": ["u", "u", "v", "w"],
            "model_a": ["x", "y", "x", "x"],
            "model_b": ["y", "x", "y", "y"],
            "winner": ["model_a", "model_a", "model_b", "tie"],
        }
    )
    prepared = prepare_votes(votes)
    q = outcome_probabilities(prepared.voter, prepared.pair, prepared.outcome, prior=0.5)
    # u's votes: x won, then y won; the others: y won once (v), one tie (w)
    u = prepared.voter == prepared.voters.index("u")
    assert q[u] == pytest.approx(np.tile(np.array([0.5, 1.5, 1.5, 0.5]) / 4.0, (2, 1)))
    v = prepared.voter == prepared.voters.index("v")
    assert q[v][0] == pytest.approx(np.array([1.5, 1.5, 1.5, 0.5]) / 5.0)


def test_too_few_votes_get_no_test_and_left_share_is_counted() -> None:
    arena = simulate_arena(3, n_honest=60, n_planted=0)
    left = pd.DataFrame(
        {
            "voter": "lefty",
            "model_a": ["model-00", "model-01"] * 9 + ["model-02"],
            "model_b": ["model-03"] * 19,
            "winner": ["model_a"] * 15 + ["model_b"] * 2 + ["tie"] * 2,
            "decision_s": [1.0, 2.0, 3.0] + [np.nan] * 16,
        }
    )
    votes = pd.concat([arena.votes, left], ignore_index=True)
    result = detect_anomalous_voters(votes, min_votes=20).set_index("voter")
    row = result.loc["lefty"]
    assert row["n_votes"] == 19 and math.isnan(row["p_value"]) and not row["anomalous"]
    assert row["n_decisive"] == 17 and row["left_share"] == pytest.approx(15 / 17)
    assert row["median_decision_s"] == pytest.approx(2.0)
    flagged = detect_anomalous_voters(votes, min_votes=19).set_index("voter").loc["lefty"]
    assert flagged["anomalous"] and flagged["p_side"] < 0.01


def test_one_model_voter_shows_its_favourite() -> None:
    arena = simulate_arena(4, n_honest=80, n_planted=3)
    result = detect_anomalous_voters(arena.votes).set_index("voter")
    fan = next(v for v, kind in arena.kinds.items() if kind == "one-model")
    votes = arena.votes[arena.votes["voter"] == fan]
    wins = pd.concat(
        [
            votes.loc[votes["winner"] == "model_a", "model_a"],
            votes.loc[votes["winner"] == "model_b", "model_b"],
        ]
    )
    assert result.loc[fan, "favourite_model"] == wins.value_counts().index[0]
    assert result.loc[fan, "favourite_excess"] > 0.3


def test_json_records_shape() -> None:
    arena = simulate_arena(7, n_honest=40, n_planted=3, votes_per_voter=30)
    records = voter_records(detect_anomalous_voters(arena.votes, method="likelihood"))
    json.dumps(records)  # plain JSON types only
    assert len(records) == 43 and list(records[0]) == list(RESULT_COLUMNS)
    assert {r["method"] for r in records} == {"likelihood-pearson3+side"}
    first = records[0]
    assert isinstance(first["anomalous"], bool) and isinstance(first["n_votes"], int)
    assert 0.0 <= first["p_value"] <= 1.0 and first["voter"].startswith("planted")
    tested = [r["p_value"] for r in records if r["p_value"] is not None]
    assert tested == sorted(tested) and records[-1]["p_value"] is None  # untested voters last
    assert all(not r["anomalous"] for r in records if r["p_value"] is None)


def test_unknown_winner_and_bad_options_are_errors() -> None:
    votes = pd.DataFrame({"voter": ["u"], "model_a": ["x"], "model_b": ["y"], "winner": ["left"]})
    with pytest.raises(ValueError, match="unknown winner 'left'"):
        prepare_votes(votes)
    ok = votes.assign(winner="model_a")
    with pytest.raises(ValueError, match="alpha"):
        detect_anomalous_voters(ok, alpha=1.5)
    with pytest.raises(ValueError, match="method"):
        detect_anomalous_voters(ok, method="chi2")  # type: ignore[arg-type]


def test_side_p_values_against_the_other_voters() -> None:
    # voter 0 always left, voter 1 half and half, unknown voters (-1) half and half
    left_win = np.array([1] * 20 + [1, 0] * 50 + [1, 0, -1] * 300)
    voter = np.array([0] * 20 + [1] * 100 + [-1] * 900)
    p, n = side_p_values(left_win, voter, 2)
    assert list(n) == [20, 100]
    assert p[0] < 1e-4 and p[1] > 0.05


def test_wilson_interval_and_position_bias() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    bias = position_bias(60, 40)
    assert bias.share == pytest.approx(0.6) and bias.decisive == 100
    assert bias.ci_lower == pytest.approx(0.5020, abs=1e-4) and bias.ci_upper == pytest.approx(
        0.6906, abs=1e-4
    )
    assert position_bias(0, 0).share is None
    winners = pd.Series(["model_a"] * 6 + ["model_b"] * 4 + ["tie", "tie (bothbad)"])
    assert position_bias_of_votes(winners) == position_bias(6, 4)
    rows = [
        ("x", "y", "model_a", 5),
        ("y", "x", "model_a", 1),
        ("x", "y", "model_b", 4),
        ("x", "y", "tie", 9),
    ]
    assert position_bias_from_counts(rows).as_dict() == position_bias(6, 4).as_dict()
