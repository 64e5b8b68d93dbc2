"""Reading battle files: JSON list vs JSONL, defaults for optional columns, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis.io import BATTLE_COLUMNS, load_battles_file

RECORDS = [
    {"question_id": "q1", "model_a": "a", "model_b": "b", "winner": "model_a", "anony": False, "tstamp": 3.5},
    {"model_a": "b", "model_b": "c", "winner": "tie (bothbad)", "judge": "u1", "turn": 2, "extra": [1, 2]},
]


def test_json_list_and_jsonl_give_the_same_frame(tmp_path: Path) -> None:
    as_list = tmp_path / "battles.json"
    as_list.write_text("  \n" + json.dumps(RECORDS, indent=1))
    as_lines = tmp_path / "battles.jsonl"
    as_lines.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    a = load_battles_file(as_list)
    b = load_battles_file(as_lines)
    assert a.equals(b)
    assert list(a.columns[: len(BATTLE_COLUMNS)]) == list(BATTLE_COLUMNS)
    assert "extra" in a.columns


def test_optional_columns_get_defaults(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS))
    df = load_battles_file(path)
    first, second = df.iloc[0], df.iloc[1]
    assert df["anony"].tolist() == [False, True]
    assert int(first["turn"]) == 1 and int(second["turn"]) == 2
    assert first["judge"] is None and second["judge"] == "u1"
    assert first["tstamp"] == 3.5 and math.isnan(second["tstamp"])
    assert first["question_id"] == "q1" and second["question_id"] is None
    minimal = tmp_path / "m.json"
    minimal.write_text(json.dumps([{"model_a": "a", "model_b": "b", "winner": "tie"}]))
    df = load_battles_file(minimal)
    assert list(df.columns) == list(BATTLE_COLUMNS)
    assert df["anony"].tolist() == [True] and df["turn"].tolist() == [1]


def test_truncated_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    good = json.dumps(RECORDS[0])
    path.write_text(f"{good}\n{good}\n{good[:20]}")
    with pytest.raises(ValueError, match=r"line 3: malformed or truncated"):
        load_battles_file(path)


def test_truncated_json_list(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(RECORDS, indent=1)[:-30])
    with pytest.raises(ValueError, match=r"malformed or truncated JSON at line \d+"):
        load_battles_file(path)


def test_missing_required_field(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps({"model_a": "a", "model_b": "b"}) + "\n")
    with pytest.raises(ValueError, match="line 2: missing required field.*winner"):
        load_battles_file(path)


def test_non_object_record(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_text(json.dumps([RECORDS[0], ["a", "b"]]))
    with pytest.raises(ValueError, match="record 2: expected a JSON object"):
        load_battles_file(path)


def test_empty_file_gives_empty_frame(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("\n  \n")
    df = load_battles_file(path)
    assert len(df) == 0 and list(df.columns) == list(BATTLE_COLUMNS)
