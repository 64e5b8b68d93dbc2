"""Battle record validation: the msgspec-typed fast path for records in the common shape and the
general checks that decide and say what is wrong with any other record."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from sqlalchemy import String

from storage.schema import MAX_REASON_CHARS, Battle, ModelRow, Vote
from storage.transfer.formats import Source, TransferError, decode_record
from storage.transfer.records import EMPTY_TURN, BattleRecord, TurnRecord, new_battle, new_turn
from storage.vocabulary import ANONY, NAMED, WINNERS, Winner

#: Without conversations, ``turn`` empty turns are created; this caps what one record can ask for.
MAX_TURNS_WITHOUT_CONVERSATION = 1000

_WINNERS = frozenset(WINNERS)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _length(column: Any) -> int:
    """The declared length of a VARCHAR column."""
    kind = column.type
    if not isinstance(kind, String) or kind.length is None:
        raise TypeError(f"{column} has no declared length")
    return kind.length


_MAX_ID = _length(Battle.id)  # 64
_MAX_MODEL = _length(ModelRow.name)  # 200
_MAX_JUDGE = _length(Vote.judge)  # 128
_MAX_LANGUAGE = _length(Battle.language)  # 32

_NO_IMAGES: tuple[str, ...] = ()


@dataclass
class Plan:
    """Validated battles, ready to be written."""

    battles: list[BattleRecord] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)  # question_id -> position in the file
    word: str = "record"  # what a position counts: line, record or row

    def model_names(self) -> set[str]:
        return {b.model_a for b in self.battles} | {b.model_b for b in self.battles}


class Problem(Exception):
    """A record-level validation problem; the caller adds where it is."""


def validate(
    path: Path, source: Source, records: Iterable[tuple[int, Any]], now: datetime, progress: Any
) -> Plan:
    """Check every record, in file order, and keep what to write; the first problem raises
    TransferError."""
    word = source.word
    plan = Plan(word=word)
    positions = plan.positions
    battles = plan.battles
    check = Checker(path, source, now).battle
    tick = 0
    for position, item in records:
        battle = check(position, item)
        qid = battle.question_id
        if qid in positions:
            raise TransferError(
                f"{path}: {where(word, position, qid)}: duplicate question_id "
                f"(already at {word} {positions[qid]})"
            )
        positions[qid] = position
        battles.append(battle)
        tick += 1
        if tick == 10_000:
            progress.update(tick)
            tick = 0
    progress.update(tick)
    return plan


class Checker:
    """Validates single records of one file into battle records.

    Raw JSON records first go through ``fast_battle`` (decoded and type-checked by msgspec in C);
    whatever it does not take, invalid or just unusual, is decoded again and checked by
    ``check_record``, which decides and says what is wrong.
    """

    def __init__(self, path: Path, source: Source, now: datetime) -> None:
        self.path = path
        self.word = source.word
        self.may_hold_nul = source.may_hold_nul
        self.now_ts = now.timestamp()
        self.fast_decode = FAST_DECODER.decode

    def battle(self, position: int, item: Any) -> BattleRecord:
        """The battle record of the record at ``position``; TransferError if it is not valid."""
        battle = None
        raw = type(item) is bytes or type(item) is msgspec.Raw
        if raw:
            try:
                battle = fast_battle(self.fast_decode(item), self.now_ts)
            except (msgspec.MsgspecError, OverflowError, OSError, ValueError):
                battle = None
        if battle is None:
            record = decode_record(self.path, self.word, position, item) if raw else item
            qid = record.get("question_id") if type(record) is dict else None
            try:
                if type(record) is not dict:
                    raise Problem(f"expected a JSON object, got {type(record).__name__}")
                battle = check_record(record, self.now_ts)
            except Problem as problem:
                raise TransferError(f"{self.path}: {where(self.word, position, qid)}: {problem}") from None
        if self.may_hold_nul:
            try:
                _refuse_nul(battle)
            except Problem as problem:
                raise TransferError(
                    f"{self.path}: {where(self.word, position, battle.question_id)}: {problem}"
                ) from None
        return battle


# The common shape of a record, which msgspec decodes and type-checks in C. Field by field it accepts
# a subset of what ``check_record`` accepts and yields the same values; ``fast_battle`` checks the
# rest, and anything either refuses goes to ``check_record``.
class _FastMessage(msgspec.Struct, gc=False):
    role: str
    content: str


class _FastRecord(msgspec.Struct, gc=False):
    question_id: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_ID)]
    model_a: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_MODEL)]
    model_b: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_MODEL)]
    winner: Winner
    judge: Annotated[str, msgspec.Meta(max_length=_MAX_JUDGE)] | None = None
    turn: Annotated[int, msgspec.Meta(ge=1, le=MAX_TURNS_WITHOUT_CONVERSATION)] | None = None
    anony: bool = True
    language: Annotated[str, msgspec.Meta(max_length=_MAX_LANGUAGE)] | None = None
    tstamp: float | None = None
    conversation_a: list[_FastMessage] | None = None
    conversation_b: list[_FastMessage] | None = None
    images: list[list[str]] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)] | None = None


FAST_DECODER = msgspec.json.Decoder(_FastRecord)


def fast_battle(record: _FastRecord, now_ts: float) -> BattleRecord | None:
    """The battle record of a record in the common shape, as ``check_record`` makes it; None when
    the record needs the general checks (it may still be valid)."""
    model_a = record.model_a
    model_b = record.model_b
    if model_a == model_b:
        return None
    tstamp = record.tstamp
    moment = datetime.fromtimestamp(now_ts if tstamp is None else tstamp, UTC)
    conversation_a = record.conversation_a
    conversation_b = record.conversation_b
    turn = record.turn
    if conversation_a and conversation_b:
        if len(conversation_a) == 2 and len(conversation_b) == 2:
            user_a, reply_a = conversation_a
            user_b, reply_b = conversation_b
            prompt = user_a.content
            if not (
                user_a.role == "user"
                and user_b.role == "user"
                and reply_a.role == "assistant"
                and reply_b.role == "assistant"
                and prompt == user_b.content
            ):
                return None
            turns: list[TurnRecord] = [new_turn((prompt, reply_a.content, reply_b.content, _NO_IMAGES))]
        else:
            several = _fast_turns(conversation_a, conversation_b)
            if several is None:
                return None
            turns = several
        if turn is not None and turn != len(turns):
            return None
    elif conversation_a or conversation_b:  # one side only
        return None
    else:  # none (absent, null or empty on both sides)
        turns = [EMPTY_TURN] * (1 if turn is None else turn)
    images = record.images
    if images is not None:
        if len(images) != len(turns):
            return None
        if any(images):
            fullmatch = _SHA256.fullmatch
            for hashes in images:
                for sha in hashes:
                    if not fullmatch(sha):
                        return None
            turns = _with_images(turns, images)
    return new_battle(
        (
            record.question_id,
            ANONY if record.anony else NAMED,
            model_a,
            model_b,
            record.language,
            moment,
            record.winner,
            record.judge,
            record.reason,
            turns,
        )
    )


def _with_images(turns: list[TurnRecord], images: list[list[str]]) -> list[TurnRecord]:
    """The turns with their image hashes (one list per turn)."""
    return [
        new_turn((prompt, answer_a, answer_b, tuple(hashes)))
        for (prompt, answer_a, answer_b, _), hashes in zip(turns, images, strict=True)
    ]


def _fast_turns(
    conversation_a: list[_FastMessage], conversation_b: list[_FastMessage]
) -> list[TurnRecord] | None:
    """Turns of two well-formed multi-turn conversations with the same prompts; else None."""
    side_a = _fast_split(conversation_a)
    side_b = _fast_split(conversation_b)
    if side_a is None or side_b is None or len(side_a) != len(side_b):
        return None
    turns: list[TurnRecord] = []
    for (prompt, answer_a), (prompt_b, answer_b) in zip(side_a, side_b, strict=True):
        if prompt != prompt_b:
            return None
        turns.append(new_turn((prompt, answer_a, answer_b, _NO_IMAGES)))
    return turns


def _fast_split(messages: list[_FastMessage]) -> list[tuple[str, str | None]] | None:
    turns: list[tuple[str, str | None]] = []
    for message in messages:
        role = message.role
        if role == "user":
            turns.append((message.content, None))
        elif role == "assistant" and turns and turns[-1][1] is None:
            turns[-1] = (turns[-1][0], message.content)
        else:
            return None
    return turns


def _refuse_nul(battle: BattleRecord) -> None:
    """PostgreSQL text cannot hold NUL; refuse it everywhere so every database takes the same files."""
    texts = [battle.question_id, battle.model_a, battle.model_b, battle.language, battle.judge, battle.reason]
    texts += [text for turn in battle.turns for text in (turn.prompt, turn.answer_a, turn.answer_b)]
    if any(text is not None and "\x00" in text for text in texts):
        raise Problem("text holds a NUL character (\\u0000), which PostgreSQL cannot store")


def where(word: str, position: int, qid: Any) -> str:
    if type(qid) is str:
        return f"{word} {position} (question_id {qid!r})"
    return f"{word} {position}"


def check_record(record: dict[str, Any], now_ts: float) -> BattleRecord:
    """Validate one record; return its battle record."""
    get = record.get
    qid = get("question_id")
    model_a = get("model_a")
    model_b = get("model_b")
    winner = get("winner")
    if not (
        type(qid) is str
        and 0 < len(qid) <= _MAX_ID
        and type(model_a) is str
        and 0 < len(model_a) <= _MAX_MODEL
        and type(model_b) is str
        and 0 < len(model_b) <= _MAX_MODEL
        and model_a != model_b
        and winner in _WINNERS
    ):
        raise Problem(_required_problem(record))

    judge = get("judge")
    turn = get("turn")
    anony = get("anony", True)
    language = get("language")
    tstamp = get("tstamp")
    reason = get("reason")
    if judge is not None and not (type(judge) is str and len(judge) <= _MAX_JUDGE):
        raise Problem(_text_problem("judge", judge, _MAX_JUDGE))
    if turn is not None and not (type(turn) is int and turn >= 1):
        raise Problem(f"turn must be a whole number >= 1, got {turn!r}")
    if type(anony) is not bool:
        raise Problem(f"anony must be true or false, got {anony!r}")
    if language is not None and not (type(language) is str and len(language) <= _MAX_LANGUAGE):
        raise Problem(_text_problem("language", language, _MAX_LANGUAGE))
    if reason is not None and not (type(reason) is str and len(reason) <= MAX_REASON_CHARS):
        raise Problem(_text_problem("reason", reason, MAX_REASON_CHARS))
    if tstamp is None:
        tstamp = now_ts
    elif type(tstamp) is not float and type(tstamp) is not int:
        raise Problem(f"tstamp must be a number of seconds since 1970, got {tstamp!r}")
    try:
        moment = datetime.fromtimestamp(tstamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise Problem(f"tstamp {tstamp!r} is not a usable time") from None

    turns = _turns_from(get("conversation_a"), get("conversation_b"))
    if turns is None:
        count = 1 if turn is None else turn
        if count > MAX_TURNS_WITHOUT_CONVERSATION:
            raise Problem(
                f"turn {count} without conversations; at most {MAX_TURNS_WITHOUT_CONVERSATION} allowed"
            )
        turns = [EMPTY_TURN] * count
    elif turn is not None and turn != len(turns):
        raise Problem(f"turn is {turn} but the conversations have {len(turns)} user turn(s)")
    images = get("images")
    if images is not None:
        _check_images(images, len(turns))
        if any(images):
            turns = _with_images(turns, images)
    mode = ANONY if anony else NAMED
    return BattleRecord(qid, mode, model_a, model_b, language, moment, winner, judge, reason, turns)


def _required_problem(record: dict[str, Any]) -> str:
    """Say exactly what is wrong with the required fields of a record that failed the fast check."""
    missing = [k for k in ("question_id", "model_a", "model_b", "winner") if record.get(k) is None]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    for key, limit in (("question_id", _MAX_ID), ("model_a", _MAX_MODEL), ("model_b", _MAX_MODEL)):
        value = record[key]
        if type(value) is not str or not value or len(value) > limit:
            return _text_problem(key, value, limit, empty_ok=False)
    winner = record["winner"]
    if winner not in _WINNERS:
        return f"unknown winner {winner!r}; expected one of {', '.join(WINNERS)}"
    return f"model_a and model_b are the same model ({record['model_a']!r})"


def _text_problem(key: str, value: Any, limit: int, *, empty_ok: bool = True) -> str:
    if type(value) is not str:
        return f"{key} must be a string, got {type(value).__name__} {value!r}"[:300]
    if not value and not empty_ok:
        return f"{key} must not be empty"
    return f"{key} is {len(value)} characters long; at most {limit} allowed"


def _turns_from(conversation_a: Any, conversation_b: Any) -> list[TurnRecord] | None:
    """Turns rebuilt from both conversations; None when the record has none."""
    if not conversation_a and not conversation_b:
        if conversation_a not in (None, []) or conversation_b not in (None, []):
            raise Problem("conversation_a and conversation_b must be lists of messages")
        return None
    simple = _simple_turn(conversation_a, conversation_b)
    if simple is not None:
        return simple
    if conversation_a is None or conversation_b is None:
        given = "conversation_a" if conversation_b is None else "conversation_b"
        raise Problem(f"only {given} is given; a battle needs both conversations")
    side_a = _split_conversation(conversation_a, "conversation_a")
    side_b = _split_conversation(conversation_b, "conversation_b")
    if len(side_a) != len(side_b):
        raise Problem(f"conversation_a has {len(side_a)} user turn(s) but conversation_b has {len(side_b)}")
    turns: list[TurnRecord] = []
    for number, ((prompt_a, answer_a), (prompt_b, answer_b)) in enumerate(
        zip(side_a, side_b, strict=True), start=1
    ):
        if prompt_a != prompt_b:
            raise Problem(f"user turn {number} differs between conversation_a and conversation_b")
        turns.append(TurnRecord(prompt_a, answer_a, answer_b, _NO_IMAGES))
    return turns


def _simple_turn(conversation_a: Any, conversation_b: Any) -> list[TurnRecord] | None:
    """The common shape, one [user, assistant] exchange on each side with the same prompt, checked
    cheaply; None for anything else (which the general path then checks or explains)."""
    if not (
        type(conversation_a) is list
        and type(conversation_b) is list
        and len(conversation_a) == 2
        and len(conversation_b) == 2
    ):
        return None
    user_a, reply_a = conversation_a
    user_b, reply_b = conversation_b
    if not (
        type(user_a) is dict
        and type(reply_a) is dict
        and type(user_b) is dict
        and type(reply_b) is dict
        and user_a.get("role") == "user"
        and user_b.get("role") == "user"
        and reply_a.get("role") == "assistant"
        and reply_b.get("role") == "assistant"
    ):
        return None
    prompt = user_a.get("content")
    answer_a = reply_a.get("content")
    answer_b = reply_b.get("content")
    if (
        type(prompt) is str
        and type(answer_a) is str
        and type(answer_b) is str
        and prompt == user_b.get("content")
    ):
        return [new_turn((prompt, answer_a, answer_b, _NO_IMAGES))]
    return None


def _split_conversation(messages: Any, key: str) -> list[tuple[str, str | None]]:
    """[(prompt, answer or None)] from an OpenAI-style list of user and assistant messages."""
    if type(messages) is not list:
        raise Problem(f"{key} must be a list of messages, got {type(messages).__name__}")
    turns: list[tuple[str, str | None]] = []
    for number, message in enumerate(messages, start=1):
        if type(message) is not dict:
            raise Problem(f"{key} message {number} must be an object, got {type(message).__name__}")
        role = message.get("role")
        content = message.get("content")
        if type(content) is not str:
            raise Problem(f"{key} message {number}: content must be a string, got {type(content).__name__}")
        if role == "user":
            turns.append((content, None))
        elif role == "assistant":
            if not turns or turns[-1][1] is not None:
                raise Problem(f"{key} message {number}: an assistant message must follow a user message")
            turns[-1] = (turns[-1][0], content)
        else:
            raise Problem(f"{key} message {number}: role must be 'user' or 'assistant', got {role!r}")
    return turns


def _check_images(images: Any, turns: int) -> None:
    if type(images) is not list or len(images) != turns:
        raise Problem(f"images must be a list with one list of sha256 hashes per turn ({turns})")
    for number, hashes in enumerate(images, start=1):
        if type(hashes) is not list:
            raise Problem(f"images for turn {number} must be a list of sha256 hashes")
        for sha in hashes:
            if type(sha) is not str or not _SHA256.fullmatch(sha):
                raise Problem(f"images for turn {number}: {sha!r} is not a lowercase hex sha256")
