"""SQLAlchemy engines for PostgreSQL (pg8000), MySQL / MariaDB (PyMySQL) and SQLite."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from tokenmigration.config import ConfigError
from tokenmigration.db import tls as tls_args
from tokenmigration.db.reauth import reauthenticate_on_refusal

# The drivers we ship: pure Python, so the Lambda layer builds on any machine.
_DEFAULT_DRIVERS = {"postgresql": "postgresql+pg8000", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}


def normalize_url(url: str) -> str:
    """Let ``postgresql://`` / ``postgres://`` mean pg8000 and ``mysql://`` / ``mariadb://`` mean PyMySQL."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=_DEFAULT_DRIVERS[parsed.drivername])
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        # Laravel's tables are utf8mb4: anything less mangles user agents with emoji.
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str | None, *, tls: ssl.SSLContext | None = None, fresh_url: Callable[[], str] | None = None,
                **kwargs) -> Engine:
    """``tls``: connect only over TLS verified by this context. ``fresh_url``: where to read the URL again
    when the server refuses the login (a rotated secret; see tokenmigration.db.reauth)."""
    if not url:
        raise ConfigError("DATABASE_URL must be set")
    try:
        url = normalize_url(url)
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy's ArgumentError names the URL, which may hold a password
        raise ConfigError("DATABASE_URL is not a valid SQLAlchemy URL") from exc
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "mysql", "mariadb", "sqlite"):
        raise ConfigError(f"DATABASE_URL: only PostgreSQL, MySQL/MariaDB and SQLite are supported, not {backend}")
    if backend in ("mysql", "mariadb") and parsed.get_driver_name() != "pymysql":
        raise ConfigError("DATABASE_URL: MySQL and MariaDB go through PyMySQL (mysql+pymysql://...)")
    _check_driver(parsed)
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_transactions(engine)
        return engine
    if backend in ("mysql", "mariadb"):
        # READ COMMITTED: InnoDB's REPEATABLE READ takes next-key (gap) locks on every range a write reads,
        # so two workers reading token hashes or ledger ranges on disjoint chunks would block each other and
        # deadlock. Correctness rests on the row locks of each chunk's users (FOR UPDATE), not on a snapshot.
        # (With binary logging on, READ COMMITTED needs binlog_format ROW or MIXED, the defaults since
        # MySQL 5.7.7 and MariaDB 10.2.4.)
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    extra = tls_args.connect_args(backend, tls) if tls is not None else {}
    engine = create_engine(url, pool_pre_ping=True, connect_args=extra, **kwargs)
    if fresh_url is not None:
        reauthenticate_on_refusal(engine, lambda: normalize_url(fresh_url()), extra)
    return engine


def _check_driver(parsed: URL) -> None:
    """A URL naming a dialect or driver this installation lacks (postgresql+psycopg2://) fails here, in one
    line naming the variable, instead of at the first connection with a traceback."""
    try:
        parsed.get_dialect().import_dbapi()
    except Exception as exc:  # NoSuchModuleError, ImportError: what the message says is enough
        raise ConfigError(f"DATABASE_URL names the driver {parsed.drivername!r}, which is not installed here "
                          f"({type(exc).__name__}: {exc}); the README lists the supported URLs") from None


def _sqlite_transactions(engine: Engine) -> None:
    # pysqlite's implicit transactions start late and as DEFERRED; a chunk must hold the write
    # lock from its first read, or two workers could both decide to migrate the same user.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def is_mysql(engine_or_dialect_name: Engine | str) -> bool:
    """MySQL or MariaDB (SQLAlchemy names MariaDB's dialect ``mariadb`` when the URL says so)."""
    name = engine_or_dialect_name if isinstance(engine_or_dialect_name, str) else engine_or_dialect_name.dialect.name
    return name in ("mysql", "mariadb")
