"""Command line for the arena's database: ``python -m storage upgrade --db URL``."""

from __future__ import annotations

import argparse
import sys

from storage.db import current_revision, make_engine, normalize_url, upgrade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upgrade", help="create the schema or migrate it to the newest revision")
    up.add_argument("--db", default="sqlite:///arena.db", help="SQLAlchemy URL or SQLite file path")
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    cur = commands.add_parser("current", help="print the schema revision the database is at")
    cur.add_argument("--db", default="sqlite:///arena.db", help="SQLAlchemy URL or SQLite file path")
    args = parser.parse_args(argv)

    try:
        if args.command == "upgrade":
            upgrade(args.db, args.revision)
        engine = make_engine(args.db)
        revision = current_revision(engine)
        engine.dispose()
    except Exception as exc:  # one clear line for the operator, not a traceback
        print(f"error: {normalize_url(args.db).split('@')[-1]}: {exc}", file=sys.stderr)
        return 2
    print(f"database at revision {revision or '(empty)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
