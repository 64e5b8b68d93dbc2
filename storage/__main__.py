"""Command line for the arena's database.

python -m storage upgrade --db URL                 create or migrate the schema
python -m storage current --db URL                 print the schema revision
python -m storage forget --db URL --session ID     delete one voter's data (privacy requests)
python -m storage backup --db URL --out PATH       online backup of an SQLite database
python -m storage export --db URL --format fastchat|jsonl|parquet --out PATH [--images STORE --images-out DIR]
                                                   write voted battles as FastChat records (and their images)
python -m storage import --db URL PATH             load a FastChat battle file (all or nothing)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from storage.db import current_revision, make_engine, normalize_url, session_factory, upgrade

DEFAULT_DB = "sqlite:///arena.db"
IMAGES_HELP = (
    "the arena's image store (its ARENA_IMAGE_STORE, else ARENA_DATA_DIR/images): a directory "
    "or an fsspec URL such as s3://bucket/images"
)


@contextmanager
def _engine(args: argparse.Namespace) -> Iterator[Engine]:
    """An engine for the command's ``--db``, disposed when the command is done with it."""
    engine = make_engine(args.db)
    try:
        yield engine
    finally:
        engine.dispose()


def _upgrade(args: argparse.Namespace) -> str:
    upgrade(args.db, args.revision)
    return _current(args)


def _current(args: argparse.Namespace) -> str:
    with _engine(args) as engine:
        return f"database at revision {current_revision(engine) or '(empty)'}"


def _forget(args: argparse.Namespace) -> str:
    from storage.images import ImageStore
    from storage.maintenance import forget_session

    store = ImageStore(args.images) if args.images else None  # a directory or an fsspec URL
    with _engine(args) as engine:
        report = forget_session(session_factory(engine), args.session, store)
    if not report.session_found and not report.battles:
        raise LookupError(f"no voter session {args.session!r}")
    return (
        f"forgot session {args.session}: {report.battles} battles, {report.votes} votes, "
        f"{report.images} images only it uploaded ({report.image_files} files removed)"
    )


def _backup(args: argparse.Namespace) -> str:
    from storage.maintenance import backup_sqlite

    with _engine(args) as engine:
        pages = backup_sqlite(engine, args.out)
    return f"backed up {pages} pages to {args.out} (integrity check ok)"


def _export(args: argparse.Namespace) -> str:
    from storage.transfer.export import export_battles

    if (args.images is None) != (args.images_out is None):
        raise ValueError("--images and --images-out go together")
    with _engine(args) as engine:
        count = _one_line_errors(export_battles, engine, args.out, args.format)
        message = f"exported {count} battles to {args.out} ({args.format})"
        if args.images is not None:
            message += "; " + _one_line_errors(_export_images, engine, args.images, args.images_out)
    return message


def _export_images(engine: Engine, location: str, out_dir: Path) -> str:
    """Copy the images the exported battles refer to out of the image store, one file per hash."""
    from storage.images import ImageStore
    from storage.transfer.export import iter_export_records

    with engine.connect() as conn:
        hashes = [
            sha for record in iter_export_records(conn) for turn in record.get("images", []) for sha in turn
        ]
    copied, missing = ImageStore(location).copy_out(hashes, out_dir)
    lacking = f", {len(missing)} missing from the store (first: {missing[0]})" if missing else ""
    return f"copied {copied} images to {out_dir}{lacking}"


def _import(args: argparse.Namespace) -> str:
    from storage.transfer.importer import import_battles

    # A progress bar only for a person watching: logs and pipes get the summary line alone.
    progress = not args.no_progress and sys.stderr.isatty()
    with _engine(args) as engine:
        report = _one_line_errors(import_battles, engine, args.path, progress=progress)
    return report.summary()


def _one_line_errors(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn``; a database error becomes one line (the driver's first line, no SQL or links)."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    try:
        return fn(*args, **kwargs)
    except SQLAlchemyError as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        raise RuntimeError(f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m storage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], str], help: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--db", default=DEFAULT_DB, help=f"SQLAlchemy URL or SQLite file path (default {DEFAULT_DB})"
        )
        sub.set_defaults(handler=handler)
        return sub

    up = command("upgrade", _upgrade, "create the schema or migrate it to the newest revision")
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    command("current", _current, "print the schema revision the database is at")
    forget = command(
        "forget",
        _forget,
        "delete a voter session's battles, votes, feedback and the images only it uploaded",
    )
    forget.add_argument("--session", required=True, help="the voter session id")
    forget.add_argument("--images", metavar="STORE", help=IMAGES_HELP + ", to delete the files")
    backup = command("backup", _backup, "copy a live SQLite database with the online backup API")
    backup.add_argument("--out", type=Path, required=True, help="the backup file to write (must not exist)")

    export = command("export", _export, "write every voted battle as FastChat battle records")
    export.formatter_class = argparse.RawDescriptionHelpFormatter
    export.description = (
        "Write one record per voted battle (anonymous or named; direct chats are left out), ordered\n"
        "by vote time, in the FastChat / Chatbot Arena vocabulary: question_id, model_a, model_b,\n"
        "winner, judge, turn, anony, language, tstamp, conversation_a/b, images, reason.\n"
        "The same database always gives a byte-identical file."
    )
    export.epilog = (
        "formats:\n"
        "  fastchat  one JSON list (FastChat's clean_battle file), one record a line\n"
        "  jsonl     JSON Lines, one record a line\n"
        "  parquet   a Parquet table with the same columns (absent fields are nulls)\n\n"
        "example:\n"
        "  python -m storage export --db sqlite:///arena.db --format jsonl --out battles.jsonl"
    )
    export.add_argument(
        "--format", required=True, choices=("fastchat", "jsonl", "parquet"), help="output format"
    )
    export.add_argument("--out", type=Path, required=True, help="the file to write (replaced if it exists)")
    export.add_argument("--images", metavar="STORE", help=IMAGES_HELP + ", to copy the battles' images from")
    export.add_argument(
        "--images-out",
        type=Path,
        metavar="DIR",
        help="with --images: write every image the exported battles refer to here, as <sha256>.<ext>",
    )

    imp = command(
        "import", _import, "load a FastChat battle file (JSON list, JSONL or Parquet), all or nothing"
    )
    imp.formatter_class = argparse.RawDescriptionHelpFormatter
    imp.description = (
        "Load battle records into the database, all or nothing: every record is checked first, then\n"
        "everything is written in one transaction. A JSON list or JSONL is told apart by content,\n"
        "Parquet by its magic bytes. Required fields: question_id, model_a, model_b, winner;\n"
        "optional: judge, turn, anony (default true), language, tstamp (default now),\n"
        "conversation_a/b, images, reason. Unknown models are created disabled (backend\n"
        "'imported'), so live battles never sample them. A question_id already in the database\n"
        "refuses the whole import."
    )
    imp.epilog = (
        "exit status: 0 imported; 2 nothing imported (the reason is one line on stderr)\n\n"
        "example:\n"
        "  python -m storage import --db sqlite:///arena.db clean_battle_20240814.json"
    )
    imp.add_argument("path", type=Path, metavar="PATH", help="the battle file: JSON list, JSONL or Parquet")
    imp.add_argument(
        "--no-progress",
        action="store_true",
        help="draw no progress bar (one is drawn on stderr only when it is a terminal)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        message = args.handler(args)
    except Exception as exc:  # one clear line for the operator, not a traceback
        print(f"error: {normalize_url(args.db).split('@')[-1]}: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
