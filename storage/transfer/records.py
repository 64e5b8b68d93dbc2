"""The typed form of a validated battle record, as validation hands it to the writers.

Both are NamedTuples: as cheap to make and to unpack as plain tuples (the import makes a million of
them), read by field name everywhere. The hot loops build them with :func:`new_battle` and
:func:`new_turn`, which skip the generated ``__new__`` (a Python-level call) and cost half as much.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple


class TurnRecord(NamedTuple):
    """One turn of a battle: the prompt, each side's answer (None: none) and the image hashes, in order."""

    prompt: str
    answer_a: str | None
    answer_b: str | None
    images: tuple[str, ...]


class BattleRecord(NamedTuple):
    """One validated battle with its vote, ready to be written."""

    question_id: str
    mode: str  # "anony" or "named"
    model_a: str
    model_b: str
    language: str | None
    moment: datetime  # when the vote was cast (tstamp), aware UTC
    winner: str
    judge: str | None
    reason: str | None
    turns: list[TurnRecord]


#: ``new_battle((question_id, mode, ...))`` / ``new_turn((prompt, ...))``: the record from a tuple of
#: all its fields in order, made in C (``tuple.__new__``), without the field count check.
new_battle: Callable[[tuple[Any, ...]], BattleRecord] = partial(tuple.__new__, BattleRecord)
new_turn: Callable[[tuple[Any, ...]], TurnRecord] = partial(tuple.__new__, TurnRecord)

#: A turn without prompt, answers or images, for records that carry no conversations.
EMPTY_TURN = TurnRecord("", None, None, ())
