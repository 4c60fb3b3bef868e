"""``make bench-bridge-route``: the latency of ``POST /auth/migration/bridge`` itself, through the local twin.

What the Laravel bridge's first request pays on the server side (``make bench-laravel-bridge`` times the whole
page). The route is called as the Laravel app calls it: signed with SigV4 over HTTP, one request at a time.

1. A fresh PostgreSQL database (Laravel tables + ``db upgrade``) with 2N users, and one live Express session
   each for the first N in a dedicated Redis DB (FLUSHED), with their signed ``connect.sid`` values; 2% of the
   users hold a token the app made.
2. The local twin; a bulk run through the signed API. Then users N+1..2N log in (a new session each), and N
   more users are created and log in (users the run never saw).
3. Timed, for N users each: the first call for a **bulk-migrated** session (its carried row is found and
   touched), for a session that **logged in after the run** (a new row and its ledger row), for a user **not
   migrated** (migrated on the spot: token, row, ledger), a **repeated** call (found), and a **forged** cookie
   (401, the same work as any bad session). For reference, a signed ``GET /stats``.
4. p50/p95/mean/max of each, written to bench/results/bridge-route-latest.json.

A benchmark, not a test: numbers depend on the machine and are reported, never asserted. Exit status 0 when
every call answered what it should (200 with the user's row, or 401).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
from botocore.credentials import Credentials as BotoCredentials
from latency import summary
from sqlalchemy import create_engine, insert, text
from sqlalchemy.pool import NullPool

from tokenmigration.cli.api import ApiClient
from tokenmigration.cli.arguments import positive_int
from tokenmigration.db.connection import make_engine
from tokenmigration.db.schema import laravel_users, tokens
from tokenmigration.db.upgrade import create_laravel_tables, upgrade
from tokenmigration.formats import sanctum
from tokenmigration.formats.express import cookie_value
from tokenmigration.local.server import Credentials, start_in_background
from tokenmigration.local.twin import DEFAULT_EXPRESS_SECRET, LocalTwin

BENCH_DIR = Path(__file__).resolve().parent
KEY, SECRET, REGION = "AKIABRIDGEROUTE00001", "bridge-route-bench-secret-key", "us-east-1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Latency of POST /auth/migration/bridge through the local twin.")
    parser.add_argument("--requests", type=positive_int, default=200, help="calls per case (default 200)")
    parser.add_argument("--pg-server", default="postgresql+pg8000://postgres@127.0.0.1:5432/postgres",
                        help="URL of a database to issue CREATE/DROP DATABASE from")
    parser.add_argument("--database", default="tm_bench_bridge_route", help="database to create (dropped at the end)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15",
                        help="Redis DB for the Express sessions; it is FLUSHED (default DB 15)")
    return parser.parse_args(argv)


def put_sessions(store: redis.Redis, users: range) -> dict[int, str]:
    cookies: dict[int, str] = {}
    pipe = store.pipeline(transaction=False)
    for uid in users:
        sid = os.urandom(24).hex()[:32]
        doc = {"cookie": {"originalMaxAge": 86400000, "expires": None, "httpOnly": True, "path": "/"},
               "passport": {"user": uid}}
        pipe.set("sess:" + sid, json.dumps(doc), ex=86400)
        cookies[uid] = cookie_value(sid, DEFAULT_EXPRESS_SECRET)
    pipe.execute()
    return cookies


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.requests
    admin = create_engine(args.pg_server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{args.database}"'))
    database_url = args.pg_server.rsplit("/", 1)[0] + "/" + args.database
    engine = make_engine(database_url)
    store = redis.Redis.from_url(args.redis_url)
    store.flushdb()
    running = None
    try:
        create_laravel_tables(engine)
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(insert(laravel_users), [
                {"id": i, "name": f"User {i}", "email": f"u{i}@example.test", "password": "x"}
                for i in range(1, 2 * n + 1)])
            now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
            conn.execute(insert(tokens), [
                {"tokenable_type": "App\\Models\\User", "tokenable_id": i, "name": "app-token",
                 "token": sanctum.mint_token().hash, "abilities": '["*"]', "created_at": now, "updated_at": now}
                for i in range(1, 2 * n + 1, 50)])
        bulk = put_sessions(store, range(1, n + 1))

        twin = LocalTwin(database_url=database_url, redis_url=args.redis_url, region=REGION, log_level="ERROR",
                         extra_env={"POWERTOOLS_METRICS_DISABLED": "true",
                                    # every case below calls from one address: the throttle is not measured
                                    "EXCHANGE_FAILURE_LIMIT": str(10 * n)})
        running = start_in_background(twin, Credentials(KEY, SECRET, REGION))
        api = ApiClient(running.url, credentials=BotoCredentials(KEY, SECRET), region=REGION)
        started = api.request("POST", "/start", {"confirm": True})
        if started.status != 202:
            print(f"bench: /start refused: {started.text}", file=sys.stderr)
            return 1
        run_id = started.document["migration_id"]
        while (progress := api.request("GET", "/progress", query={"migration_id": run_id})
               .document["progress"])["status"] == "RUNNING":
            time.sleep(0.2)
        print(f"bulk run {progress['status']}: {progress['migrated_users']} migrated, "
              f"{progress['skipped_users']} skipped, {progress['sessions_migrated']} sessions")
        late = put_sessions(store, range(n + 1, 2 * n + 1))  # logged in after the run
        with engine.begin() as conn:  # signed up after the run
            conn.execute(insert(laravel_users), [
                {"id": i, "name": f"User {i}", "email": f"u{i}@example.test", "password": "x"}
                for i in range(2 * n + 1, 3 * n + 1)])
        fresh = put_sessions(store, range(2 * n + 1, 3 * n + 1))

        for _ in range(5):  # warm connections and the handler's imports
            api.request("GET", "/stats")
        cases: dict[str, list[float]] = {"bulk_migrated_first_call": [], "logged_in_after_run_first_call": [],
                                         "not_migrated_first_call": [], "repeated_call": [], "forged_cookie_401": [],
                                         "reference_get_stats": []}
        failures = 0
        answered: dict[int, str] = {}

        def timed(case: str, call, check) -> None:
            nonlocal failures
            began = time.perf_counter()
            response = call()
            cases[case].append(time.perf_counter() - began)
            if not check(response):
                failures += 1

        for uid, cookie in bulk.items():
            timed("bulk_migrated_first_call", lambda c=cookie: api.bridge(c, "203.0.113.9"),
                  lambda r, u=uid: r.status == 200 and r.document["user_id"] == u
                  and answered.setdefault(u, r.document["session_id"]) is not None)
        for uid, cookie in late.items():
            timed("logged_in_after_run_first_call", lambda c=cookie: api.bridge(c, "203.0.113.9"),
                  lambda r, u=uid: r.status == 200 and r.document["user_id"] == u)
        for uid, cookie in fresh.items():
            timed("not_migrated_first_call", lambda c=cookie: api.bridge(c, "203.0.113.9"),
                  lambda r, u=uid: r.status == 200 and r.document["user_id"] == u)
        for uid, cookie in bulk.items():
            timed("repeated_call", lambda c=cookie: api.bridge(c, "203.0.113.9"),
                  lambda r, u=uid: r.status == 200 and r.document["session_id"] == answered.get(u))
        for uid in bulk:
            forged = cookie_value(f"forged-{uid}", "not-the-secret")
            timed("forged_cookie_401", lambda c=forged: api.bridge(c, "203.0.113.10"),
                  lambda r: r.status == 401 and r.document == {"error": "invalid_grant"})
            timed("reference_get_stats", lambda: api.request("GET", "/stats"), lambda r: r.status == 200)

        report = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2),
                        "python": platform.python_version(), "system": platform.platform()},
            "requests_per_case": n,
            "database": "PostgreSQL", "transport": "HTTP to the local twin, SigV4-signed, one call at a time",
            **{case: summary(values) for case, values in cases.items()},
            "failures": failures,
        }
        print(json.dumps(report, indent=2))
        (BENCH_DIR / "results").mkdir(exist_ok=True)
        (BENCH_DIR / "results" / "bridge-route-latest.json").write_text(json.dumps(report, indent=2) + "\n")
        print("verdict: " + ("every call answered as it should" if failures == 0 else f"{failures} FAILED"))
        return 0 if failures == 0 else 1
    finally:
        if running is not None:
            running.stop()
        engine.dispose()
        store.flushdb()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))


if __name__ == "__main__":
    sys.exit(main())
