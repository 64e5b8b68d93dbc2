"""Reading battle files: JSON list vs JSONL, defaults for optional columns, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis import io as analysis_io
from analysis.io import BATTLE_COLUMNS, battles_frame, load_battles_file

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


# --------------------------------------------------------------------------------------------------
# The fast reader (pyarrow / orjson) against the plain one
# --------------------------------------------------------------------------------------------------


def many_records(n: int) -> list[dict]:
    """n plain battle records (every field of BATTLE_COLUMNS plus a language)."""
    winners = ["model_a", "model_b", "tie", "tie (bothbad)"]
    return [
        {
            "question_id": f"q{i}",
            "model_a": f"m{i % 7}",
            "model_b": f"m{(i + 1 + i % 5) % 7}",  # never model_a
            "winner": winners[i % 4],
            "judge": None if i % 5 == 0 else f"u{i % 11}",
            "turn": 1 + i % 3,
            "anony": i % 6 != 0,
            "language": "English" if i % 2 else "German",
            "tstamp": 1.7e9 + i,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("as_list", [False, True])
def test_file_reader_matches_building_the_frame_from_records(
    tmp_path: Path, as_list: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = many_records(3000)
    path = tmp_path / ("b.json" if as_list else "b.jsonl")
    path.write_text(json.dumps(records) if as_list else "\n".join(json.dumps(r) for r in records) + "\n")

    def no_plain_reader(p: Path) -> pd.DataFrame:
        raise AssertionError("a well-formed file should not need the plain reader")

    monkeypatch.setattr(analysis_io, "_load_plain", no_plain_reader)
    df = load_battles_file(path)
    pd.testing.assert_frame_equal(df, battles_frame(records), check_dtype=False)
    # model names and winners arrive dictionary-encoded, one category set for both model columns
    assert isinstance(df["model_a"].dtype, pd.CategoricalDtype)
    assert df["model_a"].cat.categories.equals(df["model_b"].cat.categories)
    assert list(df["model_a"].cat.categories) == sorted(df["model_a"].cat.categories)
    assert isinstance(df["winner"].dtype, pd.CategoricalDtype)
    assert df["question_id"].dtype == object and df["judge"].iloc[0] is None


def test_mixed_value_types_still_load(tmp_path: Path) -> None:
    # one field with numbers in some records and strings in others: the plain reader takes over
    records = many_records(50)
    records[30]["tstamp"] = "1700000030.5"
    records[40]["question_id"] = 40
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    df = load_battles_file(path)
    assert df["tstamp"].iloc[30] == 1700000030.5 and df["question_id"].iloc[40] == 40
    assert len(df) == 50 and isinstance(df["model_a"].dtype, pd.CategoricalDtype)


def test_errors_deep_in_a_big_file_name_the_line(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in many_records(5000)]
    blank = ["", "  "]  # blank lines count for the line number, and are skipped
    truncated = tmp_path / "t.jsonl"
    truncated.write_text("\n".join([*blank, *lines[:4000], lines[4000][:25], *lines[4001:]]))
    with pytest.raises(ValueError, match=r"line 4003: malformed or truncated"):
        load_battles_file(truncated)
    missing = tmp_path / "m.jsonl"
    no_winner = json.dumps({"model_a": "a", "model_b": "b"})
    missing.write_text("\n".join([*lines[:2999], no_winner, *lines[2999:]]))
    with pytest.raises(ValueError, match=r"line 3000: missing required field\(s\): winner"):
        load_battles_file(missing)
    null_model = tmp_path / "n.json"
    records = many_records(2000)
    records[1500]["model_b"] = None
    null_model.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"record 1501: missing required field\(s\): model_b"):
        load_battles_file(null_model)
    not_object = tmp_path / "o.jsonl"
    not_object.write_text("\n".join([*lines[:10], "[1, 2]", *lines[10:]]))
    with pytest.raises(ValueError, match="line 11: expected a JSON object, got list"):
        load_battles_file(not_object)


def test_not_utf8_and_nan_literals(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        json.dumps(RECORDS[0]).encode() + b"\n" + b'{"model_a": "\xff", "model_b": "b", "winner": "tie"}\n'
    )
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        load_battles_file(bad)
    nan = tmp_path / "nan.json"
    nan.write_text('[{"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": NaN}]')
    df = load_battles_file(nan)
    assert math.isnan(df["tstamp"].iloc[0]) and df["winner"].tolist() == ["tie"]


def test_nested_extra_fields_stay_arrow_backed(tmp_path: Path) -> None:
    records = many_records(10)
    for r in records:
        r["conversation_a"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    df = load_battles_file(path)
    assert isinstance(df["conversation_a"].dtype, pd.ArrowDtype)
    assert df["conversation_a"].iloc[0] == records[0]["conversation_a"]
