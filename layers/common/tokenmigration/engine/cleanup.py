"""``cleanup(dry_run)``: prune what this tool created and nobody can use any more.

Only rows in the ledger are candidates, so tokens and sessions the app made are
never touched. Migration tokens are pruned with ``sanctum:prune-expired``
semantics; a token that is in use, or still deliverable through the exchange,
is revoked only when MIGRATION_TOKEN_UNUSED_RETENTION_DAYS says so, and then only
if it was never used.

The ledger is walked in pages of user ids, one transaction per page: at 100 million users a single
transaction over the whole ledger would run for hours, hold the row locks of every session it deletes
from the app's live table meanwhile, and never finish inside a Lambda's time limit (so never commit). With a
``deadline`` the walk stops after the page that passes it and says where to resume.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, func, or_, select, text, update

from tokenmigration.config import Settings
from tokenmigration.db.schema import (
    USER_LEDGERS,
    ledger_failures,
    ledger_packed,
    ledger_rollbacks,
    ledger_sessions,
    ledger_tokens,
    sessions,
    tokens,
    users,
)
from tokenmigration.engine import ledger
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.deadlocks import retry_deadlocks
from tokenmigration.engine.session_store import RedisSessionStore

# User ids per page: about 20,000 ledgered sessions when every user is migrated, a fraction of a second of
# index lookups per statement, so a deadline is overrun by little and row locks are held briefly.
PAGE_USERS = 10_000
# Ledger rows read per query by the redis-driver cleanup: a page's session ids, a bounded list at a time.
LEDGER_PAGE = 5000
MAX_USER_ID = 2**63 - 1  # a page's end must still be a bigint
DETAIL_KEYS = ("expired_tokens", "stale_sessions", "ledger_rows", "settled_failures", "old_rollback_records")


@dataclass(frozen=True, slots=True)
class _Rules:
    """What makes a ledgered row prunable, fixed once per call so every page applies the same instant."""

    now: datetime
    expired: list
    stale_before: int


def cleanup(engine: Engine, settings: Settings, dry_run: bool = False, has_expires_at: bool = True,
            session_store: RedisSessionStore | None = None, *, after_user_id: int | None = None,
            deadline: float | None = None, clock: Callable[[], float] = time.monotonic,
            page_users: int | None = None, on_page: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Clean the ledger's users after ``after_user_id`` (all of them when None), a page at a time, until done or
    until ``clock()`` passes ``deadline``. ``complete`` says whether the walk reached the end; if not,
    ``resume_after_user_id`` is where the next call starts. With ``session_store`` (Laravel's redis session
    driver), sessions expire in Redis by themselves; the ledger rows of keys that are gone are removed.

    ``on_page`` hears the last user id of every page once that page is committed (not in a dry run): a caller
    that keeps its place there loses at most one page's work if it is stopped without warning.

    A dry run does every page's work and rolls it back, so its counts are exactly what a real run removes."""
    rules = _rules(settings, has_expires_at)
    details = dict.fromkeys(DETAIL_KEYS, 0)
    if after_user_id is None:  # once per walk, at its start: these rows belong to no user
        with engine.connect() as conn, conn.begin() as transaction:
            # Rollback runs' chunk records matter while the run can be retried or redriven (14 days).
            details["old_rollback_records"] = conn.execute(
                delete(ledger_rollbacks).where(ledger_rollbacks.c.created_at < rules.now - timedelta(days=30))
            ).rowcount
            if dry_run:
                transaction.rollback()
    cursor = after_user_id
    while True:
        with engine.connect() as conn:
            lo = _next_user(conn, cursor)
        if lo is None:
            return _report(dry_run, details, None)
        hi = min(lo + (page_users or PAGE_USERS) - 1, MAX_USER_ID)
        page = functools.partial(_page, engine, lo, hi, rules, session_store, dry_run)
        for key, count in retry_deadlocks(page).items():
            details[key] += count
        cursor = hi
        if on_page is not None and not dry_run:
            on_page(cursor)
        if deadline is not None and clock() >= deadline:
            with engine.connect() as conn:
                more = _next_user(conn, cursor) is not None
            return _report(dry_run, details, cursor if more else None)


def _page(engine: Engine, lo: int, hi: int, rules: _Rules, session_store: RedisSessionStore | None,
          dry_run: bool) -> dict[str, int]:
    """One page in its own transaction (rolled back in a dry run). As a deadlock victim (an exchange of one of
    its users at that moment) it is run again by the caller: nothing of it was kept."""
    with engine.connect() as conn, conn.begin() as transaction:
        counts = _clean_page(conn, lo, hi, rules, session_store)
        if dry_run:
            transaction.rollback()
    return counts


def _report(dry_run: bool, details: dict[str, int], resume_after: int | None) -> dict[str, Any]:
    return {"dry_run": dry_run, "cleaned_items": sum(details.values()), "details": details,
            "complete": resume_after is None, "resume_after_user_id": resume_after}


def _rules(settings: Settings, has_expires_at: bool) -> _Rules:
    now = utcnow()
    hours = timedelta(hours=settings.cleanup_prune_hours)
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
    return _Rules(now, expired, stale_before)


def _next_user(conn: Connection, after: int | None) -> int | None:
    """The smallest ledgered user id after ``after``: one seek of each ledger's key, which leads with it, so
    a walk jumps over id ranges nobody was migrated in."""
    found = []
    for table in ledger.user_ledgers(conn):
        query = select(func.min(table.c.user_id))
        if after is not None:
            query = query.where(table.c.user_id > after)
        value = conn.execute(query).scalar()
        if value is not None:
            found.append(int(value))
    return min(found, default=None)


def _clean_page(conn: Connection, lo: int, hi: int, rules: _Rules,
                session_store: RedisSessionStore | None) -> dict[str, int]:
    in_page = {t: t.c.user_id.between(lo, hi) for t in USER_LEDGERS}
    ours = tokens.c.id.in_(ledger.token_ids(conn, lo, hi))
    # Ledger rows whose row is gone (Laravel's own GC, a logout, a regenerated id) undo nothing.
    orphan_tokens = ~exists().where(tokens.c.id == ledger_tokens.c.token_id)
    orphan_sessions = ~exists().where(sessions.c.id == ledger_sessions.c.session_id)
    # A recorded failure of a user who has been migrated since (or was deleted) is history.
    settled = ~exists().where(users.c.id == ledger_failures.c.user_id, users.c.migrated_to_sanctum_at.is_(None))

    packs = ledger.packs(conn)
    done = {"expired_tokens": 0}
    if rules.expired:
        doomed = select(tokens.c.id).where(ours, or_(*rules.expired)).scalar_subquery()
        conn.execute(update(users).where(users.c.id.between(lo, hi), users.c.migration_token_id.in_(doomed))
                     .values(migration_token_id=None))
    locked = _lock_changing_packed_rows(conn, lo, hi, rules, sessions_in_table=session_store is None) if packs else []
    if rules.expired:
        # The same condition, not `id IN (doomed)`: MySQL refuses a DELETE whose subquery reads its own table.
        done["expired_tokens"] = conn.execute(delete(tokens).where(ours, or_(*rules.expired))).rowcount
    if session_store is None:
        our_sessions = sessions.c.id.in_(select(ledger_sessions.c.session_id).where(in_page[ledger_sessions]))
        done["stale_sessions"] = conn.execute(
            delete(sessions).where(our_sessions, sessions.c.last_activity < rules.stale_before)).rowcount
        done["stale_sessions"] += _drop_stale_packed_sessions(conn, locked, rules.stale_before)
        gone_sessions = conn.execute(
            delete(ledger_sessions).where(in_page[ledger_sessions], orphan_sessions)).rowcount
        gone_sessions += _drop_gone_packed_rows(conn, locked)
    else:
        done["stale_sessions"] = 0
        # Packed rows first: their locks come before the per-session rows', as in the exchange (unpack first).
        gone_sessions = _drop_gone_packed_keys(conn, session_store, lo, hi) if packs else 0
        gone_sessions += _drop_gone_keys(conn, session_store, lo, hi)
    gone_tokens = conn.execute(delete(ledger_tokens).where(in_page[ledger_tokens], orphan_tokens)).rowcount
    gone_tokens += _drop_gone_packed_tokens(conn, locked)
    done["ledger_rows"] = gone_tokens + gone_sessions
    done["settled_failures"] = conn.execute(delete(ledger_failures).where(in_page[ledger_failures], settled)).rowcount
    return done


# Packed rows (engine/ledger.py) lose the entries whose token or session is gone, entry by entry, as the
# per-row ledgers lose rows; a packed row left with neither token nor sessions goes. Counted in entries, so
# ``ledger_rows`` means the same whichever form the ledger took.
_KEEP_ALIVE_SESSIONS = text(f"""
    WITH entries AS (
        SELECT p.user_id, p.run_id, s.session_id, s.source_hash, s.n, live.id IS NOT NULL AS alive
        FROM token_migration_users p
        CROSS JOIN {ledger.unnest_entries('p')} WITH ORDINALITY AS s(session_id, source_hash, n)
        LEFT JOIN sessions live ON live.id = s.session_id
        WHERE p.session_ids IS NOT NULL AND p.user_id BETWEEN :lo AND :hi AND (p.user_id, p.run_id) IN (
            SELECT * FROM unnest(CAST(string_to_array(:users, ',') AS bigint[]), string_to_array(:runs, ',')))
    ), changed AS (
        SELECT user_id, run_id,
               string_agg(session_id, ',' ORDER BY n) FILTER (WHERE alive) AS ids,
               string_agg(source_hash, ',' ORDER BY n) FILTER (WHERE alive) AS hashes,
               count(*) FILTER (WHERE NOT alive) AS gone
        FROM entries GROUP BY user_id, run_id HAVING bool_or(NOT alive)
    )
    UPDATE token_migration_users p SET session_ids = c.ids, source_hashes = c.hashes
    FROM changed c WHERE p.user_id = c.user_id AND p.run_id = c.run_id
    RETURNING c.gone
""")
_KEEP_SESSIONS = text("""
    UPDATE token_migration_users p SET session_ids = NULLIF(k.ids, ''), source_hashes = NULLIF(k.hashes, '')
    FROM unnest(CAST(string_to_array(:users, ',') AS bigint[]), string_to_array(:runs, ','),
                string_to_array(:ids, ';'), string_to_array(:hashes, ';')) AS k(user_id, run_id, ids, hashes)
    WHERE p.user_id BETWEEN :lo AND :hi AND p.user_id = k.user_id AND p.run_id = k.run_id
""")


def _lock_changing_packed_rows(conn: Connection, lo: int, hi: int, rules: _Rules,
                               sessions_in_table: bool) -> list[tuple[int, str]]:
    """Lock the page's packed rows this page will change before anything else of theirs.

    The exchange locks the user, then unpacks the user's packed rows, then changes session rows. A page that
    deleted a session row first and updated its packed row after could hold what an exchange waits for while
    waiting for what the exchange holds: a deadlock. Locked here, after the users (as the exchange) and before
    tokens and sessions, the order is the same in both. Only the rows that will change are locked: a packed
    row names a token that is gone or expiring, or (sessions in the table) a session row that is gone or stale.
    Returns their keys (user id, run id): the rest of the page changes only these, so a page of packed rows
    with nothing to prune reads each session once.
    """
    p = ledger_packed
    changes = [and_(p.c.token_id.is_not(None), ~exists().where(tokens.c.id == p.c.token_id))]
    if rules.expired:
        changes.append(exists().where(tokens.c.id == p.c.token_id, or_(*rules.expired)))
    if sessions_in_table:
        # Stale or gone, by the session's primary key alone. Written as a filter on `last_activity` inside the
        # lookup, it lets a planner whose statistics say no row is that fresh (sessions all stale when last
        # analysed, all refreshed since) walk `sessions_last_activity_index` once per session: minutes a page.
        changes.append(text("""EXISTS (
            SELECT 1 FROM unnest(string_to_array(token_migration_users.session_ids, ',')) AS e(id)
            WHERE coalesce((SELECT s.last_activity FROM sessions s WHERE s.id = e.id), -1) < :stale_before)
        """).bindparams(stale_before=rules.stale_before))
    return [(int(uid), run) for uid, run in conn.execute(
        select(p.c.user_id, p.c.run_id).where(p.c.user_id.between(lo, hi), or_(*changes)).with_for_update())]


def _keys(rows: list[tuple[int, str]]) -> dict[str, str | int]:
    """Packed rows' keys as the two comma-joined lists the statements here unnest (run ids hold no commas), and
    the users' range, which lets the planner read the page's rows by their key and hash the list."""
    return {"users": ",".join(str(uid) for uid, _ in rows), "runs": ",".join(run for _, run in rows),
            "lo": min(uid for uid, _ in rows), "hi": max(uid for uid, _ in rows)}


_IN_KEYS = """user_id BETWEEN :lo AND :hi AND (user_id, run_id) IN (
    SELECT * FROM unnest(CAST(string_to_array(:users, ',') AS bigint[]), string_to_array(:runs, ',')))"""


def _drop_stale_packed_sessions(conn: Connection, locked: list[tuple[int, str]], stale_before: int) -> int:
    """The stale session rows the locked packed rows name (only those can name one: see the lock)."""
    if not locked:
        return 0
    return conn.execute(text(f"""
        DELETE FROM sessions WHERE last_activity < :stale_before AND id IN (
            SELECT unnest(string_to_array(session_ids, ',')) FROM token_migration_users WHERE {_IN_KEYS})
    """), {**_keys(locked), "stale_before": stale_before}).rowcount


def _drop_gone_packed_rows(conn: Connection, locked: list[tuple[int, str]]) -> int:
    if not locked:
        return 0
    gone = sum(int(n) for (n,) in conn.execute(_KEEP_ALIVE_SESSIONS, _keys(locked)))
    _drop_empty_packed_rows(conn, locked)
    return gone


def _drop_gone_packed_tokens(conn: Connection, locked: list[tuple[int, str]]) -> int:
    if not locked:
        return 0
    gone = conn.execute(text(f"""
        UPDATE token_migration_users p SET token_id = NULL
        WHERE {_IN_KEYS} AND token_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM personal_access_tokens t WHERE t.id = p.token_id)
    """), _keys(locked)).rowcount
    _drop_empty_packed_rows(conn, locked)
    return gone


def _drop_empty_packed_rows(conn: Connection, rows: list[tuple[int, str]]) -> None:
    if rows:
        conn.execute(text(f"DELETE FROM token_migration_users WHERE {_IN_KEYS} "
                          "AND token_id IS NULL AND session_ids IS NULL"), _keys(rows))


def _drop_gone_packed_keys(conn: Connection, session_store: RedisSessionStore, lo: int, hi: int) -> int:
    """``_drop_gone_keys`` for packed rows: LEDGER_PAGE rows at a time in key order."""
    user_id, run_id = ledger_packed.c.user_id, ledger_packed.c.run_id
    removed, after, changed = 0, None, []
    while True:
        page = select(user_id, run_id, ledger_packed.c.session_ids, ledger_packed.c.source_hashes).where(
            user_id.between(lo, hi), ledger_packed.c.session_ids.is_not(None)).order_by(user_id, run_id) \
            .limit(LEDGER_PAGE)
        if after is not None:
            page = page.where(or_(user_id > after[0], and_(user_id == after[0], run_id > after[1])))
        rows = conn.execute(page).all()
        if not rows:
            break
        alive = session_store.existing([sid for row in rows for sid in row.session_ids.split(",")])
        keys, kept = [], []
        for row in rows:
            pairs = ledger.split_entries(row.session_ids, row.source_hashes)
            live = [(sid, sh) for sid, sh in pairs if sid in alive]
            if len(live) < len(pairs):
                removed += len(pairs) - len(live)
                keys.append((int(row.user_id), row.run_id))
                kept.append(live)
        if keys:
            changed += keys
            conn.execute(_KEEP_SESSIONS, {
                **_keys(keys),
                "ids": ";".join(",".join(sid for sid, _ in live) for live in kept),
                "hashes": ";".join(",".join(sh for _, sh in live) for live in kept),
            })
        if len(rows) < LEDGER_PAGE:
            break
        after = (rows[-1].user_id, rows[-1].run_id)
    _drop_empty_packed_rows(conn, changed)
    return removed


def _drop_gone_keys(conn: Connection, session_store: RedisSessionStore, lo: int, hi: int) -> int:
    """Remove the ledger rows of Laravel session keys that are gone (expired, or a logout), for the users
    ``lo``..``hi``, LEDGER_PAGE rows at a time in key order, so memory stays bounded."""
    user_id, session_id = ledger_sessions.c.user_id, ledger_sessions.c.session_id
    removed, after = 0, None
    while True:
        page = select(user_id, session_id).where(user_id.between(lo, hi)).order_by(user_id, session_id) \
            .limit(LEDGER_PAGE)
        if after is not None:  # written out rather than a row comparison: every database walks the key with it
            page = page.where(or_(user_id > after[0], and_(user_id == after[0], session_id > after[1])))
        rows = conn.execute(page).all()
        if not rows:
            return removed
        ids = [sid for _, sid in rows]
        alive = session_store.existing(ids)
        gone = [sid for sid in ids if sid not in alive]
        for start in range(0, len(gone), 1000):
            # The user range first: the key leads with user_id, and session_id alone has no index.
            removed += conn.execute(delete(ledger_sessions).where(
                user_id.between(lo, hi), session_id.in_(gone[start : start + 1000]))).rowcount
        if len(rows) < LEDGER_PAGE:
            return removed
        after = rows[-1]
