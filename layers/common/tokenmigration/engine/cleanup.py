"""``cleanup(dry_run)``: prune what this tool created and nobody can use any more.

Only rows in the ledger are candidates, so tokens and sessions the app made are
never touched. Migration tokens are pruned with ``sanctum:prune-expired``
semantics; a token that is in use, or still deliverable through the exchange,
is revoked only when MIGRATION_TOKEN_UNUSED_RETENTION_DAYS says so, and then only
if it was never used.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, or_, select, update

from tokenmigration.config import Settings
from tokenmigration.db.schema import (
    ledger_failures,
    ledger_rollbacks,
    ledger_sessions,
    ledger_tokens,
    sessions,
    tokens,
    users,
)
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.session_store import RedisSessionStore


def cleanup(engine: Engine, settings: Settings, dry_run: bool = False, has_expires_at: bool = True,
            session_store: RedisSessionStore | None = None) -> dict[str, Any]:
    """With ``session_store`` (Laravel's redis session driver), sessions expire in Redis by themselves; the
    ledger rows of keys that are gone are removed."""
    now = utcnow()
    hours = timedelta(hours=settings.cleanup_prune_hours)
    ours = tokens.c.id.in_(select(ledger_tokens.c.token_id))

    expired = []
    if has_expires_at:
        expired.append(and_(tokens.c.expires_at.is_not(None), tokens.c.expires_at < now - hours))
    if settings.sanctum_expiration:
        expired.append(tokens.c.created_at < now - timedelta(minutes=settings.sanctum_expiration) - hours)
    if settings.migration_token_unused_retention_days:
        expired.append(and_(
            tokens.c.last_used_at.is_(None),
            tokens.c.created_at < now - timedelta(days=settings.migration_token_unused_retention_days),
        ))
    stale_before = int(now.replace(tzinfo=UTC).timestamp()) - settings.laravel_session_lifetime * 60
    our_sessions = sessions.c.id.in_(select(ledger_sessions.c.session_id))
    stale_sessions = and_(our_sessions, sessions.c.last_activity < stale_before)
    # Ledger rows whose row is gone (Laravel's own GC, a logout, a regenerated id) undo nothing.
    orphan_tokens = ~exists().where(tokens.c.id == ledger_tokens.c.token_id)
    orphan_sessions = ~exists().where(sessions.c.id == ledger_sessions.c.session_id)
    # A recorded failure of a user who has been migrated since (or was deleted) is history.
    settled = ~exists().where(users.c.id == ledger_failures.c.user_id, users.c.migrated_to_sanctum_at.is_(None))

    # A dry run does the same work and rolls it back, so its counts are exactly what a real run removes.
    details: dict[str, int] = {"expired_tokens": 0}
    with engine.connect() as conn, conn.begin() as transaction:
        if expired:
            doomed = select(tokens.c.id).where(ours, or_(*expired)).scalar_subquery()
            conn.execute(update(users).where(users.c.migration_token_id.in_(doomed)).values(migration_token_id=None))
            # The same condition, not `id IN (doomed)`: MySQL refuses a DELETE whose subquery reads its own table.
            details["expired_tokens"] = conn.execute(delete(tokens).where(ours, or_(*expired))).rowcount
        if session_store is None:
            details["stale_sessions"] = conn.execute(delete(sessions).where(stale_sessions)).rowcount
            gone_sessions = conn.execute(delete(ledger_sessions).where(orphan_sessions)).rowcount
        else:
            details["stale_sessions"] = 0
            gone_sessions = _drop_gone_keys(conn, session_store)
        details["ledger_rows"] = conn.execute(delete(ledger_tokens).where(orphan_tokens)).rowcount + gone_sessions
        details["settled_failures"] = conn.execute(delete(ledger_failures).where(settled)).rowcount
        # Rollback runs' chunk records matter while the run can be retried or redriven (14 days).
        details["old_rollback_records"] = conn.execute(
            delete(ledger_rollbacks).where(ledger_rollbacks.c.created_at < now - timedelta(days=30))
        ).rowcount
        if dry_run:
            transaction.rollback()
    return {"dry_run": dry_run, "cleaned_items": sum(details.values()), "details": details}


# Ledger rows read per page by the redis-driver cleanup: at 100 million users the ledger holds hundreds of
# millions of session ids, more than a Lambda's memory.
LEDGER_PAGE = 5000


def _drop_gone_keys(conn: Connection, session_store: RedisSessionStore) -> int:
    """Remove the ledger rows of Laravel session keys that are gone (expired, or a logout), a page of the
    ledger at a time in key order, so memory does not grow with the ledger."""
    user_id, session_id = ledger_sessions.c.user_id, ledger_sessions.c.session_id
    removed, after = 0, None
    while True:
        page = select(user_id, session_id).order_by(user_id, session_id).limit(LEDGER_PAGE)
        if after is not None:  # written out rather than a row comparison: every database walks the key with it
            page = page.where(or_(user_id > after[0], and_(user_id == after[0], session_id > after[1])))
        rows = conn.execute(page).all()
        if not rows:
            return removed
        ids = [sid for _, sid in rows]
        alive = session_store.existing(ids)
        gone = [sid for sid in ids if sid not in alive]
        for start in range(0, len(gone), 1000):
            removed += conn.execute(delete(ledger_sessions).where(session_id.in_(gone[start : start + 1000]))).rowcount
        if len(rows) < LEDGER_PAGE:
            return removed
        after = rows[-1]
