"""``make bench``: the engine against the per-user baseline, on identical data, with a verdict.

Steps, on each database server asked for (``--database postgresql|mysql``,
default both, one after the other):

1. Seed a fresh database (Laravel tables + ``db upgrade``) and a dedicated
   Redis DB with ``tokenmigration.demo_data.seed``.
2. Copy the database twice so both contestants start from identical rows
   (PostgreSQL: ``CREATE DATABASE ... TEMPLATE``; MySQL/MariaDB: ``CREATE TABLE
   ... LIKE`` and ``INSERT ... SELECT`` per table). Migration only reads the
   Redis sessions, so both share them.
3. Run the baseline (bench/baseline.py, one process, per-user transactions) on
   copy A and the real CLI (``tokenmigration migrate``) as a subprocess on
   copy B, each timed end to end; the CLI ``--runs`` times (default 3), on a
   fresh copy B each time, and the median run by users/s is the one reported
   (this machine's speed drifts by a fifth between minutes).
4. Check both copies hold the same outcome, and the outcome the seed predicts
   (every engine run's copy).
5. Print the report and write it to bench/results/latest-<database>.json.
6. Drop the databases and flush the Redis DB, unless --keep.

Exit status: 0 when the run is valid (engine succeeded, results equivalent),
1 otherwise. Whether the performance goals are met is reported, not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from baseline import TOKENABLE_TYPE, BaselineResult, run_baseline
from meters import PrivateServers, RssSampler, tree_cpu_seconds
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tokenmigration.cli.arguments import default_workers, positive_int
from tokenmigration.db.connection import make_engine, normalize_url
from tokenmigration.db.upgrade import create_laravel_tables, upgrade
from tokenmigration.demo_data import SeedReport, seed

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PREFIX = "sess:"
GOAL_RATIO = 50.0
GOAL_USERS_PER_SECOND = 20_000.0
SMALL_PREFIX = 10_000  # below this many users an extrapolated baseline is noticeably pessimistic


# --- options ------------------------------------------------------------------------------------


def pg_setting(text_: str) -> str:
    name, equals, value = text_.partition("=")
    if not (equals and name.strip() and value.strip()):
        raise argparse.ArgumentTypeError(f"{text_!r} is not NAME=VALUE (e.g. max_wal_size=16GB)")
    return text_


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark `tokenmigration migrate` against the per-user baseline on seeded data.",
    )
    parser.add_argument("--users", type=positive_int, default=100_000, help="users to seed (default 100000)")
    parser.add_argument("--chunk-size", type=positive_int, default=2000, help="engine chunk size (default 2000)")
    parser.add_argument("--workers", type=positive_int, default=default_workers(),
                        help="engine workers (default: the CLI's own default)")
    parser.add_argument("--baseline-users", type=positive_int, default=None,
                        help="run the baseline on only the first N users and extrapolate its rate "
                             "(default: all users; below ~10000 the estimate runs low, see the report)")
    parser.add_argument("--runs", type=positive_int, default=3,
                        help="engine runs, each on a fresh copy of the seeded database; the report gives each "
                             "and the median by users/s, whose costs it shows (default 3)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the databases and the Redis DB afterwards (to inspect or rerun by hand)")
    parser.add_argument("--database", choices=["postgresql", "mysql", "both"], default="both",
                        help="which database server to benchmark on (default: both, PostgreSQL first)")
    parser.add_argument("--pg-server", default="postgresql+pg8000://postgres@127.0.0.1:5432/postgres",
                        help="URL of a PostgreSQL database to issue CREATE/DROP DATABASE from")
    parser.add_argument("--mysql-server", default="mysql+pymysql://root@127.0.0.1:3306/mysql",
                        help="URL of a MySQL/MariaDB database to issue CREATE/DROP DATABASE from")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379",
                        help="Redis server, without a DB number")
    parser.add_argument("--redis-db", type=int, default=14,
                        help="Redis DB number to seed; it is FLUSHED (default 14)")
    parser.add_argument("--db-prefix", default="tm_bench", help="database names: <prefix>_src, _a, _b")
    parser.add_argument("--servers", choices=("private", "shared"), default="private",
                        help="private (default): a throwaway PostgreSQL cluster and redis-server of the bench's "
                             "own, so their CPU-seconds and WAL bytes are the contestants' alone; shared: "
                             "--pg-server and --redis-url, whose figures include every other client's work")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE", type=pg_setting,
                        help="private PostgreSQL: start it with this setting too (repeatable), e.g. "
                             "wal_compression=lz4 or max_wal_size=8GB, to see what a server setting changes")
    parser.add_argument("--users-fillfactor", type=int, choices=range(10, 101), metavar="10..100", default=100,
                        help="PostgreSQL: seed users with this fillfactor (default 100, as Laravel creates the "
                             "table; a users table the app updates has free room on its pages)")
    parser.add_argument("--wal-stats", action="store_true",
                        help="private servers: write pg_waldump --stats=record of the engine's WAL to "
                             "bench/results/engine-wal.txt (which records and full-page images it wrote)")
    args = parser.parse_args(argv)
    if args.baseline_users is None or args.baseline_users > args.users:
        args.baseline_users = args.users
    return args


# --- databases ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Databases:
    server_url: str
    src: str
    a: str
    b: str

    def url(self, name: str) -> str:
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.src, self.a, self.b)


def admin_engine(server_url: str) -> Engine:
    # CREATE/DROP DATABASE cannot run in a transaction block on PostgreSQL; NullPool leaves no idle session
    # behind that would keep a template "in use".
    return create_engine(normalize_url(server_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")


class Server:
    """What differs between the database servers: creating, copying, settling and naming databases."""

    label = "PostgreSQL"

    def __init__(self, admin: Engine) -> None:
        self.admin = admin

    def create(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def settle(self, url: str) -> None:
        """Fresh statistics and visibility map, copied into both clones, so neither contestant pays
        for autovacuum catching up. VACUUM needs a connection with no transaction open (pre-ping
        opens one on pooled connections), hence a fresh autocommit engine."""
        vacuum = admin_engine(url)
        with vacuum.connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))
        vacuum.dispose()

    def copy(self, template: str, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))

    def checkpoint(self) -> None:
        """Flush dirty buffers so a timed phase does not pay for the writes of the phase before it."""
        with self.admin.connect() as conn:
            conn.execute(text("CHECKPOINT"))

    def version(self) -> str:
        with self.admin.connect() as conn:
            return "PostgreSQL " + str(conn.execute(text("SHOW server_version")).scalar_one())


class MysqlServer(Server):
    label = "MySQL/MariaDB"

    def create(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))

    def settle(self, url: str) -> None:
        engine = admin_engine(url)
        with engine.connect() as conn:
            names = list(conn.execute(text("SHOW TABLES")).scalars())
            conn.execute(text("ANALYZE TABLE " + ", ".join(f"`{n}`" for n in names)))
        engine.dispose()

    def copy(self, template: str, name: str) -> None:
        # No TEMPLATE on MySQL: same definitions (indexes, AUTO_INCREMENT counters follow the rows), same rows.
        self.create(name)
        with self.admin.connect() as conn:
            tables = list(conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :db"), {"db": template}
            ).scalars())
            for table in tables:
                conn.execute(text(f"CREATE TABLE `{name}`.`{table}` LIKE `{template}`.`{table}`"))
                conn.execute(text(f"INSERT INTO `{name}`.`{table}` SELECT * FROM `{template}`.`{table}`"))

    def checkpoint(self) -> None:
        # InnoDB has no CHECKPOINT statement: ask it to flush every dirty page, and wait (at most 30 s) until
        # the buffer pool's dirty pages are (nearly) all written.
        with self.admin.connect() as conn:
            saved = conn.execute(text("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")).scalar()
            conn.execute(text("SET GLOBAL innodb_max_dirty_pages_pct = 0"))
            try:
                for _ in range(300):
                    dirty = conn.execute(text(
                        "SELECT variable_value FROM information_schema.global_status "
                        "WHERE variable_name = 'INNODB_BUFFER_POOL_PAGES_DIRTY'")).scalar()
                    if not dirty or int(dirty) < 64:
                        return
                    time.sleep(0.1)
            finally:
                conn.execute(text(f"SET GLOBAL innodb_max_dirty_pages_pct = {float(saved)}"))

    def version(self) -> str:
        with self.admin.connect() as conn:
            return str(conn.execute(text("SELECT version()")).scalar_one())


def server_for(admin: Engine) -> Server:
    return MysqlServer(admin) if admin.dialect.name in ("mysql", "mariadb") else Server(admin)


def build_source(server: Server, dbs: Databases, client: redis.Redis, users: int,
                 users_fillfactor: int = 100) -> SeedReport:
    server.create(dbs.src)
    engine = make_engine(dbs.url(dbs.src))
    try:
        create_laravel_tables(engine)
        upgrade(engine)
        if users_fillfactor != 100 and engine.dialect.name == "postgresql":
            # Room on each page, as a users table the app updates has: an UPDATE that changes no indexed
            # column can then stay on its page (HOT) instead of writing every index of users.
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE users SET (fillfactor = {int(users_fillfactor)})"))
        report = seed(engine, client, users=users, prefix=PREFIX)
    finally:
        # A template must have no other session connected when it is copied.
        engine.dispose()
    server.settle(dbs.url(dbs.src))
    return report


# --- the engine, as a subprocess ----------------------------------------------------------------


@dataclass(slots=True)
class EngineRun:
    command: list[str]
    seconds: float
    returncode: int
    peak_rss_mib: float  # the largest single process (the CLI or one worker): its own VmHWM
    peak_tree_rss_mib: float  # the CLI and its workers together, sampled
    cpu_seconds: float  # user + system of the CLI and every worker it reaped
    log: str


@dataclass(frozen=True, slots=True)
class EngineMeasure:
    """One engine run: the process, its rate, what it cost the servers, and the outcome it left."""

    run: EngineRun
    rate: float
    cost: Cost
    on_b: Any  # Outcome on the baseline's users
    all_users: Any  # Outcome on every user (the same as on_b when the baseline walked them all)
    wal_range: tuple[str, str]


def run_engine(database_url: str, redis_url: str, workers: int, chunk_size: int, log_path: Path) -> EngineRun:
    cli = Path(sys.executable).parent / "tokenmigration"
    if not cli.exists():
        raise SystemExit(f"bench: {cli} not found: install the package into this venv (pip install -e .)")
    command = [str(cli), "migrate", "--yes", "--workers", str(workers), "--chunk-size", str(chunk_size)]
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        # Pin what the comparison depends on, so a stray setting in the caller's shell cannot make the
        # engine read other keys or write other rows than the baseline does.
        "EXPRESS_SESSION_PREFIX": PREFIX,
        "EXPRESS_USER_ID_PATH": "passport.user",
        "SANCTUM_TOKENABLE_TYPE": TOKENABLE_TYPE,
    }
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with RssSampler(proc.pid) as sampler:
            # wait4 gives this one child's usage with its reaped workers folded in, whatever else the
            # bench ran before (the servers, initdb).
            _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    return EngineRun(command, seconds, proc.returncode, sampler.peak_single / 2**20, sampler.peak_sum / 2**20,
                     usage.ru_utime + usage.ru_stime, str(log_path))


# --- what a contestant cost the servers ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerReading:
    db_cpu: float
    redis_cpu: float
    wal_lsn: str


@dataclass(slots=True)
class Cost:
    client_cpu: float
    db_cpu: float
    redis_cpu: float
    wal_bytes: int
    migrated: int  # users migrated: the per-user figures divide by this

    def per_user(self) -> dict[str, float]:
        n = max(self.migrated, 1)
        return {"client_cpu_us": self.client_cpu / n * 1e6, "db_cpu_us": self.db_cpu / n * 1e6,
                "redis_cpu_us": self.redis_cpu / n * 1e6, "wal_bytes": self.wal_bytes / n}

    def as_dict(self) -> dict[str, Any]:
        return {"client_cpu_seconds": round(self.client_cpu, 3), "db_cpu_seconds": round(self.db_cpu, 3),
                "redis_cpu_seconds": round(self.redis_cpu, 3), "wal_bytes": self.wal_bytes,
                "users_migrated": self.migrated,
                "per_migrated_user": {k: round(v, 1) for k, v in self.per_user().items()}}


@dataclass(frozen=True, slots=True)
class Servers:
    """Where the server processes are: their CPU is read from /proc, the log position from SQL.

    PostgreSQL's log is its WAL (pg_current_wal_lsn); InnoDB's is the redo log (Innodb_lsn_current; the
    binary log, when on, is counted too). Both positions are server-wide: on a shared server they include
    every other client's writes, hence the private servers.
    """

    admin: Engine
    db_pid: int
    redis_pid: int
    db_private: bool
    redis_private: bool
    waldump: Any = None  # (start lsn, end lsn, output path) -> None, private PostgreSQL only
    wal_by_relation: Any = None  # (start lsn, end lsn) -> {relfilenode: (records, bytes)}, likewise

    @property
    def mysql(self) -> bool:
        return self.admin.dialect.name in ("mysql", "mariadb")

    @property
    def private(self) -> bool:
        return self.db_private and self.redis_private

    def _log_position(self) -> str:
        with self.admin.connect() as conn:
            if not self.mysql:
                return str(conn.execute(text("SELECT pg_current_wal_lsn()")).scalar_one())
            status = dict(conn.execute(text(
                "SHOW GLOBAL STATUS WHERE variable_name IN ('Innodb_lsn_current', 'Binlog_bytes_written')")).all())
            return str(int(status.get("Innodb_lsn_current", 0)) + int(status.get("Binlog_bytes_written", 0)))

    def read(self) -> ServerReading:
        return ServerReading(tree_cpu_seconds(self.db_pid), tree_cpu_seconds(self.redis_pid), self._log_position())

    def cost(self, before: ServerReading, after: ServerReading, client_cpu: float, migrated: int) -> Cost:
        if self.mysql:
            wal = int(after.wal_lsn) - int(before.wal_lsn)
        else:
            with self.admin.connect() as conn:
                wal = int(conn.execute(text("SELECT pg_wal_lsn_diff(CAST(:a AS pg_lsn), CAST(:b AS pg_lsn))"),
                                       {"a": after.wal_lsn, "b": before.wal_lsn}).scalar_one())
        return Cost(client_cpu, after.db_cpu - before.db_cpu, after.redis_cpu - before.redis_cpu, wal, migrated)


def server_pid(admin: Engine) -> int:
    """The database server's process: the postmaster (whose reaped backends it accounts for), or mariadbd."""
    with admin.connect() as conn:
        if admin.dialect.name in ("mysql", "mariadb"):
            pid_file = str(conn.execute(text("SELECT @@pid_file")).scalar_one())
            return int(Path(pid_file).read_text().split()[0])
        backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        # Read while the connection is open: the admin engine does not pool, so the backend exits with it.
        return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its ppid


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


# --- verification -------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What a migration left in one database, for users with id <= cutoff."""

    users: int = 0
    users_migrated: int = 0
    tokens_created: int = 0
    session_rows: int = 0
    bad_token_links: int = 0  # migrated users whose migration_token_id is not a token of theirs
    migrated_ids: list[int] = field(default_factory=list, repr=False)
    sessions_per_user: dict[int, int] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, int]:
        return {"users": self.users, "users_migrated": self.users_migrated,
                "tokens_created": self.tokens_created, "session_rows": self.session_rows,
                "bad_token_links": self.bad_token_links}


def expected_outcome(report: SeedReport, cutoff: int, carry_skipped: bool) -> Outcome:
    """What the seed implies: every user without a prior token is migrated with all its sessions; with
    ``carry_skipped`` (the engine), users holding a token keep their sessions too (skipping is about the
    token only), while the baseline, the PHP sketch, leaves them alone."""
    holders = set(report.users_with_tokens)
    in_range = [uid for uid in report.user_ids if uid <= cutoff]
    migrated = [uid for uid in in_range if uid not in holders]
    carried = in_range if carry_skipped else migrated
    per_user = {uid: report.sessions_by_user[uid] for uid in carried if report.sessions_by_user[uid]}
    return Outcome(len(in_range), len(migrated), len(migrated), sum(per_user.values()), 0, migrated, per_user)


def read_outcome(database_url: str, cutoff: int, seeded_tokens: int) -> Outcome:
    engine = make_engine(database_url)
    params = {"cut": cutoff, "type": TOKENABLE_TYPE}
    try:
        with engine.connect() as conn:
            users = conn.execute(text("SELECT count(*) FROM users WHERE id <= :cut"), params).scalar_one()
            tokens = conn.execute(text(
                "SELECT count(*) FROM personal_access_tokens "
                "WHERE tokenable_type = :type AND tokenable_id <= :cut"
            ), params).scalar_one()
            bad_links = conn.execute(text(
                "SELECT count(*) FROM users u "
                "LEFT JOIN personal_access_tokens t ON t.id = u.migration_token_id "
                "WHERE u.id <= :cut AND u.migrated_to_sanctum_at IS NOT NULL "
                "AND (t.id IS NULL OR t.tokenable_id <> u.id OR t.tokenable_type <> :type)"
            ), params).scalar_one()
            migrated_ids = list(conn.execute(text(
                "SELECT id FROM users WHERE id <= :cut AND migrated_to_sanctum_at IS NOT NULL ORDER BY id"
            ), params).scalars())
            per_user = {int(uid): int(n) for uid, n in conn.execute(text(
                "SELECT user_id, count(*) FROM sessions WHERE user_id <= :cut GROUP BY user_id"
            ), params)}
    finally:
        engine.dispose()
    return Outcome(users, len(migrated_ids), tokens - seeded_tokens, sum(per_user.values()), bad_links,
                   migrated_ids, per_user)


def mismatches(expected: Outcome, actual: Outcome, label: str) -> list[str]:
    """How ``actual`` departs from ``expected``; two outcomes equal to it are equal to each other."""
    problems = [
        f"{label}: {name} is {getattr(actual, name):,}, expected {getattr(expected, name):,}"
        for name in ("users", "users_migrated", "tokens_created", "session_rows")
        if getattr(actual, name) != getattr(expected, name)
    ]
    # Equal counts could still hide different users; compare the sets themselves.
    if actual.migrated_ids != expected.migrated_ids:
        problems.append(f"{label}: the set of migrated users is not the expected one")
    if actual.sessions_per_user != expected.sessions_per_user:
        problems.append(f"{label}: session rows per user differ from the seeded sessions")
    if actual.bad_token_links:
        problems.append(f"{label}: {actual.bad_token_links:,} migrated users point at a token not theirs")
    return problems


# --- report -------------------------------------------------------------------------------------


def baseline_rate(result: BaselineResult, total_users: int) -> tuple[float, float, bool]:
    """(users/s, seconds for all users, extrapolated?) of the baseline.

    A partial run is extrapolated as one full SCAN plus the measured per-user cost times every
    user: the SCAN is paid once whatever the number of users, so it is not scaled up.
    """
    if result.users >= total_users:
        return total_users / result.seconds, result.seconds, False
    estimate = result.scan_seconds + result.seconds_per_user * total_users
    return total_users / estimate, estimate, True


def side_by_side(expected: Outcome, baseline: Outcome, expected_eng: Outcome, engine: Outcome) -> str:
    rows = [("", "expected (A)", "baseline (A)", "expected (B)", "engine (B)")]
    for name, label in (("users", "users in range"), ("users_migrated", "users migrated"),
                        ("tokens_created", "tokens created"), ("session_rows", "session rows"),
                        ("bad_token_links", "bad token links")):
        rows.append((label, *(f"{getattr(o, name):,}" for o in (expected, baseline, expected_eng, engine))))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for label, *cells in rows:
        lines.append("  " + label.ljust(widths[0])
                     + "".join("  " + c.rjust(w) for c, w in zip(cells, widths[1:], strict=True)))
    return "\n".join(lines)


def cost_table(base: Cost, eng: Cost, servers: Servers) -> str:
    """CPU-seconds and WAL, in all and per migrated user, for both contestants."""
    rows = [("", "baseline (A)", "engine (B)", "baseline/user", "engine/user")]
    bu, eu = base.per_user(), eng.per_user()
    for label, attr, key, unit in (("client CPU", "client_cpu", "client_cpu_us", "us"),
                                   ("database CPU", "db_cpu", "db_cpu_us", "us"),
                                   ("Redis CPU", "redis_cpu", "redis_cpu_us", "us")):
        rows.append((label, f"{getattr(base, attr):.2f} s", f"{getattr(eng, attr):.2f} s",
                     f"{bu[key]:,.0f} {unit}", f"{eu[key]:,.0f} {unit}"))
    rows.append(("redo log (InnoDB)" if servers.mysql else "WAL",
                 f"{base.wal_bytes / 2**20:,.1f} MiB", f"{eng.wal_bytes / 2**20:,.1f} MiB",
                 f"{bu['wal_bytes']:,.0f} B", f"{eu['wal_bytes']:,.0f} B"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"cost, per migrated user ({base.migrated:,} baseline, {eng.migrated:,} engine)"
             + ":" + ("" if servers.db_private else "  (shared database server: its CPU and log include "
                      "other clients' work)")
             + ("" if servers.redis_private else "  (shared Redis: includes other clients' work)")]
    for label, *cells in rows:
        lines.append("  " + label.ljust(widths[0])
                     + "".join("  " + c.rjust(w) for c, w in zip(cells, widths[1:], strict=True)))
    return "\n".join(lines)


def named_relations(database_url: str, by_node: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Relation names for pg_waldump's relfilenodes (this database's tables and indexes)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            names = {str(node): name for node, name in conn.execute(text(
                "SELECT relfilenode, relname FROM pg_class WHERE relfilenode <> 0"))}
    finally:
        engine.dispose()
    named: dict[str, tuple[int, int]] = {}
    for node, (records, size) in by_node.items():
        key = names.get(node, node)
        old = named.get(key, (0, 0))
        named[key] = (old[0] + records, old[1] + size)
    return named


def relation_table(by_relation: dict[str, tuple[int, int]], migrated: int) -> str:
    total = sum(size for _, size in by_relation.values()) or 1
    lines = ["engine WAL by relation (pg_waldump; records and bytes per migrated user, full-page images included):"]
    for name, (records, size) in sorted(by_relation.items(), key=lambda kv: -kv[1][1]):
        if size / total < 0.001:
            continue
        lines.append(f"  {name:<58} {records / max(migrated, 1):6.2f} rec {size / max(migrated, 1):7,.0f} B "
                     f"{100 * size / total:5.1f} %")
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- main ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Every database asked for, one after the other; the exit status is the worst of them."""
    if args.database != "both":
        return run_one(args, args.database)
    # One process per database, each with servers of its own.
    rest = [a for i, a in enumerate(argv) if a != "--database" and not a.startswith("--database=")
            and (i == 0 or argv[i - 1] != "--database")]
    return max(subprocess.run([sys.executable, str(Path(__file__).resolve()), *rest, "--database", database],
                              check=False).returncode for database in ("postgresql", "mysql"))


def run_one(args: argparse.Namespace, database: str) -> int:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # Private servers: PostgreSQL and Redis of the bench's own; MySQL/MariaDB stays the shared server.
    # --wal-stats reads the run's WAL after it: keep the segments that checkpoints would otherwise recycle (a
    # 1,000,000-user run writes about 3.5 GB). It changes what is kept on disk, not what is written.
    keep_wal = ("wal_keep_size=64GB",) if args.wal_stats else ()
    private = PrivateServers.start(postgres=database == "postgresql", pg_settings=tuple(args.pg_setting) + keep_wal) \
        if args.servers == "private" else None
    if private is not None:
        args.redis_url, args.redis_db = private.redis_url, 0
        if private.pg is not None:
            args.pg_server = private.pg_url
        log(f"private servers in {private.workdir}: redis-server on port {private.redis_port}"
            + (f", PostgreSQL on port {private.pg_port}" if private.pg is not None else ""))
    try:
        server_url = args.pg_server if database == "postgresql" else args.mysql_server
        dbs = Databases(normalize_url(server_url), f"{args.db_prefix}_src", f"{args.db_prefix}_a",
                        f"{args.db_prefix}_b")
        redis_url = f"{args.redis_url.rstrip('/')}/{args.redis_db}"
        client = redis.Redis.from_url(redis_url)
        server = server_for(admin_engine(server_url))
        servers = Servers(
            server.admin,
            private.pg_pid if private is not None and private.pg is not None else server_pid(server.admin),
            private.redis_pid if private is not None else int(client.info("server")["process_id"]),
            db_private=private is not None and private.pg is not None, redis_private=private is not None,
            waldump=private.waldump if private is not None and private.pg is not None else None,
            wal_by_relation=private.wal_by_relation if private is not None and private.pg is not None else None,
        )
        for name in dbs.names:  # leftovers of an interrupted run
            server.drop(name)
        client.flushdb()
        try:
            return _run(args, database, dbs, server, client, redis_url, servers)
        finally:
            if args.keep:
                log(f"kept databases {', '.join(dbs.names)} and Redis DB {args.redis_db} (--keep)")
            else:
                for name in dbs.names:
                    server.drop(name)
                client.flushdb()
                log(f"dropped databases {', '.join(dbs.names)}; flushed Redis DB {args.redis_db}")
            server.admin.dispose()
            client.close()
    finally:
        if private is not None:
            if args.keep:
                log(f"kept the private servers running (redis pid {private.redis_pid}"
                    + (f", postgres pid {private.pg_pid}" if private.pg is not None else "")
                    + f"): stop them with kill, then rm -r {private.workdir}")
            else:
                private.stop()


def _run(args: argparse.Namespace, database: str, dbs: Databases, server: Server, client: redis.Redis,
         redis_url: str, servers: Servers) -> int:
    log(f"{server.label}: seeding {args.users:,} users into {dbs.src} and Redis DB {args.redis_db} ...")
    started = time.perf_counter()
    report = build_source(server, dbs, client, args.users, args.users_fillfactor)
    sessions_total = sum(report.sessions.values())
    log(f"seeded in {time.perf_counter() - started:.1f}s: {sessions_total:,} session keys "
        f"({report.sessions['logged_in']:,} logged in), {len(report.users_with_tokens):,} users already "
        "holding a token")
    server.copy(dbs.src, dbs.a)
    server.copy(dbs.src, dbs.b)
    log(f"copied {dbs.src} to {dbs.a} (baseline) and {dbs.b} (engine)")

    partial = args.baseline_users < args.users
    server.checkpoint()
    log(f"baseline: per-user transactions on {dbs.a}, "
        + (f"first {args.baseline_users:,} of {args.users:,} users (rate extrapolated) ..." if partial
           else f"all {args.users:,} users ..."))
    before, cpu_before = servers.read(), thread_cpu()
    base = run_baseline(dbs.url(dbs.a), client, args.baseline_users if partial else None, PREFIX)
    base_cost = servers.cost(before, servers.read(), thread_cpu() - cpu_before, base.migrated)
    base_rate, base_full_seconds, extrapolated = baseline_rate(base, args.users)
    log(f"baseline: {base.users:,} users in {base.seconds:.1f}s (scan {base.scan_seconds:.1f}s, "
        f"loop {base.loop_seconds:.1f}s) -> {base_rate:,.0f} users/s"
        + (f" extrapolated to {args.users:,} users ({base_full_seconds:.0f}s)" if extrapolated else ""))

    # Compare on the users the baseline walked; on a partial baseline, each engine run's whole outcome is
    # checked against the seed as well.
    cutoff = base.last_user_id if base.last_user_id is not None else 0
    expected = expected_outcome(report, cutoff, carry_skipped=False)
    expected_eng = expected_outcome(report, cutoff, carry_skipped=True)
    expected_all = expected_outcome(report, report.user_ids[-1], carry_skipped=True) if partial else expected_eng
    seeded_in_range = sum(1 for uid in report.users_with_tokens if uid <= cutoff)
    on_a = read_outcome(dbs.url(dbs.a), cutoff, seeded_in_range)
    problems = mismatches(expected, on_a, "baseline")

    runs: list[EngineMeasure] = []
    wal_relations: dict[str, tuple[int, int]] = {}
    for number in range(1, args.runs + 1):
        if number > 1:  # every run starts from the seeded rows, as the first did
            server.drop(dbs.b)
            server.copy(dbs.src, dbs.b)
        server.checkpoint()
        label = f"engine run {number}/{args.runs}"
        log(f"{label}: tokenmigration migrate --workers {args.workers} --chunk-size {args.chunk_size} on {dbs.b} ...")
        before = servers.read()
        eng = run_engine(dbs.url(dbs.b), redis_url, args.workers, args.chunk_size, RESULTS_DIR / "engine.log")
        after = servers.read()
        if args.wal_stats and servers.waldump is not None and number == 1:
            servers.waldump(before.wal_lsn, after.wal_lsn, RESULTS_DIR / "engine-wal.txt")
            wal_relations = named_relations(dbs.url(dbs.b), servers.wal_by_relation(before.wal_lsn, after.wal_lsn))
            log(f"engine WAL records: {RESULTS_DIR / 'engine-wal.txt'}")
        on_b = read_outcome(dbs.url(dbs.b), cutoff, seeded_in_range)
        engine_all = read_outcome(dbs.url(dbs.b), report.user_ids[-1], len(report.users_with_tokens)) \
            if partial else on_b
        problems += mismatches(expected_eng, on_b, label)
        if partial:
            problems += mismatches(expected_all, engine_all, f"{label} (all users)")
        if eng.returncode != 0:
            problems.append(f"{label}: the engine exited with status {eng.returncode}: see {eng.log}")
        run = EngineMeasure(eng, args.users / eng.seconds, servers.cost(before, after, eng.cpu_seconds,
                                                                         engine_all.users_migrated),
                            on_b, engine_all, (before.wal_lsn, after.wal_lsn))
        runs.append(run)
        log(f"{label}: exit {eng.returncode} after {eng.seconds:.2f}s -> {run.rate:,.0f} users/s, "
            f"peak RSS {eng.peak_rss_mib:.0f} MiB (output in {eng.log})")
    median = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    eng, eng_rate, eng_cost, on_b, engine_all = median.run, median.rate, median.cost, median.on_b, median.all_users
    before_lsn, after_lsn = median.wal_range

    ratio = eng_rate / base_rate if base_rate else float("inf")
    goals = {
        f"engine >= {GOAL_RATIO:.0f}x baseline": ratio >= GOAL_RATIO,
        f"engine >= {GOAL_USERS_PER_SECOND:,.0f} users/s": eng_rate >= GOAL_USERS_PER_SECOND,
    }
    valid = not problems

    scope = (f"users with id <= {cutoff} (the {base.users:,} the baseline walked)" if partial
             else f"all {args.users:,} users")
    print()
    print("=" * 78)
    print(f"tokenmigration benchmark  ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"{server.version()})")
    print("=" * 78)
    if args.pg_setting and servers.db_private:
        print(f"PostgreSQL settings    {', '.join(args.pg_setting)} (besides the shipped defaults)")
    print(f"users                  {args.users:,}  ({len(report.users_with_tokens):,} already hold a token)")
    print(f"Express session keys   {sessions_total:,}  ({report.sessions['logged_in']:,} logged in)")
    print("  not migrated:        "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(report.sessions.items()) if k != "logged_in"))
    print()
    if extrapolated:
        print(f"baseline               {base_rate:>10,.0f} users/s   EXTRAPOLATED: ran {base.users:,} of "
              f"{args.users:,} users in {base.seconds:.1f}s")
        print(f"                       (scan {base.scan_seconds:.1f}s once + "
              f"{base.seconds_per_user * 1000:.3f} ms/user x {args.users:,} "
              f"= {base_full_seconds:.0f}s estimated)")
        if base.users < SMALL_PREFIX:
            # Measured here: the first few thousand users cost ~15-40% more each than the run's
            # average (cold caches, first writes to each page after the checkpoint), which would
            # flatter the engine's ratio.
            print(f"                       NOTE: fewer than {SMALL_PREFIX:,} baseline users; the per-user "
                  "cost is overestimated")
    else:
        print(f"baseline               {base_rate:>10,.0f} users/s   measured: {args.users:,} users in "
              f"{base.seconds:.1f}s (scan {base.scan_seconds:.1f}s)")
    print(f"engine                 {eng_rate:>10,.0f} users/s   measured: {args.users:,} users in "
          f"{eng.seconds:.2f}s, process start to exit, {args.workers} workers, chunks of {args.chunk_size:,}"
          + (f"; the median of {len(runs)} runs" if len(runs) > 1 else ""))
    if len(runs) > 1:
        print("  each run             " + ", ".join(
            f"{r.rate:,.0f} users/s ({r.cost.per_user()['db_cpu_us']:,.0f} us DB CPU, "
            f"{r.cost.per_user()['wal_bytes']:,.0f} B {'redo' if servers.mysql else 'WAL'} per user)" for r in runs))
    print(f"speed-up               {ratio:>10,.1f}x")
    print(f"engine peak memory     {eng.peak_rss_mib:>10,.0f} MiB     (peak RSS of the largest single process "
          "of the run, its VmHWM)")
    print(f"                       {eng.peak_tree_rss_mib:>10,.0f} MiB     (the CLI and its workers together, "
          "sampled every 0.1 s)")
    print()
    print(cost_table(base_cost, eng_cost, servers))
    print()
    if wal_relations:
        print(relation_table(wal_relations, eng_cost.migrated))
        print()
    print(f"results compared on {scope}:")
    print(side_by_side(expected, on_a, expected_eng, on_b))
    if partial:
        print(f"  engine, all {args.users:,} users: migrated {engine_all.users_migrated:,} "
              f"(expected {expected_all.users_migrated:,}), session rows {engine_all.session_rows:,} "
              f"(expected {expected_all.session_rows:,})")
    print()
    for problem in problems:
        print(f"MISMATCH  {problem}")
    print(f"results equivalent     {'yes' if valid else 'NO'}")
    for goal, met in goals.items():
        print(f"goal {goal:<30} {'MET' if met else 'NOT MET'}")
    print("=" * 78)

    document: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "database": server.version(), "platform": platform.platform()},
        "options": {"database": database, "pg_settings": args.pg_setting,
                    "users_fillfactor": args.users_fillfactor,
                    "users": args.users, "baseline_users": args.baseline_users,
                    "workers": args.workers, "chunk_size": args.chunk_size},
        "dataset": {"users": args.users, "users_holding_token": len(report.users_with_tokens),
                    "session_keys": sessions_total, "sessions_by_kind": dict(report.sessions)},
        "baseline": {"users_run": base.users, "extrapolated": extrapolated,
                     "scan_seconds": round(base.scan_seconds, 3),
                     "loop_seconds": round(base.loop_seconds, 3), "seconds": round(base.seconds, 3),
                     "estimated_seconds_all_users": round(base_full_seconds, 3),
                     "users_per_second": round(base_rate, 1)},
        "engine": {"runs": len(runs), "median_of_runs": True,
                   "command": " ".join(eng.command[1:]), "seconds": round(eng.seconds, 3),
                   "users_per_second": round(eng_rate, 1), "exit_status": eng.returncode,
                   "peak_rss_mib": round(eng.peak_rss_mib, 1),
                   "peak_rss_note": "largest single process of the run (CLI or one worker), not a sum",
                   "peak_tree_rss_mib": round(eng.peak_tree_rss_mib, 1),
                   "log": eng.log},
        "ratio": round(ratio, 2),
        "servers": {"database": "private" if servers.db_private else "shared (includes other clients' work)",
                    "redis": "private" if servers.redis_private else "shared (includes other clients' work)"},
        "wal_by_relation": {name: {"records": n, "bytes": b} for name, (n, b) in wal_relations.items()},
        "engine_runs": [{"seconds": round(r.run.seconds, 3), "users_per_second": round(r.rate, 1),
                         "exit_status": r.run.returncode, "peak_rss_mib": round(r.run.peak_rss_mib, 1),
                         "peak_tree_rss_mib": round(r.run.peak_tree_rss_mib, 1), "cost": r.cost.as_dict()}
                        for r in runs],
        "cost": {"baseline": base_cost.as_dict(), "engine": eng_cost.as_dict(),
                 "engine_log_range": [before_lsn, after_lsn]},
        "verification": {"scope_max_user_id": cutoff, "expected": expected.counts(),
                         "expected_engine": expected_eng.counts(),
                         "baseline": on_a.counts(), "engine": on_b.counts(), "equivalent": valid,
                         "problems": problems},
        "goals": {"ratio": GOAL_RATIO, "users_per_second": GOAL_USERS_PER_SECOND,
                  "ratio_met": goals[f"engine >= {GOAL_RATIO:.0f}x baseline"],
                  "users_per_second_met": goals[f"engine >= {GOAL_USERS_PER_SECOND:,.0f} users/s"]},
        "baseline_detail": asdict(base),
    }
    out = RESULTS_DIR / f"latest-{database}.json"
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out}")
    return 0 if valid else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # kill (SIGTERM) unwinds like Ctrl-C, so the private servers and the databases are still cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
