"""The one reader of battle files: FastChat JSON lists, JSON Lines and Parquet, as ``storage import``
and ``analysis`` read them and as ``storage export`` writes them.

The format is told by content: Parquet by its ``PAR1`` magic (or a ``.parquet`` name), a JSON list by
a leading ``[``, JSON Lines by a leading ``{``; a UTF-8 byte-order mark is skipped. Three ways in:

* :func:`read_records` opens a file for import: records stay raw JSON text (decoded while they are
  validated) and every record's question_id and models can be read in one call;
* :func:`iter_records` decodes every record, for readers that check records one by one;
* :func:`read_arrow_table` reads a well-formed file column-wise into a pyarrow table (optionally only
  some fields), the fast way in for analysis.

Problems are said as :class:`TransferError` (a ``ValueError``) naming the file and the line, record or
row at fault.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    import pyarrow as pa

try:  # orjson comes with gradio; it parses JSON about three times faster than json
    import orjson

    _fast_loads: Callable[[bytes | str], Any] | None = orjson.loads
except ImportError:  # pragma: no cover - exercised only without orjson
    _fast_loads = None

DEFAULT_BATCH_SIZE = 50_000
PARQUET_MAGIC = b"PAR1"
UTF8_BOM = b"\xef\xbb\xbf"

#: What a file holds: a JSON list, JSON Lines, Parquet, or nothing but white space.
Format = Literal["json", "jsonl", "parquet", "empty"]
#: What a record position counts, per format.
POSITION_WORDS: dict[str, str] = {"json": "record", "jsonl": "line", "parquet": "row", "empty": "record"}

_ASCII_SPACE = b" \t\n\r\x0b\x0c"


class TransferError(ValueError):
    """A battle file that cannot be imported (or a database that cannot be exported), said in one line."""


def loads(data: bytes | str) -> Any:
    """One JSON document, decoded as Python's json module would (NaN and Infinity included), by orjson
    when it can; raises ``ValueError`` (a ``json.JSONDecodeError`` with the place when malformed)."""
    if _fast_loads is not None:
        try:
            return _fast_loads(data)
        except ValueError:
            pass  # malformed, or a NaN/Infinity literal orjson refuses: json decides and explains
    return json.loads(data)


def json_problem(exc: ValueError, with_line: bool) -> str:
    """What is wrong with malformed JSON, with its place (the line only for a whole-file document)."""
    if isinstance(exc, json.JSONDecodeError):
        where = f"line {exc.lineno}, column {exc.colno}" if with_line else f"column {exc.colno}"
        return f"{exc.msg} ({where})"
    return str(exc)


@dataclass(frozen=True)
class BattleFile:
    """A battle file whose format is known; ``data`` holds a JSON file's bytes without a byte-order
    mark (None for Parquet)."""

    path: Path
    format: Format
    data: bytes | None = None

    @property
    def word(self) -> str:
        """What a record position counts: line (JSONL), record (JSON list) or row (Parquet)."""
        return POSITION_WORDS[self.format]


def open_battle_file(path: str | Path) -> BattleFile:
    """Open a battle file and tell its format; raises :class:`TransferError` for a missing file, a
    directory, or content that is no battle file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise TransferError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TransferError(f"{path}: is a directory") from None
    if head == PARQUET_MAGIC or path.suffix.lower() == ".parquet":
        return BattleFile(path, "parquet")
    data = path.read_bytes()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    start = data.lstrip(_ASCII_SPACE)[:1]
    if not start:
        return BattleFile(path, "empty", data)
    if start == b"[":
        return BattleFile(path, "json", data)
    if start == b"{":
        return BattleFile(path, "jsonl", data)
    raise TransferError(f"{path}: not a FastChat battle file (expected a JSON list, JSON Lines or Parquet)")


def detect_format(path: str | Path) -> Format:
    """The format of a battle file (see :func:`open_battle_file`)."""
    return open_battle_file(path).format


class Key(msgspec.Struct, gc=False):
    """The fields of a record that an import needs before it validates anything."""

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
    #: Every record's question_id and models in one call, for JSON (see the importer's first pass).
    keys: Callable[[], list[Key]] | None = None


def read_records(path: Path) -> Source:
    """Open a battle file for import: its records, raw where it is JSON."""
    file = open_battle_file(path)
    if file.format == "parquet":
        return _parquet_source(path)
    data = file.data or b""
    # JSON can only spell NUL as an escape; without one, no string needs the per-string check.
    may_hold_nul = b"\\u0000" in data
    if file.format == "empty":
        return Source("record", iter(()))
    if file.format == "json":
        keys = partial(msgspec.json.decode, data, type=list[Key])
        return Source("record", _raw_json_list(data, path), 0, may_hold_nul, keys)
    keys = partial(KEY_DECODER.decode_lines, data)
    lines = data.split(b"\n")
    return Source("line", _raw_jsonl(lines), len(lines), may_hold_nul, keys)


def _raw_json_list(data: bytes, path: Path) -> Iterator[tuple[int, Any]]:
    """The list's items as raw JSON (split by msgspec without decoding them), else decoded by the
    general decoder, which also says what is wrong with a malformed file."""
    try:
        return enumerate(msgspec.json.decode(data, type=list[msgspec.Raw]), start=1)
    except msgspec.MsgspecError:
        pass
    return iter(_decode_json_list(data, path))


def _raw_jsonl(lines: list[bytes]) -> Iterator[tuple[int, bytes]]:
    return iter([(lineno, line) for lineno, line in enumerate(lines, start=1) if line and not line.isspace()])


def _decode_json_list(data: bytes, path: Path) -> list[tuple[int, Any]]:
    try:
        items = loads(data)
    except ValueError as exc:
        _refuse_non_utf8(data, path)
        raise TransferError(
            f"{path}: malformed or truncated JSON at {_json_place(exc)}: {_json_message(exc)}"
        ) from None
    if not isinstance(items, list):
        raise TransferError(f"{path}: expected a JSON list of battle records")
    return list(enumerate(items, start=1))


def decode_record(path: Path, word: str, position: int, raw: Any) -> Any:
    """One raw JSON record (a line or a list item), decoded; malformed JSON raises TransferError."""
    try:
        return loads(bytes(raw))
    except ValueError as exc:
        _refuse_non_utf8(bytes(raw), path)
        raise TransferError(
            f"{path}: {word} {position}: malformed or truncated JSON record: {json_problem(exc, False)}"
        ) from None


def iter_records(file: BattleFile | str | Path) -> Iterator[tuple[int, Any]]:
    """Every record of a battle file, decoded, with its 1-based position (see ``BattleFile.word``).

    JSON records may be anything JSON holds (the caller checks them); Parquet rows are dicts without
    their null columns (Parquet has no absent keys). Blank JSONL lines are skipped but counted.
    """
    if not isinstance(file, BattleFile):
        file = open_battle_file(file)
    if file.format == "parquet":
        yield from _parquet_rows(_open_parquet(file.path))
        return
    data = file.data or b""
    if file.format == "json":
        yield from _decode_json_list(data, file.path)
    elif file.format == "jsonl":
        for lineno, line in _raw_jsonl(data.split(b"\n")):
            yield lineno, decode_record(file.path, "line", lineno, line)


def _json_place(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}"
    return "an unknown place"


def _json_message(exc: ValueError) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def _refuse_non_utf8(data: bytes, path: Path) -> None:
    """Say so when undecodable JSON is not even UTF-8 (JSON files are UTF-8)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TransferError(f"{path}: not a UTF-8 text file ({exc.reason})") from None


def _open_parquet(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise TransferError(f"{path}: not a readable Parquet file: {exc}") from None


def _parquet_rows(parquet: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    position = 0
    for batch in parquet.iter_batches(batch_size=DEFAULT_BATCH_SIZE):
        for record in batch.to_pylist():
            position += 1
            # Parquet has no absent keys: a null optional column means "not given".
            yield position, {k: v for k, v in record.items() if v is not None}


def _parquet_source(path: Path) -> Source:
    parquet = _open_parquet(path)
    return Source("row", _parquet_rows(parquet), parquet.metadata.num_rows)


# ------------------------------------------------------------------------ column-wise (pyarrow) reading


def read_arrow_table(
    file: BattleFile | str | Path,
    fields: Mapping[str, str] | None = None,
    required: tuple[str, ...] = (),
) -> pa.Table | None:
    """A well-formed battle file as a pyarrow table, one column per record field; None when it
    cannot be read column-wise (malformed, records that are not objects, a ``required`` field null
    in some JSON list record, values of one field too mixed to type): :func:`iter_records` then reads
    it record by record and says what is wrong. An empty file gives None as well.

    ``fields`` maps the record fields wanted to their Arrow type names (``string``, ``bool``,
    ``int64``, ``float64``): the others are skipped, which halves the time on big JSON files; a
    wanted field no record has comes back as a column of nulls from JSON (absent from Parquet).
    JSON Lines go through pyarrow's multithreaded JSON reader, a JSON list through orjson, Parquet
    through pyarrow.parquet.
    """
    import pyarrow as pa

    if not isinstance(file, BattleFile):
        file = open_battle_file(file)
    try:
        if file.format == "parquet":
            return _arrow_parquet(file.path, fields)
        data = file.data
        if data is None or file.format == "empty":
            return None
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return None
        if file.format == "jsonl":
            return _arrow_jsonl(data, fields)
        return _arrow_json_list(data, fields, required)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None


_ARROW_TYPES = ("string", "bool", "float64", "int64")


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    if name not in _ARROW_TYPES:
        raise ValueError(f"unknown field type {name!r}")
    return {"string": pa.string(), "bool": pa.bool_(), "float64": pa.float64(), "int64": pa.int64()}[name]


def _arrow_parquet(path: Path, fields: Mapping[str, str] | None) -> pa.Table:
    import pyarrow.parquet as pq

    if fields is None:
        return pq.read_table(path)
    present = set(pq.read_schema(path).names)
    return pq.read_table(path, columns=[name for name in sorted(fields) if name in present])


def _arrow_jsonl(data: bytes, fields: Mapping[str, str] | None) -> pa.Table:
    """JSON Lines parsed by pyarrow (multithreaded C++); raises on anything it cannot type."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    if fields is not None:
        schema = pa.schema([(name, _arrow_type(fields[name])) for name in sorted(fields)])
        options = pa_json.ParseOptions(
            newlines_in_values=False, explicit_schema=schema, unexpected_field_behavior="ignore"
        )
    else:
        options = pa_json.ParseOptions(newlines_in_values=False)
    return pa_json.read_json(pa.BufferReader(pa.py_buffer(data)), parse_options=options)


def _arrow_json_list(
    data: bytes, fields: Mapping[str, str] | None, required: tuple[str, ...]
) -> pa.Table | None:
    """A JSON list of record objects as an Arrow table (None: leave it to the record reader)."""
    if _fast_loads is None:
        return None
    import pyarrow as pa

    items = _fast_loads(data)
    if type(items) is not list or not all(type(item) is dict for item in items):
        return None
    columns: dict[str, None] = {}
    for item in items:
        columns.update(dict.fromkeys(item))
    if fields is not None:
        columns = {name: None for name in columns if name in fields}
    arrays = {}
    for name in columns:
        values = [item.get(name) for item in items]
        if name in required and None in values:
            return None
        arrays[name] = pa.array(values)
    return pa.table(arrays) if arrays else None
