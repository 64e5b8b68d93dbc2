"""Judge ensembles: the combination rules with known answers, whole frames, and agreement of an ensemble."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.agreement import agreement
from analysis.ensemble import (
    AGREE,
    BY_MAJORITY,
    MISSING,
    SPLIT,
    combine_judges,
    default_quorum,
    ensemble_verdict,
    side_by_side,
    status_counts,
)

A, B, T = "model_a", "model_b", "tie"


@pytest.mark.parametrize(
    ("verdicts", "winner", "status"),
    [
        ([A, A, A], A, AGREE),
        ([A, A, B], A, BY_MAJORITY),
        ([B, T, B], B, BY_MAJORITY),
        ([T, T, A], T, BY_MAJORITY),  # a judge's tie is a vote like any other
        ([A, B, T], T, SPLIT),  # no strict majority: the panel says tie
        ([A, A, None], A, AGREE),  # a failed judge abstains; the two others agree
        ([A, B, None], T, SPLIT),  # two present, one each: no strict majority
        ([A, None, None], None, MISSING),  # below the default quorum of 2 of 3
        ([None, None, None], None, MISSING),
        ([B, "tie (bothbad)", T], T, BY_MAJORITY),  # both tie kinds are one outcome
        ([A, A, B, B], T, SPLIT),  # even split of four
        ([A, A, A, B], A, BY_MAJORITY),
        ([A, A, None, None], None, MISSING),  # quorum 3 of 4
        ([A, B], T, SPLIT),
        ([A, None], None, MISSING),  # quorum 2 of 2
        ([A, float("nan"), A], A, AGREE),  # NaN (a missing frame cell) is no verdict
    ],
)
def test_majority_rule(verdicts: list, winner: str | None, status: str) -> None:
    result = ensemble_verdict(verdicts, "majority")
    assert (result.winner, result.status) == (winner, status)


@pytest.mark.parametrize(
    ("verdicts", "winner", "status"),
    [
        ([A, A, A], A, AGREE),
        ([T, T, T], T, AGREE),
        ([A, A, B], T, SPLIT),  # one dissent breaks unanimity: a tie
        ([A, B, T], T, SPLIT),
        ([A, A, None], None, MISSING),  # unanimity without one judge is no unanimity (default quorum: all)
        ([None, None, None], None, MISSING),
    ],
)
def test_unanimous_rule(verdicts: list, winner: str | None, status: str) -> None:
    result = ensemble_verdict(verdicts, "unanimous")
    assert (result.winner, result.status) == (winner, status)


def test_quorum_can_be_lowered_or_raised() -> None:
    assert ensemble_verdict([A, None, None], "majority", quorum=1).winner == A
    assert ensemble_verdict([A, A, None], "unanimous", quorum=2).status == AGREE
    assert ensemble_verdict([A, A, None], "majority", quorum=3).status == MISSING
    assert [default_quorum("majority", k) for k in (2, 3, 4, 5)] == [2, 2, 3, 3]
    assert default_quorum("unanimous", 4) == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ensemble_verdict([A, "C"], "majority"), "unknown judge winner"),
        (lambda: ensemble_verdict([A, B], "majority", quorum=3), "quorum"),
        (lambda: ensemble_verdict([A, B], "majority", quorum=0), "quorum"),
        (lambda: ensemble_verdict([A, B], "mean"), "ensemble rule"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_an_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def frame(rows: list[tuple[str, str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["question_id", "model_a", "model_b", "winner"])


def test_combine_judges_orients_battles_and_counts_missing_judges() -> None:
    finals = {
        "j1": frame([("q1", "x", "y", A), ("q2", "x", "z", B), ("q3", "y", "z", T)]),
        # the same battle q1 with its models the other way round: model_b (= x) won
        "j2": frame([("q1", "y", "x", B), ("q2", "z", "x", None), ("q3", "z", "y", B)]),
        "j3": frame([("q1", "x", "y", B), ("q3", "y", "z", A)]),  # never judged q2
    }
    out = combine_judges(finals, "majority")
    assert list(out["question_id"]) == ["q1", "q2", "q3"]
    assert list(out["model_a"]) == ["x", "x", "y"] and list(out["model_b"]) == ["y", "z", "z"]
    # q1: x, x, y -> x by majority; q2: only j1 has a verdict -> below quorum; q3: tie, y (flipped), y
    assert list(out["winner"]) == [A, None, A]
    assert list(out["status"]) == [BY_MAJORITY, MISSING, BY_MAJORITY]
    assert list(out["n_verdicts"]) == [3, 1, 3]
    assert list(out["verdict:j2"]) == [A, None, A]  # oriented to the sorted model pair
    assert set(out["judge"]) == {"majority(j1,j2,j3)"}
    assert status_counts(out) == {"agree": 0, "majority": 2, "split": 0, "missing": 1}
    unanimous = combine_judges(finals, "unanimous", quorum=2, name="panel")
    assert list(unanimous["winner"]) == [T, None, T] and set(unanimous["judge"]) == {"panel"}


def test_combine_judges_rejects_repeated_verdicts_and_single_judges() -> None:
    with pytest.raises(ValueError, match="at least two judges"):
        combine_judges({"j1": frame([("q1", "x", "y", A)])}, "majority")
    twice = frame([("q1", "x", "y", A), ("q1", "y", "x", A)])
    with pytest.raises(ValueError, match="combine its answer orders first"):
        combine_judges({"j1": twice, "j2": frame([("q1", "x", "y", A)])}, "majority")


def test_a_majority_corrects_judges_that_err_on_different_battles() -> None:
    """Tiny LVLM-eHub's point: judges wrong on different battles, outvoted by the others each time."""
    human = frame([(f"q{i}", "x", "y", A) for i in range(6)])
    wrong = {"j1": {0, 1}, "j2": {2, 3}, "j3": {4, 5}}
    finals = {
        name: frame([(f"q{i}", "x", "y", B if i in bad else A) for i in range(6)])
        for name, bad in wrong.items()
    }
    rng = np.random.default_rng(0)
    singles = {name: agreement(human, f, bootstrap=0, rng=rng) for name, f in finals.items()}
    assert all(r.agreement_with_ties == pytest.approx(4 / 6) for r in singles.values())
    majority = agreement(human, combine_judges(finals, "majority"), bootstrap=200, rng=rng)
    assert majority.n == 6 and majority.agreement_with_ties == 1.0
    unanimous = combine_judges(finals, "unanimous")
    assert set(unanimous["winner"]) == {T}  # every battle has one dissenting judge
    assert agreement(human, unanimous, bootstrap=0).agreement_with_ties == 0.0

    table = side_by_side({**{n: r.to_dict() for n, r in singles.items()}, "majority": majority.to_dict()})
    assert list(table["judge"]) == ["j1", "j2", "j3", "majority"]
    assert list(table["agreement_with_ties"]) == pytest.approx([4 / 6] * 3 + [1.0])
    assert table["agreement_with_ties_lo"].iloc[:3].isna().all()  # no bootstrap for the singles
    assert table.loc[3, "agreement_with_ties_lo"] == table.loc[3, "agreement_with_ties_hi"] == 1.0
