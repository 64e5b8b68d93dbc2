"""Judge–human agreement (MT-Bench definitions) on a hand-made set of votes, figures worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.agreement import (
    LABELS,
    agreement,
    cohen_kappa,
    combine_orders,
    human_human_agreement,
    match_votes,
    position_consistency,
)

HUMAN_COLUMNS = ["question_id", "model_a", "model_b", "winner", "turn", "judge", "category"]


@pytest.fixture()
def human() -> pd.DataFrame:
    """Nine human votes. Keys are (question_id, unordered pair, turn).

    K1 = (q1, x|y, 1): three people, one sees the models swapped (y, x), one says tie.
    K2 = (q2, x|y, 1): a "tie (bothbad)" and a model_b vote.
    K3 = (q3, x|z, 1): one person, models swapped (z, x).
    K4 = (q3, x|z, 2): two people on turn 2 of the same question (must not mix with turn 1).
    K5 = (q4, y|z, 1): no judge verdict (unmatched).
    """
    return pd.DataFrame(
        [
            ("q1", "x", "y", "model_a", 1, "h1", "math"),  # x wins
            ("q1", "y", "x", "model_b", 1, "h2", "math"),  # x wins, seen as (y, x)
            ("q1", "x", "y", "tie", 1, "h3", "math"),
            ("q2", "x", "y", "tie (bothbad)", 1, "h4", "ocr"),
            ("q2", "x", "y", "model_b", 1, "h5", "ocr"),  # y wins
            ("q3", "z", "x", "model_a", 1, "h6", "math"),  # z wins, seen as (z, x)
            ("q3", "x", "z", "model_b", 2, "h7", "math"),  # z wins (turn 2)
            ("q3", "x", "z", "model_b", 2, "h8", "math"),  # z wins (turn 2)
            ("q4", "y", "z", "model_a", 1, "h1", "ocr"),  # no verdict on this key
        ],
        columns=HUMAN_COLUMNS,
    )


@pytest.fixture()
def judge() -> pd.DataFrame:
    """Six verdicts of one judge: one per key, one without a human vote, one without a winner."""
    return pd.DataFrame(
        [
            ("q1", "y", "x", "model_b", 1),  # swapped order: x wins
            ("q2", "x", "y", "tie", 1),
            ("q3", "x", "z", "model_a", 1),  # x wins
            ("q3", "x", "z", "model_b", 2),  # z wins
            ("q5", "x", "y", "model_a", 1),  # no human vote on q5
            ("q4", "z", "y", None, 1),  # unparseable verdict: left out, reported
        ],
        columns=["question_id", "model_a", "model_b", "winner", "turn"],
    ).assign(judge="gpt-judge")


# Comparisons (each judge verdict x every human vote on its key), in the person's model order:
#   h1 (x,y): human A,   judge A  (x wins)          agree
#   h2 (y,x): human B,   judge B  (x wins, flipped) agree
#   h3 (x,y): human tie, judge A                    disagree
#   h4 (x,y): human tie, judge tie (bothbad = tie)  agree
#   h5 (x,y): human B,   judge tie                  disagree
#   h6 (z,x): human A,   judge B  (x wins, flipped) disagree
#   h7 (x,z): human B,   judge B  (turn 2)          agree
#   h8 (x,z): human B,   judge B  (turn 2)          agree
EXPECTED_PAIRS = [
    ("h1", "A", "A"),
    ("h2", "B", "B"),
    ("h3", "tie", "A"),
    ("h4", "tie", "tie"),
    ("h5", "B", "tie"),
    ("h6", "A", "B"),
    ("h7", "B", "B"),
    ("h8", "B", "B"),
]


def test_match_votes_flips_swapped_order_and_keeps_turns_apart(
    human: pd.DataFrame, judge: pd.DataFrame
) -> None:
    m = match_votes(human, judge).sort_values("voter")
    assert list(zip(m["voter"], m["human"], m["judge"], strict=True)) == EXPECTED_PAIRS
    # outcomes are reported in the person's own model order
    h2 = m.set_index("voter").loc["h2"]
    assert (h2["model_a"], h2["model_b"]) == ("y", "x")


def test_agreement_figures_by_hand(human: pd.DataFrame, judge: pd.DataFrame) -> None:
    res = agreement(human, judge, bootstrap=0)
    # with ties: 5 of 8 comparisons agree (h1, h2, h4, h7, h8)
    assert res.n == 8
    assert res.agreement_with_ties == pytest.approx(5 / 8)
    # without ties: drop h3 (human tie), h4 (both tie), h5 (judge tie) -> h1, h2, h6, h7, h8; 4 of 5 agree
    assert res.n_without_ties == 5
    assert res.agreement_without_ties == pytest.approx(4 / 5)
    # confusion, rows human / columns judge (A, B, tie):
    #   A:   [1 (h1), 1 (h6), 0]            row total 2
    #   B:   [0, 3 (h2, h7, h8), 1 (h5)]    row total 4
    #   tie: [1 (h3), 0, 1 (h4)]            row total 2
    #   column totals: A 2, B 4, tie 2
    expected = [[1, 1, 0], [0, 3, 1], [1, 0, 1]]
    assert res.confusion.to_numpy().tolist() == expected
    assert list(res.confusion.index) == list(LABELS) == list(res.confusion.columns)
    # kappa: p_o = 5/8 = 0.625; p_e = (2*2 + 4*4 + 2*2) / 8^2 = 24/64 = 0.375
    #        kappa = (0.625 - 0.375) / (1 - 0.375) = 0.25 / 0.625 = 0.4
    assert res.cohen_kappa == pytest.approx(0.4)
    assert cohen_kappa(np.array(expected)) == pytest.approx(0.4)
    # K1..K4 matched; q5 has no human vote; the q4 verdict has no winner
    assert res.n_keys == 4
    assert res.n_judge_unmatched == 1
    assert res.n_judge_missing == 1
    assert res.intervals == {}


def test_cohen_kappa_textbook_value() -> None:
    # 2x2 example: 50 items, p_o = (20 + 15) / 50 = 0.7; rows 25/25, columns 30/20:
    # p_e = (25*30 + 25*20) / 50^2 = 1250 / 2500 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    assert cohen_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    # perfect agreement on a single outcome: p_e = 1, kappa undefined
    assert math.isnan(cohen_kappa([[4, 0], [0, 0]]))


def test_agreement_by_category_by_hand(human: pd.DataFrame, judge: pd.DataFrame) -> None:
    res = agreement(human, judge, bootstrap=0, by_category=True)
    assert res.by_category is not None and set(res.by_category) == {"math", "ocr"}
    math_ = res.by_category["math"]
    # math: h1, h2, h3, h6, h7, h8 -> 4 of 6 agree; without ties (drop h3) 4 of 5
    assert (math_.n, math_.n_without_ties) == (6, 5)
    assert math_.agreement_with_ties == pytest.approx(4 / 6)
    assert math_.agreement_without_ties == pytest.approx(4 / 5)
    # kappa: rows A 2 / B 3 / tie 1, columns A 2 / B 4 / tie 0; p_o = 4/6,
    # p_e = (2*2 + 3*4 + 1*0) / 36 = 16/36; kappa = (24/36 - 16/36) / (20/36) = 8/20 = 0.4
    assert math_.cohen_kappa == pytest.approx(0.4)
    ocr = res.by_category["ocr"]
    # ocr: h4 agrees (tie/tie), h5 does not; no comparison without a tie
    assert (ocr.n, ocr.agreement_with_ties, ocr.n_without_ties) == (2, 0.5, 0)
    assert math.isnan(ocr.agreement_without_ties)
    assert ocr.n_judge_unmatched is None
    d = res.to_dict()
    assert d["by_category"]["ocr"]["agreement_without_ties"] is None


def test_bootstrap_interval_contains_estimate_and_is_reproducible(
    human: pd.DataFrame, judge: pd.DataFrame
) -> None:
    a = agreement(human, judge, bootstrap=500, rng=np.random.default_rng(7))
    b = agreement(human, judge, bootstrap=500, rng=np.random.default_rng(7))
    c = agreement(human, judge, bootstrap=500, rng=np.random.default_rng(8))
    assert a.intervals == b.intervals
    assert a.intervals != c.intervals
    assert set(a.intervals) == {"agreement_with_ties", "agreement_without_ties", "cohen_kappa"}
    for name, (lo, hi) in a.intervals.items():
        point = getattr(a, name)
        assert lo <= point <= hi, (name, lo, point, hi)
        assert lo < hi
    assert a.bootstrap == 500


def test_to_dict_is_json_ready(human: pd.DataFrame, judge: pd.DataFrame) -> None:
    d = agreement(human, judge, bootstrap=50, rng=np.random.default_rng(0), by_category=True).to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    for key in ("n", "agreement_with_ties", "n_without_ties", "agreement_without_ties", "cohen_kappa"):
        assert key in back
    assert back["n"] == 8 and back["cohen_kappa"] == pytest.approx(0.4)
    assert back["confusion"]["B"]["B"] == 3
    assert len(back["ci"]["cohen_kappa"]) == 2


def test_categorical_and_numeric_ids_match_plain_strings(human: pd.DataFrame, judge: pd.DataFrame) -> None:
    """Frames as analysis.io loads them (categorical models/winner) give the same figures."""
    h = human.astype({"model_a": "category", "model_b": "category", "winner": "category"})
    j = judge.copy()
    # numeric question ids on one side, text on the other
    h["question_id"] = h["question_id"].str[1:].astype(int)
    j["question_id"] = j["question_id"].str[1:]
    res = agreement(h, j, bootstrap=0)
    assert (res.n, res.agreement_with_ties, res.cohen_kappa) == (8, 0.625, pytest.approx(0.4))


def test_missing_turn_column_defaults_to_one() -> None:
    h = pd.DataFrame(
        {"question_id": [1, 1], "model_a": ["a", "b"], "model_b": ["b", "a"], "winner": ["model_a", "tie"]}
    )
    j = pd.DataFrame(
        {"question_id": [1], "model_a": ["b"], "model_b": ["a"], "winner": ["model_b"], "turn": [1]}
    )
    res = agreement(h, j, bootstrap=0)
    # judge says a wins; person 1 (a, b) says A -> agree; person 2 says tie -> disagree
    assert (res.n, res.agreement_with_ties, res.n_without_ties, res.agreement_without_ties) == (
        2,
        0.5,
        1,
        1.0,
    )


def test_errors_are_clear(human: pd.DataFrame, judge: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="human votes are missing required column.*winner"):
        agreement(human.drop(columns="winner"), judge, bootstrap=0)
    with pytest.raises(ValueError, match="judge verdicts are missing required column.*question_id"):
        agreement(human, judge.drop(columns="question_id"), bootstrap=0)
    with pytest.raises(ValueError, match="no judge verdict matches a human vote"):
        agreement(human, judge.assign(question_id=judge["question_id"] + "-other"), bootstrap=0)
    with pytest.raises(ValueError, match="unknown winner value"):
        agreement(human.assign(winner="A"), judge, bootstrap=0)
    with pytest.raises(ValueError, match="several verdicts on 1 key"):
        agreement(human, pd.concat([judge, judge.iloc[[0]]]), bootstrap=0)
    with pytest.raises(ValueError, match="2 judges"):
        agreement(human, pd.concat([judge, judge.assign(judge="other")]), bootstrap=0)
    with pytest.raises(ValueError, match="empty"):
        agreement(human.iloc[:0], judge, bootstrap=0)
    with pytest.raises(ValueError, match="bootstrap rounds"):
        agreement(human, judge, bootstrap=-1)


def test_judge_name_selects_one_judge(human: pd.DataFrame, judge: pd.DataFrame) -> None:
    other = judge.assign(judge="other", winner="tie")
    both = pd.concat([judge, other], ignore_index=True)
    res = agreement(human, both, bootstrap=0, judge_name="gpt-judge")
    assert res.agreement_with_ties == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="no verdicts by judge 'nobody'"):
        agreement(human, both, bootstrap=0, judge_name="nobody")


def test_human_human_agreement_by_hand(human: pd.DataFrame) -> None:
    res = human_human_agreement(human)
    # keys with several votes, in sorted model order (x < y < z):
    #   K1: h1 A, h2 A (x wins, seen swapped), h3 tie -> pairs (h1,h2) agree, (h1,h3) no, (h2,h3) no
    #   K2: h4 tie, h5 B                              -> (h4,h5) no
    #   K4: h7 B, h8 B                                -> (h7,h8) agree
    # with ties: 2 of 5 pairs agree; without ties: only (h1,h2) and (h7,h8) remain, both agree
    assert res.n_keys == 3
    assert (res.n_pairs, res.agreement_with_ties) == (5, pytest.approx(0.4))
    assert (res.n_pairs_without_ties, res.agreement_without_ties) == (2, 1.0)
    assert json.loads(json.dumps(res.to_dict()))["n_pairs"] == 5


def test_human_human_skips_pairs_of_one_voter() -> None:
    votes = pd.DataFrame(
        {
            "question_id": ["q"] * 3,
            "model_a": ["a", "a", "b"],
            "model_b": ["b", "b", "a"],
            "winner": ["model_a", "model_a", "model_a"],  # h1 twice for a, h2 for b
            "judge": ["h1", "h1", "h2"],
        }
    )
    res = human_human_agreement(votes)
    # pairs of different people: (h1#1, h2), (h1#2, h2) -> both disagree; (h1#1, h1#2) is skipped
    assert (res.n_pairs, res.agreement_with_ties) == (2, 0.0)
    # without a voter column all three pairs count: only (h1#1, h1#2) agrees
    res_all = human_human_agreement(votes.drop(columns="judge"))
    assert (res_all.n_pairs, res_all.agreement_with_ties) == (3, pytest.approx(1 / 3))


@pytest.fixture()
def per_order() -> pd.DataFrame:
    """Verdicts on both answer orders; "A" = the answer the judge saw first in that order."""
    return pd.DataFrame(
        [
            ("b1", "AB", "A"),
            ("b1", "BA", "B"),  # B in BA = model_a -> consistent, model_a
            ("b2", "AB", "A"),
            ("b2", "BA", "A"),  # first answer twice -> inconsistent, biased to first
            ("b3", "AB", "tie"),
            ("b3", "BA", "tie"),  # consistent tie
            ("b4", "AB", "B"),
            ("b4", "BA", None),  # unparseable -> no verdict
            ("b5", "AB", "B"),
            ("b5", "BA", "B"),  # second answer twice -> inconsistent, biased to second
            ("b6", "AB", "tie"),
            ("b6", "BA", "B"),  # tie vs model_a -> inconsistent, no position bias
        ],
        columns=["battle_id", "answer_order", "verdict"],
    )


def test_combine_orders(per_order: pd.DataFrame) -> None:
    out = combine_orders(per_order).set_index("battle_id")
    assert out["status"].to_dict() == {
        "b1": "consistent",
        "b2": "inconsistent",
        "b3": "consistent",
        "b4": "missing",
        "b5": "inconsistent",
        "b6": "inconsistent",
    }
    assert out["winner"].to_dict() == {
        "b1": "model_a",
        "b2": "tie",
        "b3": "tie",
        "b4": None,
        "b5": "tie",
        "b6": "tie",
    }
    assert out["verdict_ba"].to_dict() == {
        "b1": "A",
        "b2": "B",
        "b3": "tie",
        "b4": None,
        "b5": "A",
        "b6": "A",
    }
    assert out["bias"].to_dict() == {
        "b1": None,
        "b2": "first",
        "b3": None,
        "b4": None,
        "b5": "second",
        "b6": None,
    }


def test_position_consistency_by_hand(per_order: pd.DataFrame) -> None:
    res = position_consistency(per_order)
    # complete battles: b1, b2, b3, b5, b6 (b4 has no BA verdict); consistent: b1, b3 -> 2/5
    assert (res.n_battles, res.n_complete, res.n_missing) == (6, 5, 1)
    assert (res.n_consistent, res.n_inconsistent) == (2, 3)
    assert res.consistency == pytest.approx(0.4)
    assert (res.biased_first, res.biased_second) == (pytest.approx(0.2), pytest.approx(0.2))
    assert json.loads(json.dumps(res.to_dict()))["n_missing"] == 1


def test_combined_orders_feed_agreement(human: pd.DataFrame) -> None:
    """Per-order verdicts keyed by question_id + model pair, combined, then compared with people."""
    rows = [
        ("q1", "x", "y", 1, "AB", "A"),
        ("q1", "x", "y", 1, "BA", "B"),  # x both times -> model_a (x)
        ("q2", "x", "y", 1, "AB", "A"),
        ("q2", "x", "y", 1, "BA", "A"),  # inconsistent -> tie
        ("q3", "x", "z", 1, "AB", "A"),
        ("q3", "x", "z", 1, "BA", None),  # missing -> no verdict
    ]
    verdicts = pd.DataFrame(
        rows, columns=["question_id", "model_a", "model_b", "turn", "answer_order", "verdict"]
    )
    combined = combine_orders(verdicts)
    assert combined["winner"].tolist() == ["model_a", "tie", None]
    res = agreement(human, combined, bootstrap=0)
    # K1: judge x wins vs h1 A (agree), h2 B (agree), h3 tie (no); K2: judge tie vs h4 tie (agree), h5 B (no)
    assert (res.n, res.agreement_with_ties, res.n_judge_missing) == (5, pytest.approx(3 / 5), 1)


def test_position_consistency_errors(per_order: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="answer_order must be"):
        position_consistency(per_order.assign(answer_order="XY"))
    with pytest.raises(ValueError, match="unknown verdict value"):
        position_consistency(per_order.assign(verdict="model_a"))
    with pytest.raises(ValueError, match="repeat a"):
        position_consistency(pd.concat([per_order, per_order.iloc[[0]]]))
    with pytest.raises(ValueError, match="battle_id column or question_id"):
        position_consistency(per_order.drop(columns="battle_id"))
    with pytest.raises(ValueError, match="missing required column: verdict"):
        position_consistency(per_order.drop(columns="verdict"))
