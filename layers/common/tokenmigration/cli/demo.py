"""``tokenmigration demo``: seed, migrate, check, print. Embedded SQLite and Redis unless configured."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import delete, func, inspect, select

from tokenmigration.cli.output import table
from tokenmigration.cli.progress import ProgressBar
from tokenmigration.config import Settings
from tokenmigration.db.connection import make_engine
from tokenmigration.db.schema import laravel_users, ledger_failures, ledger_sessions, ledger_tokens, sessions, tokens
from tokenmigration.db.upgrade import create_laravel_tables, upgrade
from tokenmigration.demo_data import DEMO_EMAIL_DOMAIN, seed
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.reporting import stats
from tokenmigration.engine.verify import Check, token_verifies, verify_migrated
from tokenmigration.local_driver import LocalDriver
from tokenmigration.redis_client import connect

DEMO_PREFIX = "tokenmigration-demo:sess:"
DEMO_DIR = Path(".tokenmigration")


class DemoRefused(Exception):
    pass


def _step(text: str) -> None:
    print(f"\n== {text}")


def _open_database(settings: Settings):
    if settings.database_url:
        engine = make_engine(settings.database_url)
        return engine, f"{engine.url.render_as_string(hide_password=True)} (DATABASE_URL)"
    DEMO_DIR.mkdir(exist_ok=True)
    path = DEMO_DIR / "demo.sqlite"
    for leftover in DEMO_DIR.glob("demo.sqlite*"):
        leftover.unlink()
    return make_engine(f"sqlite:///{path}"), f"SQLite file {path} (embedded default)"


def _open_redis(settings: Settings):
    if settings.redis_url:
        return connect(settings.redis_url), "REDIS_URL"
    import fakeredis

    return fakeredis.FakeRedis(), "in-process Redis (embedded default)"


def _clear_previous_demo(engine, redis) -> None:
    """A configured database may hold an earlier demo; never anything else."""
    with engine.begin() as conn:
        foreign = conn.execute(
            select(func.count()).select_from(laravel_users)
            .where(~laravel_users.c.email.like(f"%@{DEMO_EMAIL_DOMAIN}"))
        ).scalar_one()
        if foreign:
            raise DemoRefused(f"the users table at DATABASE_URL holds {foreign:,} users that are not demo users; "
                              "the demo only runs on an empty or demo database")
        demo_ids = select(laravel_users.c.id)
        conn.execute(delete(tokens).where(tokens.c.tokenable_id.in_(demo_ids)))
        conn.execute(delete(sessions).where(sessions.c.user_id.in_(demo_ids)))
        for ledger in (ledger_tokens, ledger_sessions, ledger_failures):
            conn.execute(delete(ledger))
        conn.execute(delete(laravel_users))
    keys = list(redis.scan_iter(match=DEMO_PREFIX + "*", count=1000))
    for start in range(0, len(keys), 1000):
        redis.delete(*keys[start : start + 1000])


def run_demo(settings: Settings, users: int) -> int:
    started = time.monotonic()
    engine, db_label = _open_database(settings)
    redis, redis_label = _open_redis(settings)
    settings = settings.replace(express_session_prefix=DEMO_PREFIX)
    print(f"database: {db_label}\nredis:    {redis_label}, keys under {DEMO_PREFIX!r}")

    _step("schema: Laravel tables and this tool's additions")
    create_laravel_tables(engine)
    if inspect(engine).has_table("users"):
        upgrade(engine)
        try:
            _clear_previous_demo(engine, redis)
        except DemoRefused as exc:
            print(f"tokenmigration demo: {exc}")
            return 2

    _step(f"seeding {users:,} users and their Express sessions")
    report = seed(engine, redis, users, prefix=DEMO_PREFIX)
    print(table(sorted(report.sessions.items()), headers=("Express sessions", "count")))
    print(f"{len(report.users_with_tokens):,} users already hold a token the app made (they must be skipped)")

    migrator = Migrator(settings, engine, redis)
    driver = LocalDriver(settings, migrator, workers=2)

    _step("dry run: the same counts, nothing written")
    dry = driver.migrate(chunk_size=500, dry_run=True)
    print(f"would migrate {dry.migrated_users:,}, skip {dry.skipped_users:,}, "
          f"carry over {dry.sessions_migrated:,} sessions")

    _step("migration")
    bar = ProgressBar()
    summary = driver.migrate(chunk_size=500, progress=bar)
    bar.close()
    from tokenmigration.cli.main import problems_table, run_summary_table

    print(run_summary_table(summary))
    print("\nreported, never fatal:\n" + problems_table(summary.problems))

    _step("checks")
    checks = verify_migrated(engine, settings)
    expected_sessions = sum(n for uid, n in report.sessions_by_user.items() if uid not in report.users_with_tokens)
    holders = report.users_with_tokens
    with engine.connect() as conn:
        app_tokens = conn.execute(select(func.count()).select_from(tokens).where(tokens.c.name == "app-token")
                                  ).scalar_one()
    checks += [
        Check("every user migrated or skipped", summary.migrated_users + summary.skipped_users == users
              and summary.skipped_users == len(holders), f"{summary.migrated_users:,} + {summary.skipped_users:,}"),
        Check("every live session carried over", summary.sessions_migrated == expected_sessions,
              f"{summary.sessions_migrated:,} of {expected_sessions:,}"),
        Check("the app's own tokens untouched", app_tokens == len(holders), f"{app_tokens:,} app tokens"),
        Check("odd session values reported, not fatal",
              all(summary.session_kinds[k] for k in ("null_value", "not_json", "invalid_cookie")),
              f"{len(summary.problems):,} problems recorded"),
    ]

    again = driver.migrate(chunk_size=500)
    checks.append(Check("a second run changes nothing", again.migrated_users == 0 and again.failed_users == 0,
                        f"migrated {again.migrated_users}, skipped {again.skipped_users:,}"))

    # A delivered token must work with Sanctum's own lookup: undo one user, migrate them again
    # through the single-user path that hands out the plaintext (as the exchange will).
    uid = next(u for u in report.user_ids if u not in holders)
    migrator.rollback_user(uid)
    single = migrator.migrate_user(uid, "demo-single", deliver_token=True)
    bearer = single.token.plaintext(single.token_id)
    checks.append(Check("a delivered token passes Sanctum's findToken", token_verifies(engine, bearer),
                        f"user {uid}: token id {single.token_id}; the plaintext lived in memory only"))

    print(table(((("PASS" if c.ok else "FAIL"), c.name, c.detail) for c in checks),
                headers=("", "check", "detail")))

    _step("stats (from the database)")
    print(table((k, v if v is not None else "-") for k, v in stats(engine).items()))
    failed = [c for c in checks if not c.ok]
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s: "
          + ("all checks passed" if not failed else f"{len(failed)} check(s) FAILED"))
    return 1 if failed else 0
