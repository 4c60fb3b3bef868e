"""Log in again with fresh credentials when the database refuses the ones a warm container holds.

Secrets Manager rotates an RDS secret (every 7 days by default); a container that resolved the secret before
keeps the old password and every new connection would fail until the container is recycled. Instead, the
first refused login re-reads the secret (bypassing every cache) and retries once with what it holds now;
later connections of the engine use the new credentials directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

# PostgreSQL SQLSTATEs: invalid_password, invalid_authorization_specification (no such role, pg_hba).
_PG_AUTH_CODES = {"28P01", "28000"}
# MySQL / MariaDB: access denied (user), access denied (database), auth plugin refused.
_MYSQL_AUTH_CODES = {1044, 1045, 1698}


def is_auth_failure(error: BaseException) -> bool:
    """A refused login, as pg8000 and PyMySQL report it (never a network or server error)."""
    args = getattr(error, "args", ())
    if not args:
        return False
    first = args[0]
    if isinstance(first, dict):  # pg8000: the server's error fields, "C" being the SQLSTATE
        return first.get("C") in _PG_AUTH_CODES
    return isinstance(first, int) and first in _MYSQL_AUTH_CODES


def reauthenticate_on_refusal(engine: Engine, fresh_url: Callable[[], str], extra: dict[str, Any]) -> None:
    """On a refused login, take the URL ``fresh_url`` returns now and connect with it (``extra`` added)."""
    guard = threading.Lock()
    current: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        with guard:
            if current:
                cargs[:] = current["cargs"]
                cparams.clear()
                cparams.update(current["cparams"])
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as error:
            if not is_auth_failure(error):
                raise
            # Name nothing from the secret: the user is enough to tell an operator which login failed.
            logger.warning("database login refused for user %r; re-reading the database secret (rotated?)",
                           cparams.get("user"))
            new_args, new_params = dialect.create_connect_args(make_url(fresh_url()))
            new_params.update(extra)
            with guard:
                current.update(cargs=list(new_args), cparams=dict(new_params))
            cargs[:] = new_args
            cparams.clear()
            cparams.update(new_params)
            return dialect.connect(*cargs, **cparams)
