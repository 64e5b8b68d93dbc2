"""Command line for the arena's database.

    python -m storage upgrade --db URL                 create or migrate the schema
    python -m storage current --db URL                 print the schema revision
    python -m storage forget --db URL --session ID     delete one voter's data (privacy requests)
    python -m storage backup --db URL --out PATH       online backup of an SQLite database
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from storage.db import current_revision, make_engine, normalize_url, session_factory, upgrade

DEFAULT_DB = "sqlite:///arena.db"


def _upgrade(args: argparse.Namespace) -> str:
    upgrade(args.db, args.revision)
    return _current(args)


def _current(args: argparse.Namespace) -> str:
    engine = make_engine(args.db)
    try:
        return f"database at revision {current_revision(engine) or '(empty)'}"
    finally:
        engine.dispose()


def _forget(args: argparse.Namespace) -> str:
    from storage.images import ImageStore
    from storage.maintenance import forget_session

    engine = make_engine(args.db)
    try:
        store = ImageStore(args.images) if args.images else None
        report = forget_session(session_factory(engine), args.session, store)
    finally:
        engine.dispose()
    if not report.session_found and not report.battles:
        raise LookupError(f"no voter session {args.session!r}")
    return (
        f"forgot session {args.session}: {report.battles} battles, {report.votes} votes, "
        f"{report.images} images only it uploaded ({report.image_files} files removed)"
    )


def _backup(args: argparse.Namespace) -> str:
    from storage.maintenance import backup_sqlite

    engine = make_engine(args.db)
    try:
        pages = backup_sqlite(engine, args.out)
    finally:
        engine.dispose()
    return f"backed up {pages} pages to {args.out} (integrity check ok)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m storage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], str], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--db", default=DEFAULT_DB, help=f"SQLAlchemy URL or SQLite file path (default {DEFAULT_DB})")
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
    forget.add_argument("--images", type=Path, help="the arena's image folder (ARENA_DATA_DIR/images), to delete files")
    backup = command("backup", _backup, "copy a live SQLite database with the online backup API")
    backup.add_argument("--out", type=Path, required=True, help="the backup file to write (must not exist)")
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
