"""``tokenmigration``: schema upgrade, one-machine migration and rollback, stats, cleanup, demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from tokenmigration.cli import api, local
from tokenmigration.cli.arguments import MAX_DEFAULT_WORKERS, default_workers, positive_int
from tokenmigration.cli.output import duration, table
from tokenmigration.cli.progress import ProgressBar
from tokenmigration.cli.prompt import CliError, confirm
from tokenmigration.config import ConfigError, Settings

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
__all__ = ["CliError", "build_parser", "confirm", "main"]


def _chunk_size(text: str) -> int:
    value = positive_int(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError("must be at most 10000")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenmigration",
        description="Move logged-in users from Express sessions (Redis) to Laravel Sanctum tokens and "
        "Laravel database sessions. Configuration comes from the environment (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="schema commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_sub.add_parser("upgrade", help="add this tool's columns and ledger tables (idempotent)")
    db_sub.add_parser("create-laravel-tables", help="create users, sessions, personal_access_tokens (demos/tests)")

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--chunk-size", type=_chunk_size, default=2000, help="users per chunk (default 2000)")
        p.add_argument("--workers", type=positive_int, default=default_workers(),
                       help=f"parallel worker processes (default: two per CPU, at most {MAX_DEFAULT_WORKERS})")
        p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
        p.add_argument("--json", action="store_true", help="print the summary as JSON")

    migrate = sub.add_parser("migrate", help="migrate every user on this machine")
    run_options(migrate)
    migrate.add_argument("--dry-run", action="store_true", help="compute the same counts, write nothing")
    migrate.add_argument("--errors-file", help="write every per-user/per-session problem as JSON lines here")

    rollback = sub.add_parser("rollback", help="remove everything this tool created, for every user")
    run_options(rollback)

    stats = sub.add_parser("stats", help="migration state, from the database")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")

    cleanup = sub.add_parser("cleanup", help="prune expired migration tokens, stale sessions, old ledger rows")
    cleanup.add_argument("--dry-run", action="store_true", help="report what would be removed")
    cleanup.add_argument("--json", action="store_true", help="print what was (or would be) removed as JSON")

    demo = sub.add_parser("demo", help="seed demo data, migrate it, check and print the result")
    demo.add_argument("--users", type=positive_int, default=3000, help="demo users (default 3000)")

    local.add_parser(sub)
    api.add_parser(sub)
    _know_your_parser(parser)
    return parser


def _know_your_parser(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command records its own parser, so that an unknown option is reported with the usage of the
    command it was given to (``migrate --bogus``), not the top level's: the deepest parser's default wins."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _know_your_parser(child)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _services(settings: Settings, redis: bool = False):
    """The migrator, with Redis only for the commands that read sessions: stats, cleanup and rollback work
    from the database alone, and must not fail for want of a REDIS_URL."""
    from tokenmigration.db.connection import make_engine
    from tokenmigration.engine.migrator import Migrator
    from tokenmigration.redis_client import connect

    settings.require(*(("database_url", "redis_url") if redis else ("database_url",)))
    engine = make_engine(settings.database_url)
    migrator = Migrator(settings, engine, connect(settings.redis_url) if redis else None)
    migrator.check_schema()
    if redis:
        # A Redis that does not answer now is a setting to fix, not a fault to retry for half a minute.
        migrator.redis.ping()
    return migrator


def _open_errors_file(path: str | None) -> TextIO | None:
    """Opened before the run: a path that cannot be written fails now, not after every user was migrated."""
    if not path:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as error:
        raise CliError(f"--errors-file {path}: {error.strerror or error}") from None


def _target(migrator) -> str:
    """The database a destructive verb acts on, as the operator configured it (password hidden)."""
    return migrator.engine.url.render_as_string(hide_password=True)


def _emit(data: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def cmd_db(args, settings: Settings) -> int:
    from tokenmigration.db.connection import make_engine
    from tokenmigration.db.upgrade import create_laravel_tables, upgrade

    settings.require("database_url")
    engine = make_engine(settings.database_url)
    done = upgrade(engine) if args.db_command == "upgrade" else create_laravel_tables(engine)
    print("\n".join(done) if done else "nothing to do: already up to date")
    return EXIT_OK


def run_summary_table(summary) -> str:
    rows: list[tuple[str, Any]] = [("run", summary.run_id)]
    if summary.kind == "migration":
        rows += [
            ("mode", "dry run (nothing written)" if summary.dry_run else "live"),
            ("users planned", f"{summary.total_users:,}"),
            ("users processed", f"{summary.processed_users:,}"),
            ("migrated", f"{summary.migrated_users:,}"),
            ("skipped", f"{summary.skipped_users:,}"),
        ]
        rows += [(f"  {reason}", f"{n:,}") for reason, n in sorted(summary.skip_reasons.items())]
        rows += [("failed", f"{summary.failed_users:,}"), ("sessions migrated", f"{summary.sessions_migrated:,}")]
        kinds = {k: v for k, v in summary.session_kinds.items() if k != "logged_in"}
        if kinds:
            rows.append(("other Express sessions", ""))
            rows += [(f"  {kind}", f"{n:,}") for kind, n in sorted(kinds.items())]
    else:
        rows += [
            ("users rolled back", f"{summary.migrated_users:,}"),
            ("tokens revoked", f"{summary.tokens_revoked:,}"),
            ("sessions removed", f"{summary.sessions_removed:,}"),
        ]
    if summary.retries:
        rows.append(("retried (transient)", f"{sum(summary.retries.values()):,}"))
        rows += [(f"  {what}", f"{n:,}") for what, n in sorted(summary.retries.items())]
    rows += [("elapsed", duration(summary.elapsed)), ("rate", f"{summary.rate:,.0f} users/s")]
    return table(rows)


def problems_table(problems, limit: int = 10) -> str:
    by_code = Counter(p.code for p in problems)
    examples = {}
    for p in problems:
        examples.setdefault(p.code, p)
    rows = [(code, f"{n:,}", examples[code].message) for code, n in by_code.most_common(limit)]
    return table(rows, headers=("problem", "count", "example"))


def cmd_migrate(args, settings: Settings) -> int:
    migrator = _services(settings, redis=True)
    if not args.dry_run:
        confirm(f"Migrate every user of {_target(migrator)} to Sanctum tokens and Laravel sessions?", args.yes)
    with _open_errors_file(args.errors_file) or contextlib.nullcontext() as errors_file:
        summary = _run_locally(args, settings, migrator,
                               lambda driver, bar: driver.migrate(args.chunk_size, args.dry_run, bar))
        for problem in summary.problems if errors_file is not None else ():
            errors_file.write(json.dumps(problem.to_dict()) + "\n")
    text = run_summary_table(summary)
    if summary.problems:
        text += "\n\n" + problems_table(summary.problems)
    _emit(summary.to_dict(), args.json, text)
    return EXIT_FAILURES if summary.failed_users else EXIT_OK


def cmd_rollback(args, settings: Settings) -> int:
    migrator = _services(settings)
    confirm(f"Remove every token and session this tool created in {_target(migrator)}, for every user?", args.yes)
    summary = _run_locally(args, settings, migrator, lambda driver, bar: driver.rollback(args.chunk_size, bar))
    _emit(summary.to_dict(), args.json, run_summary_table(summary))
    return EXIT_OK


def _run_locally(args, settings: Settings, migrator, go):
    """Run with a progress bar; when the run stops early, show what was committed, then say why in one line."""
    from tokenmigration.cli.errors import describe
    from tokenmigration.engine.errors import IndexWontFit
    from tokenmigration.local_driver import LocalDriver, RunStopped

    bar = ProgressBar(quiet=args.json)
    driver = LocalDriver(settings, migrator, args.workers, notice=bar.note)
    try:
        return go(driver, bar)
    except RunStopped as stopped:
        bar.close()
        summary = stopped.summary
        if isinstance(stopped.cause, IndexWontFit):
            # refused before the plan wrote anything: no run to report, nothing to continue
            raise CliError(str(stopped.cause)) from None
        _emit({**summary.to_dict(), "stopped": "interrupted" if stopped.cause is None else "failed"}, args.json,
              "stopped early; committed before it stopped:\n" + run_summary_table(summary))
        if stopped.cause is None:
            raise KeyboardInterrupt from None
        message = describe(stopped.cause)
        if message is None:
            raise stopped.cause from None  # a bug: its traceback is the report
        retried = sum(summary.retries.values())
        after = f" (after {retried} retr{'y' if retried == 1 else 'ies'})" if retried else ""
        raise CliError(f"{message}{after}; every finished chunk is committed, run again to continue") from None
    finally:
        bar.close()


def cmd_stats(args, settings: Settings) -> int:
    from tokenmigration.engine.reporting import stats

    data = stats(_services(settings).engine)
    _emit(data, args.json, table((k, v if v is not None else "-") for k, v in data.items()))
    return EXIT_OK


def cmd_cleanup(args, settings: Settings) -> int:
    from tokenmigration.engine.cleanup import cleanup

    migrator = _services(settings)
    data = cleanup(migrator.engine, settings, args.dry_run, migrator.has_expires_at,
                   session_store=migrator.session_store)
    verb = "would remove" if args.dry_run else "removed"
    text = table([(k.replace("_", " "), f"{v:,}") for k, v in data["details"].items()],
                 headers=("item", verb))
    _emit(data, args.json, text)
    return EXIT_OK


def cmd_demo(args, settings: Settings) -> int:
    from tokenmigration.cli.demo import run_demo

    return run_demo(settings, args.users)


def cmd_local(args, settings: Settings) -> int:
    from tokenmigration.cli.local import cmd_local as serve

    return serve(args, settings)


def cmd_api(args, settings: Settings) -> int:
    from tokenmigration.cli.api import cmd_api as client

    return client(args, settings)


COMMANDS = {"db": cmd_db, "migrate": cmd_migrate, "rollback": cmd_rollback, "stats": cmd_stats,
            "cleanup": cmd_cleanup, "demo": cmd_demo, "local": cmd_local, "api": cmd_api}


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (kill, systemd, docker stop) stops a command as Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        settings = Settings.from_env()
        return COMMANDS[args.command](args, settings)
    except (ConfigError, CliError) as exc:
        print(f"tokenmigration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.command in ("migrate", "rollback"):
            print("\ntokenmigration: interrupted; every finished chunk is committed, run again to continue",
                  file=sys.stderr)
        else:
            print("\ntokenmigration: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from tokenmigration.cli.errors import describe

        message = describe(exc)
        if message is None:
            raise
        print(f"tokenmigration: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
