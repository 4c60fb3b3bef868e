"""``make bench-laravel-bridge``: what the bridge costs a browser, through the local twin.

1. A fresh PostgreSQL database (Laravel tables + ``db upgrade``), N users, and N live Express sessions in a
   dedicated Redis DB, as connect-redis writes them (passport.user), with their signed ``connect.sid`` values.
2. The local twin (template routes over HTTP, SigV4 checked, the real state machine) migrates them in bulk.
3. The minimal Laravel app of the browser test (Debian's Laravel 8, PHP's built-in server) with the bridge.
4. For each user, timed one after another from this process: the **bridged first request** (``connect.sid``
   only: the middleware calls the twin's ``/bridge``, switches the session, the page says "logged in as"),
   then an **ordinary request** of the same browser (its new Laravel session cookie, plus ``connect.sid`` as
   a browser keeps sending it), and a guest request with no cookie for reference. The route's handler is
   timed inside the twin too, to tell its share of the bridged request from PHP's and the HTTP hop's.
5. p50/p95 of each; the number of bridge calls the ordinary requests made (must be 0). Written to
   bench/results/bridge-latest.json.

Exit status 0 when every bridged request logged its user in and ordinary requests made no bridge call.
This is a benchmark, not a test: the numbers depend on the machine and are reported, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
from botocore.credentials import Credentials as BotoCredentials
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "tests" / "bridge"))

from latency import summary  # noqa: E402

from harness import laravel_server, require_tools  # noqa: E402
from tokenmigration.cli.api import ApiClient  # noqa: E402
from tokenmigration.cli.arguments import positive_int  # noqa: E402
from tokenmigration.db.connection import make_engine  # noqa: E402
from tokenmigration.db.schema import laravel_users  # noqa: E402
from tokenmigration.db.upgrade import create_laravel_tables, upgrade  # noqa: E402
from tokenmigration.formats.express import cookie_value  # noqa: E402
from tokenmigration.local.server import Credentials, start_in_background  # noqa: E402
from tokenmigration.local.twin import DEFAULT_EXPRESS_SECRET, LocalTwin  # noqa: E402

KEY, SECRET, REGION = "AKIABRIDGEBENCH00001", "bridge-bench-secret-access-key", "us-east-1"
COOKIE = "laravel_session"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Latency of the Laravel bridge's first request, through the twin.")
    parser.add_argument("--requests", type=positive_int, default=200, help="browsers (users) to time (default 200)")
    parser.add_argument("--pg-server", default="postgresql+pg8000://postgres@127.0.0.1:5432/postgres",
                        help="URL of a database to issue CREATE/DROP DATABASE from")
    parser.add_argument("--database", default="tm_bench_bridge", help="database to create (dropped at the end)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12",
                        help="Redis DB for the Express sessions; it is FLUSHED (default DB 12)")
    return parser.parse_args(argv)


def get(port: int, cookies: dict[str, str]) -> tuple[float, int, str, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
    started = time.perf_counter()
    conn.request("GET", "/", headers=headers)
    answer = conn.getresponse()
    body = answer.read().decode()
    elapsed = time.perf_counter() - started
    set_cookies = [v for k, v in answer.getheaders() if k.lower() == "set-cookie"]
    conn.close()
    return elapsed, answer.status, body, set_cookies


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_tools()
    admin = create_engine(args.pg_server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{args.database}"'))
    database_url = args.pg_server.rsplit("/", 1)[0] + "/" + args.database
    engine = make_engine(database_url)
    store = redis.Redis.from_url(args.redis_url)
    store.flushdb()
    workdir = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    running = None
    laravel = None
    try:
        create_laravel_tables(engine)
        upgrade(engine)
        n = args.requests
        with engine.begin() as conn:
            conn.execute(insert(laravel_users), [
                {"id": i, "name": f"User {i}", "email": f"u{i}@example.test", "password": "x"}
                for i in range(1, n + 1)])
        cookies: dict[int, str] = {}
        pipe = store.pipeline(transaction=False)
        for i in range(1, n + 1):
            sid = os.urandom(24).hex()[:32]
            doc = {"cookie": {"originalMaxAge": 86400000, "expires": None, "httpOnly": True, "path": "/"},
                   "passport": {"user": i}}
            pipe.set("sess:" + sid, json.dumps(doc), ex=86400)
            cookies[i] = cookie_value(sid, DEFAULT_EXPRESS_SECRET)
        pipe.execute()

        twin = LocalTwin(database_url=database_url, redis_url=args.redis_url, region=REGION, log_level="ERROR",
                         extra_env={"POWERTOOLS_METRICS_DISABLED": "true"})
        running = start_in_background(twin, Credentials(KEY, SECRET, REGION))
        calls: list[float] = []  # seconds the bridge route's handler took, per call
        invoke = twin.invoke

        def counting_invoke(name, event):
            if not str(event.get("path", "")).endswith("/bridge"):
                return invoke(name, event)
            started = time.perf_counter()
            try:
                return invoke(name, event)
            finally:
                calls.append(time.perf_counter() - started)

        twin.invoke = counting_invoke
        api = ApiClient(running.url, credentials=BotoCredentials(KEY, SECRET), region=REGION)
        started = api.request("POST", "/start", {"confirm": True})
        assert started.status == 202, started.text
        run_id = started.document["migration_id"]
        while (progress := api.request("GET", "/progress", query={"migration_id": run_id})
               .document["progress"])["status"] == "RUNNING":
            time.sleep(0.2)
        print(f"bulk run {progress['status']}: {progress['migrated_users']} users, "
              f"{progress['sessions_migrated']} sessions")

        url = make_url(database_url)
        laravel = laravel_server(workdir, {
            "APP_KEY": twin.app_key, "DB_CONNECTION": "pgsql", "DB_HOST": url.host or "127.0.0.1",
            "DB_PORT": str(url.port or 5432), "DB_DATABASE": url.database, "DB_USERNAME": url.username or "postgres",
            "DB_PASSWORD": url.password or "", "SESSION_COOKIE": COOKIE,
            "TOKENMIGRATION_API_URL": running.url, "TOKENMIGRATION_API_REGION": REGION,
            "TOKENMIGRATION_AWS_ACCESS_KEY_ID": KEY, "TOKENMIGRATION_AWS_SECRET_ACCESS_KEY": SECRET,
        }).start()
        for _ in range(5):  # warm PHP's opcache and the twin's connections
            get(laravel.port, {})

        bridged, ordinary, guest = [], [], []
        laravel_cookies: dict[int, str] = {}
        failures = 0
        for i in range(1, n + 1):
            elapsed, status, body, set_cookies = get(laravel.port, {"connect.sid": cookies[i]})
            if status != 200 or f"logged in as User {i}<" not in body:
                failures += 1
                continue
            bridged.append(elapsed)
            value = next(c.split(";", 1)[0].split("=", 1)[1] for c in set_cookies if c.startswith(COOKIE + "="))
            laravel_cookies[i] = value
        calls_after_bridging = len(calls)
        for i, value in laravel_cookies.items():
            elapsed, status, body, _ = get(laravel.port, {"connect.sid": cookies[i], COOKIE: value})
            if status != 200 or f"logged in as User {i}<" not in body:
                failures += 1
                continue
            ordinary.append(elapsed)
            guest.append(get(laravel.port, {})[0])
        later_calls = len(calls) - calls_after_bridging

        report = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
            "requests": n,
            "bridged_first_request": summary(bridged) if bridged else None,
            "ordinary_request": summary(ordinary) if ordinary else None,
            "guest_request": summary(guest) if guest else None,
            # Inside the bridged request: the route's handler alone (cookie check in Redis, session row).
            "bridge_route_handler": summary(calls[:calls_after_bridging]) if calls_after_bridging else None,
            "bridge_calls_during_first_requests": calls_after_bridging,
            "bridge_calls_during_ordinary_requests": later_calls,
            "failures": failures,
        }
        print(json.dumps(report, indent=2))
        (BENCH_DIR / "results").mkdir(exist_ok=True)
        (BENCH_DIR / "results" / "bridge-latest.json").write_text(json.dumps(report, indent=2) + "\n")
        ok = failures == 0 and later_calls == 0 and calls_after_bridging == n
        print("verdict: " + ("every first request bridged, later requests made no bridge call" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        if laravel is not None:
            laravel.stop()
        if running is not None:
            running.stop()
        engine.dispose()
        store.flushdb()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))


if __name__ == "__main__":
    sys.exit(main())
