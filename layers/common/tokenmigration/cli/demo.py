"""``tokenmigration demo``: the deployed shape of the product on this machine, start to finish.

Seeds demo users and Express sessions, starts the local twin of the AWS application in-process (the same
handlers, the real state machines on moto), then drives it like an operator with the SigV4-signed client:
a dry run, a migration with a live progress bar, stats, and one demo user's Express session exchanged for a
Sanctum token. It ends by checking the database against what unmodified Laravel accepts. Embedded SQLite and
Redis unless DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import delete, func, select

from tokenmigration.cli.output import table
from tokenmigration.config import Settings
from tokenmigration.db.connection import make_engine
from tokenmigration.db.schema import (
    USER_LEDGERS,
    laravel_users,
    sessions,
    tokens,
)
from tokenmigration.db.upgrade import create_laravel_tables, upgrade
from tokenmigration.demo_data import DEMO_EMAIL_DOMAIN, seed
from tokenmigration.engine import ledger
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.reporting import stats
from tokenmigration.engine.verify import Check, token_verifies, verify_migrated
from tokenmigration.formats.express import SessionDecoder, SessionKind, cookie_value
from tokenmigration.redis_client import connect

DEMO_PREFIX = "tokenmigration-demo:sess:"
DEMO_DIR = Path(".tokenmigration")
CHUNK_SIZE = 500
EXPRESS_SECRET = "demo-express-secret"


class DemoRefused(Exception):
    pass


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _open_database(settings: Settings) -> tuple[str, str]:
    if settings.database_url:
        return settings.database_url, "DATABASE_URL"
    DEMO_DIR.mkdir(exist_ok=True)
    path = DEMO_DIR / "demo.sqlite"
    for leftover in DEMO_DIR.glob("demo.sqlite*"):
        leftover.unlink()
    return f"sqlite:///{path}", f"SQLite file {path} (embedded default)"


def _clear_previous_demo(engine, redis, session_store=None) -> None:
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
        if session_store is not None:  # the redis driver: the sessions an earlier demo carried are keys
            session_store.delete_many(conn.execute(ledger.session_ids(conn)).scalars())
        conn.execute(delete(tokens).where(tokens.c.tokenable_id.in_(demo_ids)))
        conn.execute(delete(sessions).where(sessions.c.user_id.in_(demo_ids)))
        for table in USER_LEDGERS:
            conn.execute(delete(table))
        conn.execute(delete(laravel_users))
    pipe = redis.pipeline(transaction=False)
    for key in redis.scan_iter(match=DEMO_PREFIX + "*", count=1000):
        pipe.delete(key)  # one key per command: no cross-slot DEL on a cluster
    pipe.execute()


def _a_live_session(redis, holders: set[int]) -> tuple[str, int]:
    """One logged-in demo session (of a user the run migrated), to exchange."""
    decoder = SessionDecoder()
    for key in redis.scan_iter(match=DEMO_PREFIX + "*", count=1000):
        parsed = decoder.parse(redis.get(key))
        if parsed.kind is SessionKind.LOGGED_IN and parsed.user_id not in holders:
            return key.decode()[len(DEMO_PREFIX):], parsed.user_id
    raise RuntimeError("the demo data holds no logged-in session")


def _run(client, body: dict) -> dict:
    from tokenmigration.cli.api import watch

    started = client.request("POST", "/start", body={"confirm": True, "chunk_size": CHUNK_SIZE, **body})
    if not started.ok:
        raise RuntimeError(f"POST /start answered {started.status}: {started.message}")
    finished = watch(client, started.document["migration_id"], interval=0.2)
    return (finished.document or {}).get("progress") or {}


def run_demo(settings: Settings, users: int) -> int:
    from botocore.credentials import Credentials as BotoCredentials

    from tokenmigration.cli.api import ApiClient
    from tokenmigration.local.server import Credentials, start_in_background
    from tokenmigration.local.twin import EmbeddedRedis, LocalTwin

    started = time.monotonic()
    database_url, db_label = _open_database(settings)
    embedded = None
    if settings.redis_url:
        redis_url, redis_label = settings.redis_url, "REDIS_URL"
    else:
        embedded = EmbeddedRedis.start()
        redis_url, redis_label = embedded.url, "embedded Redis (in this process)"
    try:
        engine = make_engine(database_url)
        redis = connect(redis_url)
        print(f"database: {db_label}\nredis:    {redis_label}, keys under {DEMO_PREFIX!r}")

        _step("schema: Laravel tables and this tool's additions")
        create_laravel_tables(engine)
        upgrade(engine)
        try:
            _clear_previous_demo(engine, redis, Migrator(settings, engine, redis).session_store)
        except DemoRefused as exc:
            print(f"tokenmigration demo: {exc}")
            return 2

        _step(f"seeding {users:,} users and their Express sessions")
        report = seed(engine, redis, users, prefix=DEMO_PREFIX)
        print(table(sorted(report.sessions.items()), headers=("Express sessions", "count")))
        holders = set(report.users_with_tokens)
        print(f"{len(holders):,} users already hold a token the app made (they must be skipped)")

        _step("the AWS application on this machine: API, Lambdas, state machines (moto), signed requests")
        key, secret, region = "AKIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30), "us-east-1"
        twin = LocalTwin(database_url=database_url, redis_url=redis_url, region=region, log_level="ERROR",
                         extra_env={"EXPRESS_SESSION_PREFIX": DEMO_PREFIX, "EXPRESS_SESSION_SECRETS": EXPRESS_SECRET,
                                    "FLAGS_MAX_AGE_SECONDS": "0",
                                    # CloudWatch metric documents mean nothing on a terminal
                                    "POWERTOOLS_METRICS_DISABLED": "true"})
        with start_in_background(twin, Credentials(key, secret, region)) as server:
            client = ApiClient(server.url, credentials=BotoCredentials(key, secret), region=region)
            print(f"serving {server.url} (SigV4, key {key})")

            _step("dry run through the state machine: the same counts, nothing written")
            dry = _run(client, {"dry_run": True})
            print(f"would migrate {dry.get('migrated_users', 0):,}, skip {dry.get('skipped_users', 0):,}, "
                  f"carry over {dry.get('sessions_migrated', 0):,} sessions")

            _step("migration: POST /start, then GET /progress until it ends")
            run = _run(client, {})
            print(table((k, run.get(k)) for k in ("migration_id", "status", "total_users", "processed_users",
                                                  "migrated_users", "skipped_users", "failed_migrations",
                                                  "sessions_migrated", "total_batches", "percentage")))
            problems = client.request("GET", "/errors", query={"migration_id": run.get("migration_id"),
                                                               "limit": 100}).document or {}
            codes = Counter(e["code"] for e in problems.get("errors", []))
            print("\nreported, never fatal (first page of GET /errors):\n"
                  + table(sorted(codes.items()), headers=("problem", "count")))

            _step("stats (GET /stats, from the database)")
            stats_doc = client.request("GET", "/stats").document or {}
            shown = {**(stats_doc.get("stats") or {}), **(stats_doc.get("feature_flags") or {})}
            print(table(shown.items()))

            _step("exchange: a browser's live Express session becomes a Sanctum token (POST /exchange, unsigned)")
            sid, owner = _a_live_session(redis, holders)
            exchanged = client.request("POST", "/exchange", signed=False, body={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": cookie_value(sid, EXPRESS_SECRET),
                "subject_token_type": "urn:tokenmigration:express-session"})
            bearer = (exchanged.document or {}).get("access_token", "")
            print(f"user {owner}: HTTP {exchanged.status}, token id {bearer.split('|')[0] or '-'} "
                  "(the plaintext is shown to the client only)")

            again = _run(client, {})

        _step("checks")
        # With LARAVEL_SESSION_DRIVER=redis the sessions are keys in Laravel's Redis, not rows.
        checks = verify_migrated(engine, settings, Migrator(settings, engine, redis).session_store)
        # Skipped users (the app's token holders) keep their sessions too: skipping is about the token only.
        expected_sessions = sum(report.sessions_by_user.values())
        with engine.connect() as conn:
            app_tokens = conn.execute(select(func.count()).select_from(tokens).where(tokens.c.name == "app-token")
                                      ).scalar_one()
        checks += [
            Check("the run succeeded through the state machine", run.get("status") == "SUCCEEDED",
                  f"{run.get('total_batches', 0)} chunks"),
            Check("every user migrated or skipped", run.get("migrated_users", 0) + run.get("skipped_users", 0) == users
                  and run.get("skipped_users") == len(holders),
                  f"{run.get('migrated_users', 0):,} + {run.get('skipped_users', 0):,}"),
            Check("every live session carried over", run.get("sessions_migrated") == expected_sessions,
                  f"{run.get('sessions_migrated', 0):,} of {expected_sessions:,}"),
            Check("the dry run counted the same", (dry.get("migrated_users"), dry.get("sessions_migrated"))
                  == (run.get("migrated_users"), run.get("sessions_migrated")), "and wrote nothing"),
            Check("the app's own tokens untouched", app_tokens == len(holders), f"{app_tokens:,} app tokens"),
            Check("odd session values reported, not fatal", {"null_value", "not_json", "invalid_cookie"} <= set(codes),
                  f"{sum(codes.values()):,} problems on the first page"),
            Check("a second run changes nothing",
                  again.get("migrated_users") == 0 and again.get("sessions_migrated") == 0
                  and again.get("status") == "SUCCEEDED",
                  f"migrated {again.get('migrated_users')}, skipped {again.get('skipped_users', 0):,}"),
            Check("the exchanged token passes Sanctum's findToken", exchanged.status == 200
                  and token_verifies(engine, bearer), f"user {owner}"),
        ]
        print(table(((("PASS" if c.ok else "FAIL"), c.name, c.detail) for c in checks),
                    headers=("", "check", "detail")))

        _step("stats (from the database)")
        print(table((k, v if v is not None else "-") for k, v in stats(engine).items()))
        failed = [c for c in checks if not c.ok]
        print(f"\ndemo finished in {time.monotonic() - started:.1f} s: "
              + ("all checks passed" if not failed else f"{len(failed)} check(s) FAILED"))
        sys.stdout.flush()
        return 1 if failed else 0
    finally:
        if embedded is not None:
            embedded.stop()
