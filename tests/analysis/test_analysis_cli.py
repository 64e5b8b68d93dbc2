"""``python -m analysis ratings``: output formats, determinism and one-line errors (exit 2)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m analysis`` in a subprocess from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def battles_file(tmp_path: Path, simulator) -> Path:
    """A small JSONL of simulated battles among 4 models (one named battle)."""
    df = simulator({"w": 1150.0, "x": 1050.0, "y": 980.0, "z": 900.0}, 400, np.random.default_rng(4))
    df.loc[0, "anony"] = False
    path = tmp_path / "battles.jsonl"
    df.to_json(path, orient="records", lines=True)
    return path


def test_json_output_and_same_seed_same_output(battles_file: Path) -> None:
    args = ["ratings", "--battles", str(battles_file), "--format", "json", "--bootstrap", "50", "--seed", "1"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    rows = json.loads(first.stdout)
    assert [r["model"] for r in rows] == ["w", "x", "y", "z"]
    for r in rows:
        assert {"model", "rating", "ci_lower", "ci_upper", "rank_ub", "num_battles"} <= set(r)
        assert isinstance(r["rating"], float) and isinstance(r["rank_ub"], int)
        assert isinstance(r["num_battles"], int)
        assert r["ci_lower"] <= r["rating"] <= r["ci_upper"]
    assert sum(r["rating"] for r in rows) / 4 == pytest.approx(1000.0, abs=0.01)
    assert sum(r["num_battles"] for r in rows) == 2 * 399  # the named battle is left out
    second = run_cli(*args)
    assert second.stdout == first.stdout


def test_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model_a": "a", "model_b": "b", "winner": "model_a"}\n{"model_a": "a", "mod')
    proc = run_cli("ratings", "--battles", str(bad), "--format", "json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 2" in lines[0] and "Traceback" not in proc.stderr


def test_in_process_errors_exit_2(
    tmp_path: Path, battles_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"model_a": "a", "model_b": "b", "winner": "A>>B"}]))
    cases = {
        "unknown winner": ["--battles", str(unknown)],
        "missing file": ["--battles", str(tmp_path / "nope.jsonl")],
        "unknown anchor": ["--battles", str(battles_file), "--anchor", "nobody=1000"],
        "malformed anchor": ["--battles", str(battles_file), "--anchor", "w:1000"],
    }
    expected = {
        "unknown winner": "unknown winner",
        "missing file": "not found",
        "unknown anchor": "unknown anchor model 'nobody'",
        "malformed anchor": "MODEL=RATING",
    }
    for name, args in cases.items():
        assert main(["ratings", *args, "--bootstrap", "0"]) == 2, name
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and expected[name] in err, (name, err)


def test_table_csv_out_anchor_and_elo(
    battles_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ratings", "--battles", str(battles_file), "--bootstrap", "20", "--anchor", "y=1200"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["rank_ub", "model", "rating", "95%", "CI", "num_battles"]
    assert len(table) == 2 + 4 and len({len(line) for line in table}) == 1  # aligned
    assert "1200.0" in next(line for line in table if " y " in line)

    out = tmp_path / "r.csv"
    args = [
        "ratings",
        "--battles",
        str(battles_file),
        "--format",
        "csv",
        "--bootstrap",
        "0",
        "--out",
        str(out),
    ]
    assert main([*args, "--method", "elo", "--include-named"]) == 0
    assert capsys.readouterr().out == ""
    csv = pd.read_csv(out)
    assert list(csv.columns) == ["model", "rating", "ci_lower", "ci_upper", "rank_ub", "num_battles"]
    assert csv["num_battles"].sum() == 2 * 400
    assert (csv["ci_lower"] == csv["rating"]).all()


def test_help_lists_ratings() -> None:
    proc = run_cli("ratings", "--help")
    assert proc.returncode == 0
    for flag in (
        "--db",
        "--battles",
        "--method",
        "--bootstrap",
        "--ci",
        "--seed",
        "--anchor",
        "--format",
        "--out",
    ):
        assert flag in proc.stdout
    assert "sandwich" in proc.stdout and "arena-rank" in proc.stdout


def test_report_writes_html_and_the_same_leaderboard_as_ratings(battles_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run_cli("report", "--battles", str(battles_file), "--out", str(out), "--bootstrap", "40")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == out / "index.html"
    html = (out / "index.html").read_text(encoding="utf-8")
    assert all(name in html for name in ("w", "x", "y", "z")) and "<script src=" not in html
    ratings = run_cli("ratings", "--battles", str(battles_file), "--format", "csv", "--bootstrap", "40")
    expected = pd.read_csv(io.StringIO(ratings.stdout))
    written = pd.read_csv(out / "leaderboard_bt.csv")
    assert list(written["model"]) == list(expected["model"])
    assert np.allclose(written["rating"], expected["rating"], atol=0.01)
    assert np.allclose(written["ci_lower"], expected["ci_lower"], atol=0.01)


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    result = run_cli("report", "--battles", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and result.stderr.startswith("error: battles file not found")
    assert not (tmp_path / "r").exists()


def test_tie_model_reports_its_parameter(battles_file: Path) -> None:
    args = ["ratings", "--battles", str(battles_file), "--method", "davidson", "--bootstrap", "30"]
    result = run_cli(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == ["w", "x", "y", "z"]
    assert all(r["tie_model"] == "davidson" and r["tie_param_name"] == "nu" for r in rows)
    assert rows[0]["tie_param_ci_lower"] <= rows[0]["tie_param"] <= rows[0]["tie_param_ci_upper"]
    table = run_cli(*args)
    assert table.returncode == 0 and "davidson tie parameter nu = " in table.stdout


def test_style_control_needs_answers_and_uses_lengths(battles_file: Path, tmp_path: Path) -> None:
    plain = run_cli("ratings", "--battles", str(battles_file), "--style-control", "--bootstrap", "0")
    assert plain.returncode == 2 and plain.stderr.startswith(
        "error: style control needs each battle's answers"
    )
    df = pd.read_json(battles_file, lines=True)
    df["len_a"] = np.where(df["model_a"] == "z", 900, 300)  # z writes long answers
    df["len_b"] = np.where(df["model_b"] == "z", 900, 300)
    path = tmp_path / "with_lengths.jsonl"
    df.to_json(path, orient="records", lines=True)
    result = run_cli(
        "ratings", "--battles", str(path), "--style-control", "--bootstrap", "20", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["model"] for r in rows} == {"w", "x", "y", "z"} and "length_coefficient" in rows[0]
    bad = run_cli("ratings", "--battles", str(path), "--style-control", "--method", "elo")
    assert bad.returncode == 2 and "--method bt" in bad.stderr


def test_time_range_filters_a_file(battles_file: Path) -> None:
    df = pd.read_json(battles_file, lines=True)
    cut = pd.Timestamp(df["tstamp"].iloc[200], unit="s", tz="UTC").isoformat()
    early = run_cli(
        "ratings", "--battles", str(battles_file), "--until", cut, "--bootstrap", "0", "--format", "json"
    )
    late = run_cli(
        "ratings", "--battles", str(battles_file), "--since", cut, "--bootstrap", "0", "--format", "json"
    )
    assert early.returncode == 0 and late.returncode == 0, early.stderr + late.stderr
    count = lambda out: sum(r["num_battles"] for r in json.loads(out)) // 2  # noqa: E731
    anony = int(df["anony"].sum())
    assert count(early.stdout) + count(late.stdout) == anony and 0 < count(early.stdout) < anony
    assert run_cli("ratings", "--battles", str(battles_file), "--category", "ocr").returncode == 2


def test_sandwich_intervals(battles_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["ratings", "--battles", str(battles_file), "--format", "json"]
    assert main([*base, "--ci", "sandwich"]) == 0
    sandwich = json.loads(capsys.readouterr().out)
    assert main([*base, "--bootstrap", "400"]) == 0
    boot = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert [r["model"] for r in sandwich] == ["w", "x", "y", "z"]
    for r in sandwich:
        below, above = r["rating"] - r["ci_lower"], r["ci_upper"] - r["rating"]
        assert below == pytest.approx(above, abs=0.011) and below > 5  # rating +- 1.96 se
        assert r["rating"] == pytest.approx(boot[r["model"]]["rating"], abs=0.011)
        # the same 95% interval as the bootstrap's, within sampling noise of 400 rounds
        width_boot = boot[r["model"]]["ci_upper"] - boot[r["model"]]["ci_lower"]
        assert abs((r["ci_upper"] - r["ci_lower"]) - width_boot) < 0.2 * width_boot
    assert main([*base, "--ci", "sandwich", "--method", "rao-kupper"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["tie_param_ci_lower"] < rows[0]["tie_param"] < rows[0]["tie_param_ci_upper"]
    for bad in (["--method", "elo"], ["--style-control"]):
        assert main([*base, "--ci", "sandwich", *bad]) == 2
        err = capsys.readouterr().err
        assert (
            len(err.strip().splitlines()) == 1 and "--ci sandwich is for bt, davidson and rao-kupper" in err
        )
