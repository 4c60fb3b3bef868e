"""Turn connection and schema failures into one clear line (no traceback, no password)."""

from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.exc import InterfaceError as SAInterfaceError

from tokenmigration.db.upgrade import SchemaError
from tokenmigration.engine.errors import IndexWontFit, SessionIndexMissing


def describe(exc: BaseException) -> str | None:
    """One line for an infrastructure failure the operator can act on, or None for a bug (traceback)."""
    if isinstance(exc, SchemaError):
        return str(exc)
    if isinstance(exc, IndexWontFit):
        return str(exc)
    if isinstance(exc, SessionIndexMissing):
        # A Redis failover or FLUSHDB mid-run does this; no chunk ran without its sessions.
        return f"{_first_line(exc)}; every finished chunk is committed"
    if isinstance(exc, DBAPIError) and _missing_database(exc):
        return f"the database named in DATABASE_URL does not exist ({_first_line(exc.orig)})"
    if isinstance(exc, OperationalError | SAInterfaceError):
        return f"cannot reach the database at DATABASE_URL ({type(exc.orig).__name__}: {_first_line(exc.orig)})"
    if isinstance(exc, ProgrammingError):
        return f"the database refused a statement: {_first_line(exc.orig)}"
    if isinstance(exc, DBAPIError):
        return f"the database failed: {type(exc.orig).__name__}: {_first_line(exc.orig)}"
    if isinstance(exc, RedisClusterException):
        hint = ("; remove ?cluster=true from REDIS_URL for a single node"
                if "cluster mode is not enabled" in str(exc).lower() else "")
        return f"cannot use the Redis Cluster at REDIS_URL ({_first_line(exc)}){hint}"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"cannot reach Redis at REDIS_URL ({_first_line(exc)})"
    if isinstance(exc, redis.ResponseError) and "db index is out of range" in str(exc).lower():
        return ("Redis at REDIS_URL has no such database number (DB index is out of range: the server has "
                "`databases` of them, 16 by default, numbered from 0)")
    if isinstance(exc, redis.RedisError):
        return f"Redis at REDIS_URL failed: {type(exc).__name__}: {_first_line(exc)}"
    return None


def _missing_database(exc: DBAPIError) -> bool:
    fields = _server_fields(exc.orig)
    if fields.get("C") == "3D000":  # PostgreSQL: invalid_catalog_name
        return True
    args = getattr(exc.orig, "args", ())
    return bool(args) and args[0] == 1049  # MySQL/MariaDB: ER_BAD_DB_ERROR


def _server_fields(exc: BaseException | None) -> dict:
    """pg8000 carries the server's error fields as a dict in args[0] (S, C, M, ...)."""
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], dict) else {}


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return "no detail"
    fields = _server_fields(exc)
    if fields.get("M"):
        return str(fields["M"]).strip().splitlines()[0]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
