"""Judge ensembles end to end: several judges in one ``judge`` run, ``agreement --ensemble`` over the
database (SQLite and PostgreSQL), the side-by-side table, and its section in ``analysis report``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from analysis.cli import main
from analysis.commands.agreement import judge_agreement_sections
from models.base import GenerationParams, Message, ModelBackend, StreamItem, TextPart, Usage
from storage.schema import JudgeVerdict
from tests.analysis.test_judge import play_battles, runner_for


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


class PreferenceJudge(ModelBackend):
    """Picks the longer or the shorter answer of the first turn, wherever it is shown."""

    def __init__(self, name: str, prefer: str) -> None:
        self.name = name
        self.prefer = prefer

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamItem]:
        text = "".join(p.text for p in messages[1].parts if isinstance(p, TextPart))
        nonce = re.search(r"<<<CONVERSATION-([0-9a-f]{12})>>>", text).group(1)  # type: ignore[union-attr]
        first = text.split(f"<<<ANSWER-A-{nonce}>>>\n")[1].split(f"\n<<<END-ANSWER-A-{nonce}>>>")[0]
        second = text.split(f"<<<ANSWER-B-{nonce}>>>\n")[1].split(f"\n<<<END-ANSWER-B-{nonce}>>>")[0]
        first_longer = len(first) > len(second)
        yield "[[A]]" if first_longer == (self.prefer == "longer") else "[[B]]"
        yield Usage(input_tokens=1, output_tokens=1, finish_reason="stop")


def test_several_judges_run_together_and_resume(db_url: str, sessions, tmp_path: Path) -> None:
    play_battles(sessions, tmp_path, [f"Question {i}?" for i in range(4)])  # votes on battles 0 and 2
    roster = tmp_path / "judges.yaml"
    roster.write_text(
        "models:\n"
        "  - {name: judge-a, backend: scripted, params: {reply: 'A is better. [[A]]'}}\n"
        "  - {name: judge-b, backend: scripted, params: {reply: '[[B]]'}}\n"
        "  - {name: judge-c, backend: scripted, params: {reply: 'Equal. [[C]]'}}\n"
    )
    base = ["judge", "--db", db_url, "--config", str(roster), "--images", str(tmp_path / "images")]
    names = ["--judge", "judge-a", "--judge", "judge-b", "--judge", "judge-c"]
    code, out = cli(*base, *names, "--concurrency", "2")
    assert code == 0
    runs = json.loads(out)["judges"]
    assert [r["judge"] for r in runs] == ["judge-a", "judge-b", "judge-c"]
    assert all(r["calls"] == 8 and r["errors"] == 0 for r in runs)
    assert [r["verdicts"] for r in runs] == [{"A": 8}, {"B": 8}, {"tie": 8}]
    with sessions() as db:
        stored = db.execute(
            sa.select(JudgeVerdict.judge_model, sa.func.count()).group_by(JudgeVerdict.judge_model)
        ).all()
    assert dict(stored) == {"judge-a": 8, "judge-b": 8, "judge-c": 8}
    code, out = cli(*base, *names)
    assert code == 0 and [r["calls"] for r in json.loads(out)["judges"]] == [0, 0, 0]  # resumed

    # A judge that always names the answer shown first is inconsistent: a tie. So every judge and the
    # ensemble say tie, and people (who voted model_a twice) never do: agreement with ties is 0.
    code, out = cli(
        "agreement", "--db", db_url, *names, "--ensemble", "majority", "--format", "json", "--bootstrap", "0"
    )
    assert code == 0
    figures = json.loads(out)
    assert figures["ensemble"]["status_counts"] == {"agree": 4, "majority": 0, "split": 0, "missing": 0}
    table = {row["judge"]: row for row in figures["table"]}
    assert list(table) == ["judge-a", "judge-b", "judge-c", "majority(judge-a,judge-b,judge-c)"]
    assert all(row["n"] == 2 and row["agreement_with_ties"] == 0.0 for row in table.values())
    assert [table[j]["consistency"] for j in ("judge-a", "judge-b", "judge-c")] == [0.0, 0.0, 1.0]
    assert figures["results"]["judge-a"]["position_consistency"]["biased_first"] == 1.0


def test_ensemble_agreement_side_by_side_from_the_database(db_url: str, sessions, tmp_path: Path) -> None:
    play_battles(sessions, tmp_path, [f"Question {i}?" for i in range(6)])  # votes model_a on 0, 2, 4
    judges = [
        PreferenceJudge("long-1", "longer"),
        PreferenceJudge("long-2", "longer"),
        PreferenceJudge("short", "shorter"),
    ]
    for judge in judges:
        runner = runner_for(sessions, judge, concurrency=2)
        asyncio.run(runner.run(runner.pending()))
    names = [arg for j in judges for arg in ("--judge", j.name)]
    code, out = cli("agreement", "--db", db_url, *names, "--ensemble", "majority", "--format", "json")
    assert code == 0
    majority = json.loads(out)
    rows = {row["judge"]: row for row in majority["table"]}
    ensemble = "majority(long-1,long-2,short)"
    # Two of three prefer the longer answer: the majority is the longer-answer judge, battle for battle.
    for figure in ("n", "agreement_with_ties", "agreement_without_ties"):
        assert rows[ensemble][figure] == rows["long-1"][figure]
    assert majority["ensemble"]["status_counts"] == {"agree": 0, "majority": 6, "split": 0, "missing": 0}
    # The people's votes make the longer- and shorter-answer judges exact opposites on decisive votes.
    assert rows["long-1"]["agreement_without_ties"] + rows["short"]["agreement_without_ties"] == 1.0
    lo, hi = rows[ensemble]["agreement_with_ties_lo"], rows[ensemble]["agreement_with_ties_hi"]
    assert lo <= rows[ensemble]["agreement_with_ties"] <= hi  # a 1000-round bootstrap interval

    code, text = cli("agreement", "--db", db_url, *names, "--ensemble", "unanimous", "--bootstrap", "50")
    assert code == 0
    assert "majority(" not in text and "unanimous(long-1,long-2,short)" in text
    assert "agreement (with ties) [95% CI]" in text and "split 6" in text
    line = next(row for row in text.splitlines() if row.startswith("unanimous("))
    assert " 3 " in line and "0.000 [0.000, 0.000]" in line  # always a tie; people never tied

    # The newest side-by-side table is kept and becomes a section of `analysis report`.
    sections = judge_agreement_sections(db_url)
    assert len(sections) == 1 and "unanimous of long-1, long-2, short" in sections[0][0]
    assert list(sections[0][1]["judge"]) == ["long-1", "long-2", "short", "unanimous(long-1,long-2,short)"]
    report = tmp_path / "report"
    code, _ = cli("report", "--db", db_url, "--out", str(report), "--bootstrap", "10")
    assert code == 0 and "Judges and people: agreement side by side" in (report / "index.html").read_text()


def test_ensemble_option_errors_are_one_line(
    db_url: str, sessions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agreement", "--db", db_url, "--judge", "a", "--ensemble", "majority"]) == 2
    assert "two or more --judge" in capsys.readouterr().err
    assert main(["agreement", "--db", db_url, "--judge", "a", "--judge", "b", "--quorum", "2"]) == 2
    assert "--quorum applies to --ensemble only" in capsys.readouterr().err
    play_battles(sessions, tmp_path, ["Question?"])
    args = ["agreement", "--db", db_url, "--judge", "a", "--judge", "b", "--ensemble", "majority"]
    assert main(args) == 2
    assert "no verdicts of judge 'a'" in capsys.readouterr().err
    assert judge_agreement_sections(db_url) == []
