"""Reading battle files: the FastChat JSON list, JSON Lines and Parquet readers behind import, the
error a file that cannot be imported raises, and the constants they share."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

try:  # orjson comes with gradio; it parses JSON Lines about three times faster than json
    import orjson

    loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - exercised only without orjson
    loads = json.loads

DEFAULT_BATCH_SIZE = 50_000
PARQUET_MAGIC = b"PAR1"


class TransferError(ValueError):
    """A battle file that cannot be imported (or a database that cannot be exported), said in one line."""


class Key(msgspec.Struct, gc=False):
    question_id: str
    model_a: str
    model_b: str


KEY_DECODER = msgspec.json.Decoder(Key)


@dataclass
class Source:
    """An opened battle file: its records as (position, record), and what a position counts.

    Positions are 1-based: line numbers for JSONL, list indices for a JSON list, rows for Parquet.
    A record is its raw JSON text (``bytes`` or ``msgspec.Raw``, decoded while it is validated) or,
    from Parquet, a dict.
    """

    word: str
    records: Iterator[tuple[int, Any]]
    size: int = 0  # positions expected, for the progress bar (0: unknown)
    may_hold_nul: bool = True  # False when the file cannot contain a NUL character in a string
    #: Every record's question_id and models in one call, for JSON (see ``_scan``).
    keys: Callable[[], list[Key]] | None = None


def read_records(path: Path) -> Source:
    """Open a battle file, telling JSON list, JSONL and Parquet apart."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise TransferError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TransferError(f"{path}: is a directory") from None
    if head == PARQUET_MAGIC or path.suffix.lower() == ".parquet":
        return _read_parquet(path)
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    # JSON can only spell NUL as an escape; without one, no string needs the per-string check.
    may_hold_nul = b"\\u0000" in data
    stripped = data.lstrip()
    if not stripped:
        return Source("record", iter(()))
    if stripped[:1] == b"[":
        keys = partial(msgspec.json.decode, data, type=list[Key])
        return Source("record", _read_json_list(data, path), 0, may_hold_nul, keys)
    if stripped[:1] == b"{":
        keys = partial(KEY_DECODER.decode_lines, data)
        lines = data.split(b"\n")
        return Source("line", _read_jsonl(lines), len(lines), may_hold_nul, keys)
    raise TransferError(f"{path}: not a FastChat battle file (expected a JSON list, JSON Lines or Parquet)")


def _read_json_list(data: bytes, path: Path) -> Iterator[tuple[int, Any]]:
    """The list's items as raw JSON (split by msgspec without decoding them), else decoded by the
    general decoder, which also says what is wrong with a malformed file."""
    try:
        return enumerate(msgspec.json.decode(data, type=list[msgspec.Raw]), start=1)
    except msgspec.MsgspecError:
        pass
    try:
        items = loads(data)
    except ValueError as exc:
        raise TransferError(f"{path}: malformed or truncated JSON: {json_problem(exc, True)}") from None
    if not isinstance(items, list):
        raise TransferError(f"{path}: expected a JSON list of battle records")
    return enumerate(items, start=1)


def _read_jsonl(lines: list[bytes]) -> Iterator[tuple[int, bytes]]:
    return iter([(lineno, line) for lineno, line in enumerate(lines, start=1) if line and not line.isspace()])


def json_problem(exc: ValueError, with_line: bool) -> str:
    if isinstance(exc, json.JSONDecodeError):
        where = f"line {exc.lineno}, column {exc.colno}" if with_line else f"column {exc.colno}"
        return f"{exc.msg} ({where})"
    return str(exc)


def _read_parquet(path: Path) -> Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise TransferError(f"{path}: not a readable Parquet file: {exc}") from None

    def rows() -> Iterator[tuple[int, Any]]:
        position = 0
        for batch in parquet.iter_batches(batch_size=DEFAULT_BATCH_SIZE):
            for record in batch.to_pylist():
                position += 1
                # Parquet has no absent keys: a null optional column means "not given".
                yield position, {k: v for k, v in record.items() if v is not None}

    return Source("row", rows(), parquet.metadata.num_rows)
