"""``python -m analysis agreement`` and ``compare``: from files, and from one arena database after a judge run."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from analysis.agreement import agreement
from analysis.cli import main
from analysis.compare import compare
from tests.analysis.test_judge import LongerAnswerJudge, play_battles, runner_for
from tests.helpers import latest_analysis_result

HUMAN = [
    {"question_id": 1, "model_a": "x", "model_b": "y", "winner": "model_a", "judge": "h1", "turn": 1},
    {"question_id": 1, "model_a": "x", "model_b": "y", "winner": "model_a", "judge": "h2", "turn": 1},
    {"question_id": 2, "model_a": "y", "model_b": "x", "winner": "tie", "judge": "h1", "turn": 1},
    {"question_id": 3, "model_a": "x", "model_b": "z", "winner": "model_b", "judge": "h3", "turn": 1},
]
JUDGE = [
    {"question_id": 1, "model_a": "y", "model_b": "x", "winner": "model_b", "judge": "gpt", "turn": 1},
    {"question_id": 2, "model_a": "x", "model_b": "y", "winner": "model_a", "judge": "gpt", "turn": 1},
    {"question_id": 3, "model_a": "x", "model_b": "z", "winner": "model_b", "judge": "gpt", "turn": 1},
]


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_agreement_from_files(tmp_path: Path) -> None:
    human, judge = write_jsonl(tmp_path / "h.jsonl", HUMAN), write_jsonl(tmp_path / "j.jsonl", JUDGE)
    code, out = cli(
        "agreement",
        "--human",
        str(human),
        "--judge-file",
        str(judge),
        "--format",
        "json",
        "--bootstrap",
        "50",
    )
    assert code == 0
    figures = json.loads(out)
    # Four comparisons: q1 twice (judge says x, both people say x: agree), q2 (person tie, judge y... x
    # when flipped to the person's order: disagree), q3 (agree). With ties 3/4; without ties 3/3.
    assert figures["n"] == 4 and figures["agreement_with_ties"] == pytest.approx(0.75)
    assert figures["n_without_ties"] == 3 and figures["agreement_without_ties"] == pytest.approx(1.0)
    expected = agreement(pd.DataFrame(HUMAN), pd.DataFrame(JUDGE), bootstrap=0).to_dict()
    assert figures["cohen_kappa"] == pytest.approx(expected["cohen_kappa"])
    assert figures["human_human"]["n_pairs"] == 1  # h1 and h2 on question 1
    code, table = cli("agreement", "--human", str(human), "--judge-file", str(judge), "--bootstrap", "0")
    assert code == 0 and "agreement_with_ties" in table and "0.7500" in table


def test_compare_files_match_the_library(tmp_path: Path) -> None:
    ref = pd.DataFrame(
        {
            "model": list("abcd"),
            "score": [90, 70, 50, 30],
            "lower": [85, 65, 45, 25],
            "upper": [95, 75, 55, 35],
        }
    )
    cand = pd.DataFrame(
        {
            "model": ["A", "B", "C", "D"],
            "score": [80, 75, 40, 35],
            "lower": [70, 60, 30, 30],
            "upper": [90, 85, 50, 40],
        }
    )
    ref.to_json(tmp_path / "ref.jsonl", orient="records", lines=True)
    cand.to_json(tmp_path / "cand.jsonl", orient="records", lines=True)
    (tmp_path / "map.json").write_text(json.dumps({m: m.lower() for m in "ABCD"}))
    code, out = cli(
        "compare",
        str(tmp_path / "ref.jsonl"),
        str(tmp_path / "cand.jsonl"),
        "--map-candidate",
        str(tmp_path / "map.json"),
        "--format",
        "json",
    )
    assert code == 0
    figures = json.loads(out)
    assert figures == json.loads(json.dumps(compare(ref, cand, candidate_map={m: m.lower() for m in "ABCD"})))
    assert figures["n_models"] == 4 and figures["spearman"] == pytest.approx(1.0)


def test_agreement_and_compare_from_the_database_after_a_judge_run(
    sessions, db_url: str, tmp_path: Path
) -> None:
    play_battles(sessions, tmp_path, [f"Question {i}?" for i in range(6)])  # votes on battles 0, 2, 4
    runner = runner_for(sessions, LongerAnswerJudge(), concurrency=4)
    asyncio.run(runner.run(runner.pending()))
    code, out = cli(
        "agreement", "--db", db_url, "--judge", "length-judge", "--format", "json", "--bootstrap", "20"
    )
    assert code == 0
    figures = json.loads(out)
    # People voted model_a on 3 battles; the judge always prefers bravo's longer answer, consistently.
    assert figures["judge"] == "length-judge" and figures["n"] == 3
    assert figures["position_consistency"]["n_consistent"] == 6
    code, out = cli(
        "compare", "--db", db_url, "--judge", "length-judge", "--format", "json", "--bootstrap", "20"
    )
    assert code == 0 and json.loads(out)["n_models"] == 2
    # Both figure sets are kept in the database for the admin page.
    with sessions() as db:
        stored = latest_analysis_result(db, kind="judge_agreement", subject="length-judge")
        boards = latest_analysis_result(db, kind="judge_leaderboards", subject="length-judge")
    assert stored is not None and stored.result["n"] == 3 and stored.params["bootstrap"] == 20
    assert boards is not None and {r["model"] for r in boards.result["judge"]} == {"alpha", "bravo"}
    assert {r["model"] for r in boards.result["people"]} == {"alpha", "bravo"}
    assert boards.result["judge"][0]["model"] == "bravo"  # the judge always prefers bravo's longer answer


def test_wrong_combinations_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agreement", "--human", "h.jsonl"]) == 2
    assert "--human PATH --judge-file PATH" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope.jsonl"), str(tmp_path / "nope2.jsonl")]) == 2
    assert "leaderboard file not found" in capsys.readouterr().err
    assert main(["compare"]) == 2
    assert "REFERENCE and CANDIDATE" in capsys.readouterr().err


def test_style_controlled_ratings_from_the_database(sessions, db_url: str, tmp_path: Path) -> None:
    play_battles(sessions, tmp_path, [f"Question {i}?" for i in range(8)])  # 4 votes
    code, out = cli("ratings", "--db", db_url, "--style-control", "--bootstrap", "10", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert {r["model"] for r in rows} == {"alpha", "bravo"} and sum(r["num_battles"] for r in rows) == 8
    assert "length_coefficient" in rows[0]


def test_agreement_per_category_from_the_database(sessions, db_url: str, tmp_path: Path) -> None:
    from storage.schema import Battle, BattleTag

    play_battles(sessions, tmp_path, [f"Question {i}?" for i in range(6)])  # votes on battles 0, 2, 4
    with sessions.begin() as db:
        first = db.scalars(sa.select(Battle.id).order_by(Battle.created_at, Battle.id)).first()
        db.add_all([BattleTag(battle_id=first, tag="ocr"), BattleTag(battle_id=first, tag="chart")])
    runner = runner_for(sessions, LongerAnswerJudge(), concurrency=4)
    asyncio.run(runner.run(runner.pending()))
    code, out = cli(
        "agreement",
        "--db",
        db_url,
        "--judge",
        "length-judge",
        "--by-category",
        "--format",
        "json",
        "--bootstrap",
        "0",
    )
    assert code == 0
    figures = json.loads(out)
    per = figures["by_category"]
    assert set(per) <= {"chart+ocr", "untagged"} and sum(c["n"] for c in per.values()) == figures["n"] == 3
