"""Turn connection and schema failures into one clear line (no traceback, no password)."""

from __future__ import annotations

import redis
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError, ProgrammingError

from tokenmigration.db.upgrade import SchemaError


def describe(exc: BaseException) -> str | None:
    if isinstance(exc, SchemaError):
        return str(exc)
    if isinstance(exc, OperationalError | SAInterfaceError):
        return f"cannot reach the database at DATABASE_URL ({type(exc.orig).__name__}: {_first_line(exc.orig)})"
    if isinstance(exc, ProgrammingError):
        return f"the database refused a statement: {_first_line(exc.orig)}"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"cannot reach Redis at REDIS_URL ({_first_line(exc)})"
    return None


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc and str(exc).strip() else "no detail"
