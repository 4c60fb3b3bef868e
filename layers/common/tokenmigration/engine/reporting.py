"""``stats()``: the migration's state, computed from the database (not from run counters)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, func, select

from tokenmigration.db.schema import ledger_failures, users
from tokenmigration.engine.clock import iso


def percentage(part: int, whole: int) -> float:
    return round(part / whole * 100, 2) if whole else 0.0


def stats(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        total, migrated, last = conn.execute(
            select(
                func.count(),
                func.count(users.c.migrated_to_sanctum_at),
                func.max(users.c.migrated_to_sanctum_at),
            ).select_from(users)
        ).one()
        failed = conn.execute(select(func.count()).select_from(ledger_failures)).scalar_one()
    return {
        "total_users": total,
        "migrated_users": migrated,
        "failed_migrations": failed,
        "migration_percentage": percentage(migrated, total),
        "last_migration_at": iso(last),
    }


class CachedStats:
    """``stats()`` recomputed at most every ``max_age`` seconds: while a run executes, /progress is polled every
    second or so, and each ``stats()`` counts the whole users table (a 16 GB scan at 100 million users), which
    competes with the run for the database. The run's own counters stay live in the progress."""

    def __init__(self, engine: Engine, max_age: float) -> None:
        self.engine, self.max_age = engine, max_age
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._value is None or now - self._at >= self.max_age:
            self._value, self._at = stats(self.engine), now
        return dict(self._value)
