"""``stats()``: the migration's state, computed from the database (not from run counters).

Counting the users table is a full scan: at 100 million users, tens of gigabytes, minutes on most volumes,
far past API Gateway's 29 seconds. So the API asks for ``bounded`` stats: exact when the table is small
enough to count quickly (by the planner's own estimate of its rows) and the count ends within the time
limit; otherwise the planner's estimates, marked ``exact: false``, at the cost of two catalog reads.
``tokenmigration stats`` (one machine, no time limit) always counts.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from sqlalchemy import Connection, Engine, Integer, TextClause, column, text

from tokenmigration.db.schema import Timestamp
from tokenmigration.engine.clock import iso

# Above this many users (the planner's estimate) bounded stats do not try to count: a count would take long,
# and repeating it on every /stats and /progress call would load the shared database for nothing.
EXACT_COUNT_MAX_USERS = 5_000_000
# A count that has not ended after this long is cancelled and the estimates are answered instead.
COUNT_TIME_LIMIT_SECONDS = 10.0


def percentage(part: int, whole: int) -> float:
    return round(part / whole * 100, 2) if whole else 0.0


def stats(engine: Engine, *, bounded: bool = False) -> dict[str, Any]:
    with engine.connect() as conn:
        if bounded and engine.dialect.name != "sqlite":  # an embedded SQLite file is the demo's: always count
            estimate = _estimated_rows(conn, "users")
            if estimate is not None and estimate > EXACT_COUNT_MAX_USERS:
                return _estimated(conn, estimate)
            try:
                return _counted(conn, COUNT_TIME_LIMIT_SECONDS)
            except Exception as error:
                if not _is_cancelled(error):
                    raise
                conn.rollback()
                # a count that ran out of time was not counting an empty table, whatever a stale estimate says
                return _estimated(conn, estimate or None)
        return _counted(conn, None)


_COUNT_USERS = "SELECT count(*), count(migrated_to_sanctum_at), max(migrated_to_sanctum_at) FROM users"
_COUNT_FAILURES = "SELECT count(*) FROM token_migration_failures"


def _counted(conn: Connection, limit: float | None) -> dict[str, Any]:
    with conn.begin():
        # Typed, so every driver's timestamp (SQLite's is text) comes back as a datetime.
        total, migrated, last = conn.execute(_limited(conn, limit, _COUNT_USERS).columns(
            column("total", Integer), column("migrated", Integer), column("last", Timestamp))).one()
        failed = conn.execute(_limited(conn, limit, _COUNT_FAILURES)).scalar_one()
    return {
        "total_users": total,
        "migrated_users": migrated,
        "failed_migrations": failed,
        "migration_percentage": percentage(migrated, total),
        "last_migration_at": iso(last),
        "exact": True,
    }


def _estimated(conn: Connection, total: int | None) -> dict[str, Any]:
    """The planner's figures: users from the table's row estimate, migrated users (PostgreSQL) from the share of
    non-null ``migrated_to_sanctum_at`` its statistics recorded at the last ANALYZE; what it does not know is
    null. Failures are counted (small unless a run went wrong), within the time limit, else estimated too."""
    migrated = None
    if conn.dialect.name == "postgresql":
        null_frac = conn.execute(text(
            "SELECT null_frac FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'users' "
            "AND attname = 'migrated_to_sanctum_at'")).scalar()
        if null_frac is not None and total is not None:
            migrated = round((1 - float(null_frac)) * total)
        conn.rollback()
    try:
        with conn.begin():
            failed = conn.execute(_limited(conn, COUNT_TIME_LIMIT_SECONDS, _COUNT_FAILURES)).scalar_one()
    except Exception as error:
        if not _is_cancelled(error):
            raise
        conn.rollback()
        failed = _estimated_rows(conn, "token_migration_failures") or None
    return {
        "total_users": total,
        "migrated_users": migrated,
        "failed_migrations": failed,
        "migration_percentage": percentage(migrated, total) if migrated is not None and total else None,
        "last_migration_at": None,
        "exact": False,
    }


def _estimated_rows(conn: Connection, table: str) -> int | None:
    """The planner's row estimate of ``table`` (kept by ANALYZE / autovacuum; InnoDB's sampled count); None when
    it has none."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).scalar()
        value = None if rows is None or rows < 0 else int(rows)  # -1: never analyzed (PostgreSQL 14+)
    else:
        if not getattr(conn.dialect, "is_mariadb", False):
            # MySQL 8 answers information_schema from a cache kept for a day by default: ask InnoDB now.
            # (MySQL 5.7 has no cache and no such variable.)
            with contextlib.suppress(Exception):
                conn.exec_driver_sql("SET SESSION information_schema_stats_expiry = 0")
        value = conn.execute(text(
            "SELECT table_rows FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_name = :t"), {"t": table}).scalar()
        value = None if value is None else int(value)
    conn.rollback()
    return value


def _limited(conn: Connection, limit: float | None, sql: str) -> TextClause:
    """``sql`` cancelled by the server after ``limit`` seconds (None: no limit): PostgreSQL's statement_timeout
    for this transaction, MariaDB's max_statement_time for this statement, MySQL 8's MAX_EXECUTION_TIME hint."""
    if limit is None:
        return text(sql)
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL statement_timeout = {max(1, int(limit * 1000))}"))
        return text(sql)
    if getattr(conn.dialect, "is_mariadb", False):
        return text(f"SET STATEMENT max_statement_time={limit:.3f} FOR {sql}")
    return text(sql.replace("SELECT ", f"SELECT /*+ MAX_EXECUTION_TIME({max(1, int(limit * 1000))}) */ ", 1))


def _is_cancelled(error: Exception) -> bool:
    message = str(error)
    # PostgreSQL's query_canceled (statement_timeout); MariaDB's 1969; MySQL's 3024.
    return "57014" in message or "(1969," in message or "(3024," in message


class CachedStats:
    """Bounded ``stats()`` recomputed at most every ``max_age`` seconds: while a run executes, /progress is polled
    every second or so, and each ``stats()`` counts the users table, which competes with the run for the
    database. The run's own counters stay live in the progress."""

    def __init__(self, engine: Engine, max_age: float) -> None:
        self.engine, self.max_age = engine, max_age
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._value is None or now - self._at >= self.max_age:
            self._value, self._at = stats(self.engine, bounded=True), now
        return dict(self._value)
