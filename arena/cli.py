"""Command line for arena operators: ``python -m arena admin <command> ...``.

The commands call the same :class:`arena.admin.AdminService` functions as the admin page, so a change
is validated and audited the same way wherever it comes from. Running arenas apply a model change
within ``ARENA_MODEL_REFRESH_S`` seconds (default 5).

Exit status: 0 done; 2 a request that was refused (unknown model, battle or session, a bad weight, no
change requested; one line on stderr, nothing changed); 1 the database could not be used.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from analysis.commands.options import positive_int
from arena.admin import AdminError, AdminService, ModelOverview, overview_records

EXIT_REFUSED = 2
EXIT_FAILED = 1


def parse_bool(text: str) -> bool:
    """argparse type for ``true``/``false`` (also yes/no, on/off, 1/0; any case)."""
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def default_actor() -> str:
    """Who the audit log names for a command-line change: ``cli:<login name>``."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = os.environ.get("USER") or "unknown"
    return f"cli:{user}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_models(rows: Sequence[ModelOverview]) -> str:
    """An aligned plain-text table of the models' settings, votes and recent performance."""
    header = [
        "model",
        "enabled",
        "weight",
        "deprecated",
        "votes",
        "votes_24h",
        "share_24h",
        "health",
        "ttft_p50_s",
        "ttft_p95_s",
        "tok/s",
        "errors",
    ]
    body = [
        [
            r.name,
            "yes" if r.enabled else "no",
            f"{r.sampling_weight:g}",
            "yes" if r.deprecated else "no",
            str(r.votes_total),
            str(r.votes_24h),
            _fmt(None if r.battle_share_24h is None else 100 * r.battle_share_24h, ".1f")
            + ("%" if r.battle_share_24h is not None else ""),
            r.health if len(r.health) <= 40 else r.health[:39] + "…",
            _fmt(r.ttft_median_s, ".2f"),
            _fmt(r.ttft_p95_s, ".2f"),
            _fmt(r.tokens_per_s, ".1f"),
            _fmt(None if r.error_rate is None else 100 * r.error_rate, ".1f")
            + ("%" if r.error_rate is not None else ""),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    left = {0, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def _describe(row: ModelOverview) -> str:
    sampled = "drawn in battles" if row.sampled else "not drawn in battles"
    return (
        f"model {row.name}: enabled={str(row.enabled).lower()}, weight={row.sampling_weight:g}, "
        f"deprecated={str(row.deprecated).lower()} ({sampled}; running arenas apply changes within "
        "ARENA_MODEL_REFRESH_S seconds)"
    )


def _models(service: AdminService, args: argparse.Namespace) -> str:
    rows = service.models_overview()
    if args.format == "json":
        return json.dumps(overview_records(rows), indent=2)
    return format_models(rows) if rows else "no models in this database"


def _set_model(service: AdminService, args: argparse.Namespace) -> str:
    row = service.set_model(
        args.actor, args.name, enabled=args.enabled, weight=args.weight, deprecated=args.deprecated
    )
    return _describe(row)


def _battle(excluded: bool) -> Callable[[AdminService, argparse.Namespace], str]:
    def run(service: AdminService, args: argparse.Namespace) -> str:
        service.set_battle_excluded(args.actor, args.battle_id, excluded)
        return f"battle {args.battle_id}: {'excluded from' if excluded else 'counted in'} ratings"

    return run


def _voter(banned: bool) -> Callable[[AdminService, argparse.Namespace], str]:
    def run(service: AdminService, args: argparse.Namespace) -> str:
        service.set_voter_banned(args.actor, args.session_id, banned)
        return f"voter session {args.session_id}: {'banned' if banned else 'not banned'}"

    return run


def _audit(service: AdminService, args: argparse.Namespace) -> str:
    rows = service.audit_log(args.limit)
    if args.format == "json":
        return json.dumps(
            [
                {
                    "created_at": r.created_at.isoformat(),
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "old": r.old,
                    "new": r.new,
                }
                for r in rows
            ],
            indent=2,
        )
    return (
        "\n".join(
            f"{r.created_at:%Y-%m-%d %H:%M:%S}Z  {r.actor}  {r.action}  {r.target}  "
            f"{json.dumps(r.old, sort_keys=True)} -> {json.dumps(r.new, sort_keys=True)}"
            for r in rows
        )
        or "the audit log is empty"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m arena`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m arena", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="admin")
    admin = groups.add_parser(
        "admin",
        help="operator actions: model settings, battle exclusion, voter bans, the audit log",
        description="Operator actions on an arena database (the same functions as the admin page).",
    )
    commands = admin.add_subparsers(dest="command", required=True)
    env_db = os.environ.get("ARENA_DB")

    def command(
        name: str, handler: Callable[[AdminService, argparse.Namespace], str], help: str, *, writes: bool
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--db",
            default=env_db,
            required=env_db is None,
            help="SQLAlchemy URL or SQLite file path of the arena database (default: $ARENA_DB)",
        )
        if writes:
            sub.add_argument(
                "--actor",
                default=default_actor(),
                help="who the audit log names for this change (default: cli:<your login name>)",
            )
        sub.set_defaults(handler=handler)
        return sub

    models = command(
        "models", _models, "list every model: settings, votes, recent speed and errors", writes=False
    )
    models.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format (default: table)"
    )

    set_model = command(
        "set-model",
        _set_model,
        "enable or disable a model, change its sampling weight, or deprecate it",
        writes=True,
    )
    set_model.add_argument("name", metavar="NAME", help="the model's name (as in `admin models`)")
    set_model.add_argument(
        "--enabled", type=parse_bool, metavar="true|false", help="whether battles may draw the model"
    )
    set_model.add_argument(
        "--weight",
        metavar="W",
        help="sampling weight, a finite number >= 0 (relative to the other models'; 0 never draws it)",
    )
    set_model.add_argument(
        "--deprecated",
        type=parse_bool,
        metavar="true|false",
        help="a deprecated model is never drawn but keeps its votes and place on leaderboards",
    )

    for name, excluded in (("exclude-battle", True), ("include-battle", False)):
        what = "leave a battle out of ratings" if excluded else "count an excluded battle in ratings again"
        sub = command(name, _battle(excluded), what, writes=True)
        sub.add_argument("battle_id", metavar="BATTLE_ID", help="the battle's id (question_id in exports)")
    for name, banned in (("ban-voter", True), ("unban-voter", False)):
        what = "ban a voter session (its votes stop counting)" if banned else "lift a voter session's ban"
        sub = command(name, _voter(banned), what, writes=True)
        sub.add_argument("session_id", metavar="SESSION_ID", help="the voter session's id")

    audit = command("audit", _audit, "print the most recent operator actions, newest first", writes=False)
    audit.add_argument("--limit", type=positive_int, default=50, help="how many entries (default: 50)")
    audit.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format (default: table)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m arena``; returns the process exit status."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from storage.db import make_engine, normalize_url, session_factory

    args = build_parser().parse_args(argv)
    url = make_url(normalize_url(args.db))
    where = url.render_as_string(hide_password=True)
    file = url.database if url.get_backend_name() == "sqlite" and url.database != ":memory:" else None
    if file and not Path(file).expanduser().is_file():  # never create an empty database by mistake
        print(f"error: no database file at {file}", file=sys.stderr)
        return EXIT_FAILED
    engine = make_engine(args.db)
    try:
        message = args.handler(AdminService(session_factory(engine)), args)
    except AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except SQLAlchemyError as exc:
        cause: Any = exc.orig if isinstance(exc, DBAPIError) else exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        hint = (
            " (is the schema there? python -m storage upgrade --db URL)"
            if "exist" in first or "no such table" in first
            else ""
        )
        print(f"error: {where}: {type(cause).__name__}: {first}{hint}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.dispose()
    print(message)
    return 0
