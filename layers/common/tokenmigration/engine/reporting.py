"""``stats()``: the migration's state, computed from the database (not from run counters)."""

from __future__ import annotations

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
