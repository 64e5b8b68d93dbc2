"""Battle import validation (storage.transfer.validation): the msgspec fast path agrees with the
general checks, and refused records and files name their first problem.

Every database test runs on SQLite and PostgreSQL (the ``db_url`` fixtures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from storage.transfer import importer, validation
from storage.transfer.formats import TransferError
from storage.transfer.importer import import_battles
from tests.storage.transfer_cases import (
    FASTCHAT,
    NOW,
    SHA,
    populate,
    table_counts,
    write_jsonl,
)


def _conversation_pair(*turns: tuple[str, str | None, str | None]) -> dict[str, Any]:
    side_a: list[dict[str, str]] = []
    side_b: list[dict[str, str]] = []
    for prompt, answer_a, answer_b in turns:
        for side, answer in ((side_a, answer_a), (side_b, answer_b)):
            side.append({"role": "user", "content": prompt})
            if answer is not None:
                side.append({"role": "assistant", "content": answer})
    return {"conversation_a": side_a, "conversation_b": side_b}


#: Records in shapes that files hold all the time: the fast path takes every one of them.
COMMON_SHAPES = [
    FASTCHAT[0],
    FASTCHAT[1],
    FASTCHAT[2],
    {**FASTCHAT[0], "tstamp": 1682345678, "anony": False, "language": None, "judge": None},
    {**FASTCHAT[0], "tstamp": None, "reason": "ünïcödé ✓", "images": [[SHA[0], SHA[1]]]},
    {**FASTCHAT[0], "images": [[]]},
    {
        **FASTCHAT[0],
        "turn": None,
        **_conversation_pair(("p1", "a1", None), ("p2", None, "b2"), ("p3", "a3", "b3")),
    },
    {**FASTCHAT[0], "turn": 2, **_conversation_pair(("p1", "a1", "b1"), ("p2", "a2", "b2"))},
    {**FASTCHAT[2], "turn": 3},
    {**FASTCHAT[2], "conversation_a": [], "conversation_b": None},
    {**FASTCHAT[2], "conversation_a": [], "conversation_b": []},
    {**FASTCHAT[0], "extra": {"ignored": [1, 2]}},
]
#: Unusual records, valid or not: the fast path may leave them to the general checks.
ODD_SHAPES = [
    {**FASTCHAT[0], "turn": 1.0},
    {**FASTCHAT[0], "turn": True},
    {**FASTCHAT[0], "anony": None},
    {**FASTCHAT[0], "tstamp": True},
    {**FASTCHAT[0], "tstamp": 1e20},
    {**FASTCHAT[0], "language": "x" * 33},
    {**FASTCHAT[0], "question_id": ""},
    {**FASTCHAT[0], "question_id": "q" * 64, "model_a": "m" * 200},
    {**FASTCHAT[0], "model_b": "gpt-4"},
    {**FASTCHAT[2], "turn": 1001},
    {**FASTCHAT[2], "conversation_a": [], "conversation_b": [{"role": "user", "content": "x"}]},
    {**FASTCHAT[0], "conversation_b": [{"role": "user", "content": "What is 2+2?"}]},
    {**FASTCHAT[0], **_conversation_pair(("p1", "a1", "b1"), ("p2", "a2", "b2"))},
    {**FASTCHAT[0], "turn": None, "conversation_a": [{"role": "user", "content": "x"}] * 2},
    {
        **FASTCHAT[0],
        "conversation_a": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}],
    },
    {
        **FASTCHAT[0],
        "conversation_a": [
            {"role": "user", "content": "What is 2+2?", "name": "x"},
            {"role": "assistant", "content": "4"},
        ],
    },
    {**FASTCHAT[0], "images": [["A" * 64]]},
    {**FASTCHAT[0], "images": [[SHA[0]], []]},
    {**FASTCHAT[0], "images": [[1]]},
]


@pytest.mark.parametrize(
    ("record", "common"),
    [(r, True) for r in COMMON_SHAPES] + [(r, False) for r in ODD_SHAPES],
    ids=[f"common-{i}" for i in range(len(COMMON_SHAPES))] + [f"odd-{i}" for i in range(len(ODD_SHAPES))],
)
def test_the_fast_path_agrees_with_the_general_checks(record: dict[str, Any], common: bool) -> None:
    """Whatever the msgspec path makes of a record is what the general checks make of it; what they
    refuse, it refuses too (and leaves to them, which say why)."""
    now_ts = NOW.timestamp()
    try:
        expected: Any = validation.check_record(record, now_ts)
    except validation.Problem:
        expected = None
    try:
        fast = validation.fast_battle(validation.FAST_DECODER.decode(json.dumps(record).encode()), now_ts)
    except (ValueError, OverflowError, OSError):  # msgspec's errors are ValueErrors
        fast = None
    if common:
        assert expected is not None and fast == expected
    elif fast is not None:
        assert fast == expected


# ------------------------------------------------------------------------------------ refused imports


def _record(**changes: Any) -> dict[str, Any]:
    """FASTCHAT[0] as question_id 'bad' with some fields changed (``...`` removes one)."""
    record = {**FASTCHAT[0], "question_id": "bad", **changes}
    return {k: v for k, v in record.items() if v is not ...}


BAD_RECORDS = [
    ("missing", _record(winner=...), r"line 2 \(question_id 'bad'\): missing required field\(s\): winner"),
    ("no-id", _record(question_id=...), r"line 2: missing required field\(s\): question_id"),
    ("winner", _record(winner="model_c"), r"line 2 \(question_id 'bad'\): unknown winner 'model_c'"),
    ("same-model", _record(model_b="gpt-4"), r"same model \('gpt-4'\)"),
    ("model-type", _record(model_a=7), r"model_a must be a string, got int"),
    ("id-length", _record(question_id="x" * 65), r"question_id is 65 characters long; at most 64"),
    ("turn-type", _record(turn="1"), r"turn must be a whole number >= 1, got '1'"),
    ("turn-count", _record(turn=2), r"turn is 2 but the conversations have 1 user turn"),
    ("anony", _record(anony="yes"), r"anony must be true or false, got 'yes'"),
    ("tstamp", _record(tstamp="2023-04-24"), r"tstamp must be a number"),
    ("tstamp-range", _record(tstamp=1e20), r"tstamp 1e\+20 is not a usable time"),
    ("judge", _record(judge=["x"]), r"judge must be a string, got list"),
    ("one-side", _record(conversation_b=...), r"only conversation_a is given"),
    (
        "prompts",
        _record(conversation_b=[{"role": "user", "content": "other"}, {"role": "assistant", "content": "x"}]),
        r"user turn 1 differs between conversation_a and conversation_b",
    ),
    (
        "role",
        _record(conversation_a=[{"role": "system", "content": "x"}]),
        r"conversation_a message 1: role must be 'user' or 'assistant', got 'system'",
    ),
    (
        "order",
        _record(conversation_a=[{"role": "assistant", "content": "x"}]),
        r"conversation_a message 1: an assistant message must follow a user message",
    ),
    (
        "content",
        _record(conversation_b=[{"role": "user", "content": None}]),
        r"conversation_b message 1: content must be a string, got NoneType",
    ),
    ("images-shape", _record(images=[[SHA[0]], []]), r"images must be a list with one list of sha256 hashes"),
    ("images-hash", _record(images=[["not-a-hash"]]), r"'not-a-hash' is not a lowercase hex sha256"),
    ("reason", _record(reason="x" * 2001), r"reason is 2001 characters long; at most 2000"),
    (
        "nul",
        _record(
            conversation_a=[
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4\x00"},
            ]
        ),
        r"text holds a NUL character",
    ),
    ("not-object", [1, 2], r"line 2: expected a JSON object, got list"),
]


@pytest.mark.parametrize(("record", "message"), [b[1:] for b in BAD_RECORDS], ids=[b[0] for b in BAD_RECORDS])
def test_bad_records_are_refused_and_nothing_is_written(
    engine: sa.Engine, tmp_path: Path, record: Any, message: str
) -> None:
    populate(engine)
    before = table_counts(engine)
    path = write_jsonl(tmp_path / "bad.jsonl", [{**FASTCHAT[2], "question_id": "good"}, record, FASTCHAT[1]])
    with pytest.raises(TransferError, match=message):
        import_battles(engine, path, progress=False)
    assert table_counts(engine) == before


BAD_FILES = [
    (
        "truncated-jsonl",
        "\n".join([json.dumps(FASTCHAT[0]), json.dumps(FASTCHAT[1]), json.dumps(FASTCHAT[2])[:40]]),
        r"line 3: malformed or truncated JSON record",
    ),
    ("truncated-list", '[{"question_id": "x",', r"malformed or truncated JSON"),
    ("not-a-list", '"battles"', r"not a FastChat battle file"),
    ("object-not-list", "[1]", r"record 1: expected a JSON object, got int"),
    ("text", "hello world\n", r"not a FastChat battle file"),
    ("bad-parquet", "PAR1 but not really", r"not a readable Parquet file"),
]


@pytest.mark.parametrize(("content", "message"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused(engine: sa.Engine, tmp_path: Path, content: str, message: str) -> None:
    before = table_counts(engine)
    path = tmp_path / "battles.data"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TransferError, match=message):
        import_battles(engine, path, progress=False)
    assert table_counts(engine) == before


def test_missing_file_and_empty_file(engine: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="no such file"):
        import_battles(engine, tmp_path / "nope.jsonl", progress=False)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert import_battles(engine, tmp_path / "empty.jsonl", progress=False).battles == 0


def test_duplicate_question_id_in_the_file_is_refused(engine: sa.Engine, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "dup.jsonl", [FASTCHAT[0], FASTCHAT[2], {**FASTCHAT[1], "question_id": "abc123"}]
    )
    with pytest.raises(
        TransferError, match=r"line 3 \(question_id 'abc123'\): duplicate question_id \(already at line 1\)"
    ):
        import_battles(engine, path, progress=False)
    assert table_counts(engine)["battles"] == 0


def test_question_id_already_in_the_database_refuses_the_whole_import(
    engine: sa.Engine, tmp_path: Path
) -> None:
    populate(engine)
    before = table_counts(engine)
    path = write_jsonl(
        tmp_path / "clash.jsonl",
        [FASTCHAT[0], {**FASTCHAT[2], "question_id": "tie-2"}, {**FASTCHAT[1], "question_id": "multi"}],
    )
    with pytest.raises(
        TransferError,
        match=r"line 2 \(question_id 'tie-2'\): already a battle in the database \(and 1 more\)",
    ):
        import_battles(engine, path, progress=False)
    assert table_counts(engine) == before  # not even the new models


def test_a_failure_while_writing_rolls_everything_back(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Battles of earlier batches are already inserted when a later batch fails: one transaction."""
    populate(engine)
    before = table_counts(engine)
    real = importer.turn_rows
    calls = []

    def failing(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args)

    monkeypatch.setattr(importer, "turn_rows", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        import_battles(engine, write_jsonl(tmp_path / "b.jsonl", FASTCHAT), progress=False, batch_size=1)
    assert table_counts(engine) == before
