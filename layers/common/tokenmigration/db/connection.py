"""SQLAlchemy engines for PostgreSQL (pg8000, the production path) and SQLite."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from tokenmigration.config import ConfigError


def normalize_url(url: str) -> str:
    """Let ``postgresql://`` and ``postgres://`` mean pg8000, the driver we ship."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+pg8000")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str | None, **kwargs) -> Engine:
    if not url:
        raise ConfigError("DATABASE_URL must be set")
    try:
        url = normalize_url(url)
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy's ArgumentError names the URL, which may hold a password
        raise ConfigError("DATABASE_URL is not a valid SQLAlchemy URL") from exc
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_transactions(engine)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"DATABASE_URL: only PostgreSQL and SQLite are supported, not {parsed.get_backend_name()}")
    return create_engine(url, pool_pre_ping=True, **kwargs)


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
