"""One module per route, each with ``register(app)``: a Lambda function registers only its own route, the
OpenAPI builder registers them all (``ALL``)."""

from __future__ import annotations

from tokenmigration.api.routes import (
    bridge,
    cleanup,
    complete,
    errors,
    exchange,
    migrate_user,
    progress,
    rollback,
    rollback_user,
    start,
    stats,
)

ALL = (start, progress, complete, rollback, stats, cleanup, errors, migrate_user, rollback_user, exchange,
       bridge)
