"""The live sampling policy: observed pair and model proportions over many seeded draws stay within
binomial bounds of what the policy promises (weights, new-model boost, battle targets, fairness floor,
active sampling), and the live inputs come from a real leaderboard snapshot over real databases."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from analysis.active_sampling import pair_uncertainty_weights
from arena.app import build_sampler
from arena.sampling import (
    PairSampler,
    SamplingInputs,
    SamplingPolicy,
    SnapshotInputs,
    draw_pair,
    model_shares,
    pair_probabilities,
    sequential_masses,
)
from arena.settings import ArenaSettings
from arena.snapshots import SnapshotService
from models.roster import RosterError, parse_roster
from storage import repo
from tests.arena.conftest import scripted

DRAWS = 20_000
SIGMAS = 5.0


def within(observed: int, n: int, p: float) -> bool:
    """Whether ``observed`` successes in ``n`` draws are within SIGMAS binomial sigmas of ``p``."""
    return abs(observed - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p)) + 1e-9


def draws(sampler: PairSampler, weights: Mapping[str, float], seed: int = 0, n: int = DRAWS):
    rng = random.Random(seed)
    return [sampler.draw(weights, rng) for _ in range(n)]


def pair_counts(pairs) -> Counter[tuple[str, str]]:
    return Counter(tuple(sorted(p)) for p in pairs)


def model_counts(pairs) -> Counter[str]:
    return Counter(name for pair in pairs for name in pair)


def assert_pairs_match(pairs, expected: Mapping[tuple[str, str], float]) -> None:
    counts = pair_counts(pairs)
    assert set(counts) <= set(expected)
    for pair, p in expected.items():
        assert within(counts[pair], len(pairs), p), (pair, counts[pair] / len(pairs), p)


def fixed(inputs: SamplingInputs | None):
    return lambda: inputs


# -- weights, sides, self-pairs -------------------------------------------------------------------


def test_weighted_draws_follow_the_database_weights() -> None:
    weights = {"alpha": 1.0, "bravo": 2.0, "charlie": 3.0, "delta": 0.5}
    sampler = PairSampler(SamplingPolicy(policy="weighted", min_share=0.0))
    pairs = draws(sampler, weights, seed=1)
    assert all(a != b for a, b in pairs)
    expected = sequential_masses(weights)  # first by weight, second by weight among the rest
    assert sum(expected.values()) == pytest.approx(1.0)
    assert_pairs_match(pairs, expected)
    # heavier models are in more battles
    shares = model_counts(pairs)
    assert shares["charlie"] > shares["bravo"] > shares["alpha"] > shares["delta"]
    # sides are random: each model is on side A about half of the battles it is in
    side_a = Counter(a for a, _ in pairs)
    for name, n in shares.items():
        assert within(side_a[name], n, 0.5)


def test_weighted_keeps_the_arenas_old_proportions() -> None:
    """8:1:1 put the heavy model in 0.8 + 0.2 * 8/9 ≈ 97.8% of the pairs before policies existed."""
    shares = model_shares(pair_probabilities({"a": 8.0, "b": 1.0, "c": 1.0}, SamplingPolicy()))
    assert shares["a"] == pytest.approx(0.8 + 0.2 * 8 / 9)


def test_uniform_ignores_weights_and_targets() -> None:
    sampler = PairSampler(SamplingPolicy(policy="uniform"), targets={"alpha": ["bravo"]})
    weights = {"alpha": 9.0, "bravo": 1.0, "charlie": 1.0}
    assert_pairs_match(draws(sampler, weights, seed=2), dict.fromkeys(sampler.table(weights).pairs, 1 / 3))


def test_seeded_draws_repeat() -> None:
    weights = {"alpha": 1.0, "bravo": 2.0, "charlie": 3.0}
    sampler = PairSampler()
    assert draws(sampler, weights, seed=7, n=200) == draws(PairSampler(), weights, seed=7, n=200)
    assert draws(sampler, weights, seed=7, n=200) != draws(sampler, weights, seed=8, n=200)


# -- boost -----------------------------------------------------------------------------------------


def test_a_new_model_is_boosted_until_it_has_enough_votes() -> None:
    policy = SamplingPolicy(boost=5.0, boost_until_votes=3000, min_share=0.0)
    weights = dict.fromkeys(["new", "old1", "old2", "old3"], 1.0)
    votes = {"new": 120, "old1": 5000, "old2": 4000, "old3": 3000}
    sampler = PairSampler(policy, sampling_inputs=fixed(SamplingInputs("v1", votes=votes)))
    pairs = draws(sampler, weights, seed=3)
    boosted = sequential_masses({**weights, "new": 5.0})
    assert_pairs_match(pairs, boosted)
    new_share = model_shares(boosted)["new"]
    assert new_share == pytest.approx(5 / 8 + 3 / 8 * 5 / 7)  # drawn first, or second after an old one
    assert within(model_counts(pairs)["new"], DRAWS, new_share)
    assert new_share > 0.85  # unboosted, each model is in half of the battles

    # At the threshold the boost ends (a new snapshot: a new version, so a new table).
    sampler.sampling_inputs = fixed(SamplingInputs("v2", votes={**votes, "new": 3000}))
    pairs = draws(sampler, weights, seed=4)
    assert_pairs_match(pairs, dict.fromkeys(sequential_masses(weights), 1 / 6))
    assert within(model_counts(pairs)["new"], DRAWS, 0.5)


def test_without_a_snapshot_there_is_no_boost_and_active_falls_back_to_weighted() -> None:
    weights = {"alpha": 1.0, "bravo": 2.0, "charlie": 3.0}
    for policy in ("weighted", "active"):
        sampler = PairSampler(SamplingPolicy(policy=policy, min_share=0.0), sampling_inputs=fixed(None))
        assert sampler.table(weights).as_dict() == pytest.approx(sequential_masses(weights))
        assert_pairs_match(draws(sampler, weights, seed=5), sequential_masses(weights))


# -- targets and floor ------------------------------------------------------------------------------


def test_battle_targets_make_their_pairs_more_likely() -> None:
    policy = SamplingPolicy(target_boost=3.0, min_share=0.0)
    sampler = PairSampler(policy, targets={"alpha": ["bravo"]})
    weights = dict.fromkeys(["alpha", "bravo", "charlie", "delta"], 1.0)
    pairs = draws(sampler, weights, seed=6)
    # five pairs of mass 1, the targeted one of mass 3
    expected = {pair: (3 / 8 if pair == ("alpha", "bravo") else 1 / 8) for pair in sequential_masses(weights)}
    assert_pairs_match(pairs, expected)
    assert pair_counts(pairs)[("alpha", "bravo")] > 2 * pair_counts(pairs)[("alpha", "charlie")]


def test_the_floor_keeps_a_tiny_weight_in_battles() -> None:
    weights = {"alpha": 1.0, "bravo": 1.0, "charlie": 1.0, "tiny": 0.01}
    unfair = model_shares(pair_probabilities(weights, SamplingPolicy(min_share=0.0)))["tiny"]
    assert unfair < 0.01
    policy = SamplingPolicy(min_share=0.5)  # at least half of the uniform share 2/4
    probabilities = pair_probabilities(weights, policy)
    shares = model_shares(probabilities)
    assert shares["tiny"] == pytest.approx(0.25)  # the smallest mix that reaches the floor: exactly it
    assert all(s >= 0.25 - 1e-12 for s in shares.values())
    assert sum(probabilities.values()) == pytest.approx(1.0)
    pairs = draws(PairSampler(policy), weights, seed=8)
    observed = model_counts(pairs)["tiny"]
    assert within(observed, DRAWS, 0.25)
    assert observed / DRAWS >= 0.25 - SIGMAS * math.sqrt(0.25 * 0.75 / DRAWS)


def test_the_floor_leaves_fair_probabilities_alone() -> None:
    weights = {"alpha": 1.0, "bravo": 1.5, "charlie": 2.0}
    assert pair_probabilities(weights, SamplingPolicy(min_share=0.5)) == pytest.approx(
        sequential_masses(weights)
    )


# -- active -----------------------------------------------------------------------------------------


def test_active_draws_uncertain_pairs_more() -> None:
    ratings = {"alpha": 1100.0, "bravo": 1090.0, "charlie": 900.0, "delta": 910.0}
    battles = {
        ("alpha", "bravo"): 40.0,  # close and rarely compared: the most to learn
        ("alpha", "charlie"): 2000.0,
        ("alpha", "delta"): 2000.0,
        ("bravo", "charlie"): 2000.0,
        ("bravo", "delta"): 2000.0,
        ("charlie", "delta"): 400.0,
    }
    votes = dict.fromkeys(ratings, 10_000)  # past the boost
    inputs = SamplingInputs("v1", votes=votes, ratings=ratings, pair_counts=battles)
    sampler = PairSampler(SamplingPolicy(policy="active", min_share=0.0), sampling_inputs=fixed(inputs))
    weights = dict.fromkeys(ratings, 1.0)
    uncertainty = pair_uncertainty_weights(ratings, battles)
    total = sum(uncertainty.values())
    expected = {pair: w / total for pair, w in uncertainty.items()}
    assert sampler.table(weights).as_dict() == pytest.approx(expected)
    pairs = draws(sampler, weights, seed=9)
    assert_pairs_match(pairs, expected)
    counts = pair_counts(pairs)
    assert counts[("alpha", "bravo")] > counts[("charlie", "delta")] > counts[("alpha", "charlie")]
    # the weighted policy over the same inputs spreads them evenly
    weighted = PairSampler(SamplingPolicy(min_share=0.0), sampling_inputs=fixed(inputs))
    assert_pairs_match(draws(weighted, weights, seed=10), dict.fromkeys(expected, 1 / 6))


def test_active_places_an_unrated_model_at_the_mean_rating() -> None:
    inputs = SamplingInputs(
        "v1",
        votes={"alpha": 9000, "bravo": 9000, "rookie": 5000},
        ratings={"alpha": 1050.0, "bravo": 950.0},
        pair_counts={("alpha", "bravo"): 5000.0, ("alpha", "rookie"): 10.0, ("bravo", "rookie"): 10.0},
    )
    sampler = PairSampler(SamplingPolicy(policy="active", min_share=0.0), sampling_inputs=fixed(inputs))
    probabilities = sampler.table(dict.fromkeys(["alpha", "bravo", "rookie"], 1.0)).as_dict()
    expected = pair_uncertainty_weights(
        {"alpha": 1050.0, "bravo": 950.0, "rookie": 1000.0}, inputs.pair_counts
    )
    total = sum(expected.values())
    assert probabilities == pytest.approx({pair: w / total for pair, w in expected.items()})
    assert probabilities[("alpha", "rookie")] > 10 * probabilities[("alpha", "bravo")]


# -- configuration ----------------------------------------------------------------------------------


def test_policy_values_are_checked() -> None:
    for bad in ({"policy": "greedy"}, {"boost": 0}, {"boost_until_votes": -1}, {"target_boost": -1}):
        with pytest.raises(ValueError):
            SamplingPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_share"):
        SamplingPolicy(min_share=1.5)
    with pytest.raises(ValueError, match="no pair"):
        draw_pair(PairSampler().table({"alone": 1.0}), random.Random(0))


def test_roster_battle_targets_must_name_other_roster_models() -> None:
    def roster(targets: list[str]) -> dict:
        return {
            "models": [
                {"name": "alpha", "backend": "scripted", "battle_targets": targets},
                {"name": "bravo", "backend": "scripted"},
            ]
        }

    assert parse_roster(roster(["bravo"])).get("alpha").battle_targets == ["bravo"]
    with pytest.raises(RosterError, match="battle target 'zulu' is not a model of this roster"):
        parse_roster(roster(["zulu"]))
    with pytest.raises(RosterError, match="lists itself"):
        parse_roster(roster(["alpha"]))


def test_settings_build_the_policy(monkeypatch, sessions) -> None:
    monkeypatch.setenv("ARENA_SAMPLING_POLICY", "active")
    monkeypatch.setenv("ARENA_SAMPLING_BOOST", "4")
    monkeypatch.setenv("ARENA_SAMPLING_BOOST_UNTIL_VOTES", "100")
    monkeypatch.setenv("ARENA_SAMPLING_TARGET_BOOST", "2.5")
    monkeypatch.setenv("ARENA_SAMPLING_MIN_SHARE", "0.25")
    roster = parse_roster(
        {
            "models": [
                {"name": "alpha", "backend": "scripted", "battle_targets": ["bravo"]},
                {"name": "bravo", "backend": "scripted"},
            ]
        }
    )
    sampler = build_sampler(ArenaSettings(), roster, SnapshotService(sessions))
    assert sampler.policy == SamplingPolicy("active", 4.0, 100, 2.5, 0.25)
    assert sampler.targets == {"alpha": ("bravo",)}
    assert sampler.sampling_inputs() is None  # no snapshot computed yet
    monkeypatch.setenv("ARENA_SAMPLING_MIN_SHARE", "2")
    with pytest.raises(ValueError):
        ArenaSettings()


# -- live inputs from a real snapshot, through the battle service -----------------------------------


def add_votes(sessions, ids: dict[str, int], a: str, b: str, n: int, start: int, now: datetime) -> None:
    with sessions.begin() as db:
        for i in range(start, start + n):
            battle_id = f"{a}-{b}-{i}"
            repo.create_battle(
                db, battle_id=battle_id, model_a_id=ids[a], model_b_id=ids[b], session_id=None, now=now
            )
            repo.set_battle_state(db, battle_id, "ready", now, None)
            repo.record_vote(
                db, battle_id=battle_id, winner="model_a" if i % 3 else "model_b", session_id=None, now=now
            )


def test_live_inputs_come_from_the_bt_snapshot(make_service, sessions) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    specs = [scripted("alpha"), scripted("bravo"), scripted("charlie"), scripted("rookie")]
    service = make_service(specs, seed=11)
    ids = service.model_ids
    add_votes(sessions, ids, "alpha", "bravo", 30, 0, now)
    add_votes(sessions, ids, "bravo", "charlie", 30, 0, now)
    add_votes(sessions, ids, "charlie", "alpha", 30, 0, now)
    add_votes(sessions, ids, "rookie", "alpha", 3, 0, now)
    snapshots = SnapshotService(sessions, min_votes=20)
    source = SnapshotInputs(lambda: snapshots.current("bt"))
    assert source() is None
    snapshots.refresh_once(force=True)

    inputs = source()
    assert inputs is not None and source() is inputs  # derived once per snapshot
    assert inputs.votes == {"alpha": 63, "bravo": 60, "charlie": 60, "rookie": 3}
    assert set(inputs.ratings) == {"alpha", "bravo", "charlie"}  # rookie has too few votes
    assert inputs.pair_counts == {
        ("alpha", "bravo"): 30.0,
        ("bravo", "charlie"): 30.0,
        ("alpha", "charlie"): 30.0,
        ("alpha", "rookie"): 3.0,
    }

    # The service draws with the policy: only rookie is below 50 votes, so only it is boosted ×5.
    policy = SamplingPolicy(boost=5.0, boost_until_votes=50, min_share=0.0)
    service.sampler = PairSampler(policy, sampling_inputs=source)
    pairs = [service.sample_pair() for _ in range(DRAWS)]
    assert all(a != b for a, b in pairs)
    expected = sequential_masses({"alpha": 1.0, "bravo": 1.0, "charlie": 1.0, "rookie": 5.0})
    assert_pairs_match(pairs, expected)

    # More votes for rookie and a new snapshot: the boost ends at the next draw.
    add_votes(sessions, ids, "rookie", "bravo", 60, 100, now)
    snapshots.refresh_once(force=True)
    fresh = source()
    assert fresh is not inputs and fresh is not None and fresh.votes["rookie"] == 63
    pairs = [service.sample_pair() for _ in range(DRAWS)]
    assert_pairs_match(pairs, dict.fromkeys(expected, 1 / 6))
