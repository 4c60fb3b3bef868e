"""Errors the state machines act on, and the short error line a failed run keeps.

Step Functions matches a Lambda failure by its ``errorType``: the exception's class name, not its base
classes. So the workflow re-raises the transient failures of the database and of Redis under two names the
ASL ``Retry`` lists (``TransientDatabaseError``, ``TransientRedisError``; the chunk steps also retry
``aws.errors.TransientLedgerError``, a count the run ledger turned away); everything else fails the chunk
at once and goes to the failure path, because retrying a bug only delays the report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# SQLAlchemy and redis-py are imported when a step actually runs database or Redis work (in
# ``transient_errors``), not when a handler imports this module: mark-failed, say, needs neither.


class TransientError(Exception):
    """A failure that another attempt a little later is likely not to meet."""


class TransientDatabaseError(TransientError):
    """The database dropped the connection, refused one, or cancelled the transaction (deadlock, serialization)."""


class TransientRedisError(TransientError):
    """Redis (the session store and the run's index) could not be reached or is failing over."""


class InvalidStepInput(ValueError):
    """The state machine handed a step something it cannot work with: a definition bug, never retried."""


# SQLSTATEs worth another attempt: connection exceptions (08), transaction rollbacks such as deadlocks and
# serialization failures (40), too many connections (53300), server shutting down or starting (57P01-57P03).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53300", "57P01", "57P02", "57P03")

def _redis_transient() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        *(getattr(redis.exceptions, name) for name in ("ClusterDownError", "TryAgainError")
          if hasattr(redis.exceptions, name)),
    )


def __getattr__(name: str) -> Any:  # PEP 562: REDIS_TRANSIENT without importing redis-py up front
    if name == "REDIS_TRANSIENT":
        return _redis_transient()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error, when the driver says (pg8000 puts it under 'C' in its first arg)."""
    orig = getattr(error, "orig", error)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code:
        return str(code)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], dict) and args[0].get("C"):
        return str(args[0]["C"])
    return None


def is_transient_database_error(error: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, (OperationalError, InterfaceError)):
        return True
    code = sqlstate(error) if isinstance(error, DBAPIError) else None
    return bool(code) and code.startswith(_TRANSIENT_SQLSTATE_PREFIXES)


@contextmanager
def transient_errors() -> Iterator[None]:
    """Re-raise transient database and Redis failures under the names the state machines retry.

    The message names the failure's class and SQLSTATE only: driver messages can quote SQL and parameters,
    and this text ends up in the execution history.
    """
    from sqlalchemy.exc import DBAPIError

    redis_transient = _redis_transient()
    try:
        yield
    except DBAPIError as error:
        if not is_transient_database_error(error):
            raise
        code = sqlstate(error)
        detail = type(getattr(error, "orig", None) or error).__name__ + (f" (SQLSTATE {code})" if code else "")
        raise TransientDatabaseError(f"the database failed transiently: {detail}") from error
    except redis_transient as error:
        # redis-py's messages name the host and port ("Error 111 connecting to h:6379. Connection refused."),
        # never a password: the operator reads this line in the run's progress to know what to fix.
        lines = str(error).strip().splitlines()
        detail = ": " + _URL_CREDENTIALS.sub(r"\g<scheme>***@", lines[0])[:200] if lines else ""
        raise TransientRedisError(f"Redis failed transiently: {type(error).__name__}{detail}") from error


_MAX_ERROR_CHARS = 300
# scheme://user:password@host: never let a URL's credentials reach the run item.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s/@]*@", re.IGNORECASE)


def short_error(error: str | None, cause: Any = None) -> str:
    """One line for the run item from a Step Functions ``{"Error", "Cause"}`` pair.

    A Lambda's Cause is JSON with ``errorType``, ``errorMessage`` and ``stackTrace``: only the message is
    kept, first line, bounded; the stack trace never leaves the execution history.
    """
    name = (error or "").strip()
    message = ""
    if isinstance(cause, str) and cause.strip():
        try:
            doc = json.loads(cause)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            message = str(doc.get("errorMessage") or "")
            name = name or str(doc.get("errorType") or "")
        else:  # a States.* error's cause is plain text
            message = cause
    elif isinstance(cause, dict):
        message = str(cause.get("errorMessage") or "")
        name = name or str(cause.get("errorType") or "")
    name = name or "Error"
    lines = message.strip().splitlines()
    message = _URL_CREDENTIALS.sub(r"\g<scheme>***@", lines[0].strip() if lines else "")
    text = f"{name}: {message}" if message else name
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
