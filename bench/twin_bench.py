"""``make bench-twin``: how the local twin answers while a large run executes.

1. A fresh PostgreSQL database (Laravel tables + ``db upgrade``) and a redis-server of its own, seeded with
   ``tokenmigration.demo_data.seed`` (default 100,000 users and their Express sessions).
2. ``tokenmigration local serve`` in its own process, as an operator starts it (its log: bench/results/).
3. ``POST /start``; then, until the run ends, this process alternates a signed ``GET /progress`` and an unsigned
   ``POST /exchange`` of a live session (one after another, no pause), timing each end to end.
4. p50/p95/max of each while the run was RUNNING, the run's own duration and outcome; written to
   bench/results/twin-latest.json.

Exit status 0 when the run succeeded and every request answered 200. The latencies are reported, never asserted:
they depend on the machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import redis
from botocore.credentials import Credentials as BotoCredentials
from latency import summary
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tokenmigration.cli.api import ApiClient
from tokenmigration.cli.arguments import positive_int
from tokenmigration.db.connection import make_engine
from tokenmigration.db.upgrade import create_laravel_tables, upgrade
from tokenmigration.demo_data import seed
from tokenmigration.formats.express import SessionDecoder, SessionKind, cookie_value

BENCH_DIR = Path(__file__).resolve().parent
KEY, SECRET, REGION = "AKIATWINBENCH0000001", "twin-bench-secret-access-key", "us-east-1"
EXPRESS_SECRET = "twin-bench-express-secret"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT = "urn:tokenmigration:express-session"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Latency of /progress and /exchange during a run, via local serve.")
    parser.add_argument("--users", type=positive_int, default=100_000, help="users to seed (default 100000)")
    parser.add_argument("--exchanges", type=positive_int, default=2000,
                        help="live sessions to draw exchanges from (default 2000)")
    parser.add_argument("--pg-server", default="postgresql+pg8000://postgres@127.0.0.1:5432/postgres",
                        help="URL of a database to issue CREATE/DROP DATABASE from")
    parser.add_argument("--database", default="tm_bench_twin", help="database to create (dropped at the end)")
    parser.add_argument("--redis-url", default=None,
                        help="Redis DB for the Express sessions; it is FLUSHED (default: a redis-server of this "
                             "bench's own, on a free port, so that no test run's FLUSHDB can reach it)")
    parser.add_argument("--port", type=int, default=0, help="port for local serve (default: a free one)")
    return parser.parse_args(argv)


def live_cookies(store: redis.Redis, wanted: int, users: set[int]) -> list[str]:
    """Signed cookies of logged-in sessions of existing users (the seed also writes orphans, rightly 401)."""
    decoder = SessionDecoder()
    cookies = []
    for key in store.scan_iter(match="sess:*", count=1000):
        parsed = decoder.parse(store.get(key))
        if parsed.kind is SessionKind.LOGGED_IN and parsed.user_id in users:
            cookies.append(cookie_value(key.decode()[len("sess:"):], EXPRESS_SECRET))
            if len(cookies) >= wanted:
                break
    return cookies


def start_server(database_url: str, redis_url: str, port: int, log: Path) -> tuple[subprocess.Popen, str]:
    """local serve, its output to a file: a pipe nobody drains would fill and block the server's logging."""
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "AWS_ACCESS_KEY_ID": KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION, "EXPRESS_SESSION_SECRETS": EXPRESS_SECRET,
           "FLAGS_MAX_AGE_SECONDS": "0", "POWERTOOLS_METRICS_DISABLED": "true"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tokenmigration.cli.main", "local", "serve", "--quiet",
                                 "--port", str(port), "--log-level", "ERROR"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.search(r"TOKENMIGRATION_API_URL=(\S+)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError("local serve did not print its URL:\n" + log.read_text())


def exchange(url: str, cookie: str) -> tuple[float, int]:
    parts = urlsplit(url)
    body = json.dumps({"grant_type": GRANT, "subject_token": cookie, "subject_token_type": SUBJECT})
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    started = time.perf_counter()
    conn.request("POST", parts.path.rstrip("/") + "/auth/migration/exchange", body=body,
                 headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, answer.status


def private_redis() -> tuple[subprocess.Popen, str]:
    """A redis-server of our own: CI and test runs pick and FLUSH any empty DB number of the shared one."""
    from tokenmigration.local.twin import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    own_redis = None
    if args.redis_url is None:
        own_redis, args.redis_url = private_redis()
    admin = create_engine(args.pg_server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{args.database}"'))
    database_url = args.pg_server.rsplit("/", 1)[0] + "/" + args.database
    store = redis.Redis.from_url(args.redis_url)
    store.flushdb()
    server = None
    try:
        engine = make_engine(database_url)
        create_laravel_tables(engine)
        upgrade(engine)
        began = time.monotonic()
        report = seed(engine, store, args.users)
        engine.dispose()
        print(f"seeded {report.users:,} users in {time.monotonic() - began:.1f} s", flush=True)
        cookies = live_cookies(store, args.exchanges, set(report.user_ids))

        server_log = BENCH_DIR / "results" / "twin-server.log"
        server_log.parent.mkdir(exist_ok=True)
        server, url = start_server(database_url, args.redis_url, args.port, server_log)
        print(f"local serve at {url}, its log in {server_log}", flush=True)
        api = ApiClient(url, credentials=BotoCredentials(KEY, SECRET), region=REGION, timeout=120)
        api.request("GET", "/stats")  # warm: connections, flags
        started = api.request("POST", "/start", {"confirm": True})
        if started.status != 202:
            raise RuntimeError(f"POST /start answered {started.status}: {started.text}")
        run_id = started.document["migration_id"]
        run_began = time.monotonic()
        progress_times: list[float] = []
        exchange_times: list[float] = []
        statuses: dict[str, int] = {}
        n = 0
        while True:
            t0 = time.perf_counter()
            answer = api.request("GET", "/progress", query={"migration_id": run_id})
            elapsed = time.perf_counter() - t0
            statuses[f"progress {answer.status}"] = statuses.get(f"progress {answer.status}", 0) + 1
            run = (answer.document or {}).get("progress") or {}
            if run.get("status") != "RUNNING":
                break
            progress_times.append(elapsed)
            elapsed, status = exchange(url, cookies[n % len(cookies)])
            n += 1
            statuses[f"exchange {status}"] = statuses.get(f"exchange {status}", 0) + 1
            exchange_times.append(elapsed)
        run_seconds = time.monotonic() - run_began
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "users": args.users, "run_id": run_id, "run_status": run.get("status"),
            "migrated_users": run.get("migrated_users"), "run_seconds": round(run_seconds, 1),
            "progress_during_run": summary(progress_times, digits=1),
            "exchange_during_run": summary(exchange_times, digits=1),
            "statuses": statuses,
        }
        print(json.dumps(result, indent=2))
        out = BENCH_DIR / "results"
        out.mkdir(exist_ok=True)
        (out / "twin-latest.json").write_text(json.dumps(result, indent=2) + "\n")
        ok = run.get("status") == "SUCCEEDED" and all(k.endswith(" 200") for k in statuses)
        return 0 if ok else 1
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        store.flushdb()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        if own_redis is not None:
            own_redis.terminate()
            own_redis.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
