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

from analysis.active_sampling import design_pair_probabilities
from arena.app import build_sampler
from arena.sampling import (
    PairSampler,
    SamplingInputs,
    SamplingPolicy,
    SnapshotInputs,
    draw_pair,
    inputs_from_payload,
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


def active_sampler(inputs: SamplingInputs, **policy: object) -> PairSampler:
    return PairSampler(SamplingPolicy(policy="active", **policy), sampling_inputs=fixed(inputs))  # type: ignore[arg-type]


def test_active_draws_follow_the_design_and_separate_the_top_pair() -> None:
    """Narrow intervals everywhere, but the top two overlap (gap 10, half-widths 8 + 8): the design is
    in its separation stage and draws alpha–bravo most, within binomial bounds of its table."""
    ratings = {"alpha": 1100.0, "bravo": 1090.0, "charlie": 900.0, "delta": 700.0}
    battles = {
        ("alpha", "bravo"): 3000.0,
        ("alpha", "charlie"): 3000.0,
        ("alpha", "delta"): 3000.0,
        ("bravo", "charlie"): 3000.0,
        ("bravo", "delta"): 3000.0,
        ("charlie", "delta"): 3000.0,
    }
    half_widths = dict.fromkeys(ratings, 8.0)
    votes = dict.fromkeys(ratings, 10_000)  # past the boost
    inputs = SamplingInputs("v1", votes=votes, ratings=ratings, pair_counts=battles, half_widths=half_widths)
    sampler = active_sampler(inputs, top_k=1, min_share=0.0)
    weights = dict.fromkeys(ratings, 1.0)
    design = design_pair_probabilities(ratings, battles, half_widths=half_widths, top_k=1, explore=0.1)
    assert design.stage == "separation"
    assert sampler.table(weights).as_dict() == pytest.approx(design.probabilities)
    pairs = draws(sampler, weights, seed=9)
    assert_pairs_match(pairs, design.probabilities)
    counts = pair_counts(pairs)
    assert counts[("alpha", "bravo")] > DRAWS / 2
    assert counts[("alpha", "bravo")] > 3 * max(n for pair, n in counts.items() if pair != ("alpha", "bravo"))
    # every pair keeps the explore share: 10 % spread over 6 pairs
    assert all(q >= 0.1 / 6 - 1e-12 for q in design.probabilities.values())
    # the weighted policy over the same inputs spreads them evenly
    weighted = PairSampler(SamplingPolicy(min_share=0.0), sampling_inputs=fixed(inputs))
    assert_pairs_match(draws(weighted, weights, seed=10), dict.fromkeys(design.probabilities, 1 / 6))


def test_active_first_narrows_the_widest_intervals() -> None:
    """A rookie without a rating (placed at the mean) and with 20 battles has by far the widest
    interval: while the median interval is wider than the target, its pairs get most draws."""
    inputs = SamplingInputs(
        "v1",
        votes={"alpha": 9000, "bravo": 9000, "charlie": 9000, "rookie": 20},
        ratings={"alpha": 1050.0, "bravo": 950.0, "charlie": 1000.0},
        pair_counts={
            ("alpha", "bravo"): 4000.0,
            ("alpha", "charlie"): 4000.0,
            ("bravo", "charlie"): 4000.0,
            ("alpha", "rookie"): 10.0,
            ("bravo", "rookie"): 10.0,
        },
        half_widths={"alpha": 20.0, "bravo": 20.0, "charlie": 20.0},
    )
    sampler = active_sampler(inputs, min_share=0.0, boost_until_votes=0)  # the design alone, no boost
    weights = dict.fromkeys(["alpha", "bravo", "charlie", "rookie"], 1.0)
    table = sampler.table(weights).as_dict()
    expected = design_pair_probabilities(
        {**inputs.ratings, "rookie": 1000.0}, inputs.pair_counts, half_widths=inputs.half_widths
    )
    assert expected.stage == "intervals" and expected.half_widths["rookie"] > 100.0
    assert table == pytest.approx(expected.probabilities)
    pairs = draws(sampler, weights, seed=12)
    assert_pairs_match(pairs, table)
    assert within(model_counts(pairs)["rookie"], DRAWS, model_shares(table)["rookie"])
    assert model_counts(pairs)["rookie"] > 0.9 * DRAWS


def test_active_keeps_the_fairness_floor_and_the_weights() -> None:
    ratings = {f"m{i}": 1200.0 - 5.0 * i if i < 2 else 1000.0 - 40.0 * i for i in range(6)}
    names = sorted(ratings)
    battles = {(a, b): 5000.0 for i, a in enumerate(names) for b in names[i + 1 :]}
    inputs = SamplingInputs(
        "v1",
        votes=dict.fromkeys(ratings, 50_000),
        ratings=ratings,
        pair_counts=battles,
        half_widths=dict.fromkeys(ratings, 6.0),
    )
    weights = dict.fromkeys(ratings, 1.0)

    def shares(**policy: object) -> dict[str, float]:
        found = model_shares(active_sampler(inputs, top_k=1, explore=0.0, **policy).table(weights).as_dict())
        return {name: found.get(name, 0.0) for name in names}

    assert (
        min(shares(min_share=0.0).values()) < 0.5 * 2 / 6
    )  # the design alone starves the models far from the top
    fair = shares(min_share=0.5)
    assert min(fair.values()) == pytest.approx(0.5 * 2 / 6)  # lifted exactly to the floor
    pairs = draws(active_sampler(inputs, top_k=1, min_share=0.5, explore=0.0), weights, seed=13)
    for name, share in fair.items():
        assert within(model_counts(pairs)[name], DRAWS, share)
    # an operator's weight multiplies the designed mass of the model's pairs (then all is renormalised)
    plain = active_sampler(inputs, top_k=1, min_share=0.0, explore=0.1).table(weights).as_dict()
    heavier = (
        active_sampler(inputs, top_k=1, min_share=0.0, explore=0.1).table({**weights, "m0": 4.0}).as_dict()
    )
    ratio = {pair: heavier[pair] / q for pair, q in plain.items()}
    assert {round(r / ratio[("m2", "m3")], 9) for pair, r in ratio.items() if "m0" in pair} == {4.0}
    assert {round(r / ratio[("m2", "m3")], 9) for pair, r in ratio.items() if "m0" not in pair} == {1.0}


def test_snapshot_intervals_reach_the_design() -> None:
    payload = {
        "rows": [
            {"model": "alpha", "rating": 1010.0, "ci_lower": 1000.0, "ci_upper": 1024.0, "num_battles": 50},
            {"model": "bravo", "rating": 990.0, "ci_lower": None, "ci_upper": None, "num_battles": 50},
        ],
        "pair_counts": {"models": ["alpha", "bravo"], "battles": [[0, 50], [50, 0]]},
    }
    inputs = inputs_from_payload("v", payload)
    assert inputs.half_widths == {"alpha": 12.0}  # bravo's interval is unknown: the design derives one
    assert inputs.pair_counts == {("alpha", "bravo"): 50.0}


# -- configuration ----------------------------------------------------------------------------------


def test_policy_values_are_checked() -> None:
    for bad in (
        {"policy": "greedy"},
        {"boost": 0},
        {"boost_until_votes": -1},
        {"target_boost": -1},
        {"interval_target": 0},
        {"top_k": -1},
        {"explore": 1.5},
    ):
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
    monkeypatch.setenv("ARENA_SAMPLING_INTERVAL_TARGET", "40")
    monkeypatch.setenv("ARENA_SAMPLING_TOP_K", "3")
    monkeypatch.setenv("ARENA_SAMPLING_EXPLORE", "0.2")
    roster = parse_roster(
        {
            "models": [
                {"name": "alpha", "backend": "scripted", "battle_targets": ["bravo"]},
                {"name": "bravo", "backend": "scripted"},
            ]
        }
    )
    sampler = build_sampler(ArenaSettings(), roster, SnapshotService(sessions))
    assert sampler.policy == SamplingPolicy("active", 4.0, 100, 2.5, 0.25, 40.0, 3, 0.2)
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
