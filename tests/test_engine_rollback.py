"""Rollback removes exactly what migration created; stats and cleanup read the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, text, update

from helpers import add_app_token, add_users, express, ledgered_session_rows, ledgered_token_rows, put_session, snapshot
from tokenmigration.db.schema import ledger_failures, sessions, tokens, users
from tokenmigration.engine import errors
from tokenmigration.engine.cleanup import cleanup
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.reporting import stats
from tokenmigration.engine.verify import token_verifies


def migrate_all(migrator, run_id="run-1", chunk_size=3):
    plan = migrator.plan(run_id, chunk_size)
    return [migrator.migrate_chunk(c, run_id) for c in plan.chunks]


def rollback_all(migrator, chunk_size=3):
    return [migrator.rollback_chunk(c) for c in migrator.plan_rollback(chunk_size)]


def test_rollback_restores_the_three_tables_except_what_the_app_made(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3, 4, 5])
    add_app_token(db_engine, 5)
    for uid in (1, 2, 2, 3):
        put_session(redis_client, f"s{uid}-{redis_client.dbsize()}", express(uid))
    with db_engine.begin() as conn:  # a Laravel session the app already had
        conn.execute(insert(sessions).values(id="A" * 40, user_id=4, payload="e30=", last_activity=1))
    before = snapshot(db_engine)
    migrate_all(migrator)
    # Between migration and rollback the app keeps working: a user makes a token, a session appears.
    user_token = add_app_token(db_engine, 1, name="made-by-user")
    with db_engine.begin() as conn:
        conn.execute(insert(sessions).values(id="B" * 40, user_id=1, payload="e30=", last_activity=2))
    results = rollback_all(migrator)
    after = snapshot(db_engine)
    assert sum(r.users for r in results) == 4
    assert sum(r.tokens_revoked for r in results) == 4 and sum(r.sessions_removed for r in results) == 4
    assert after["users"] == before["users"]
    assert [t for t in after["tokens"] if t[0] != user_token] == before["tokens"]
    assert [s for s in after["sessions"] if s[0] != "B" * 40] == before["sessions"]
    assert any(t[0] == user_token for t in after["tokens"])
    with db_engine.connect() as conn:
        assert ledgered_token_rows(conn) == [] and ledgered_session_rows(conn) == []
        assert conn.execute(select(func.count()).select_from(ledger_failures)).scalar_one() == 0
    again = rollback_all(migrator)  # nothing left to undo: a second rollback is a no-op
    assert again and not any((r.users, r.tokens_revoked, r.sessions_removed) != (0, 0, 0) for r in again)


def test_rollback_chunk_twice_is_harmless(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    migrate_all(migrator)
    chunk = migrator.plan_rollback(10)[0]
    first = migrator.rollback_chunk(chunk)
    second = migrator.rollback_chunk(chunk)
    assert (first.users, first.tokens_revoked) == (2, 2)
    assert (second.users, second.tokens_revoked, second.sessions_removed) == (0, 0, 0)


def test_a_rollback_chunk_retried_after_it_committed_reports_the_same_counts(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    put_session(redis_client, "s1", express(1))
    migrate_all(migrator)
    chunk = migrator.plan_rollback(10)[0]
    first = migrator.rollback_chunk(chunk, "rollback-1")
    retry = migrator.rollback_chunk(chunk, "rollback-1")  # the response of the first attempt was lost
    other = migrator.rollback_chunk(chunk, "rollback-2")
    for result in (first, retry):
        assert (result.users, result.tokens_revoked, result.sessions_removed) == (2, 2, 1)
    assert (other.users, other.tokens_revoked, other.sessions_removed) == (0, 0, 0)


def test_migrate_again_after_rollback(migrator, db_engine, redis_client):
    add_users(db_engine, [1])
    put_session(redis_client, "s1", express(1))
    migrate_all(migrator)
    rollback_all(migrator)
    again = migrate_all(migrator, run_id="run-2")
    assert again[0].migrated_users == 1 and again[0].sessions_migrated == 1


def test_single_user_paths(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    add_app_token(db_engine, 2)
    done = migrator.migrate_user(1, "single", deliver_token=True)
    assert done.token is not None and token_verifies(db_engine, done.token.plaintext(done.token_id))
    assert not token_verifies(db_engine, done.token.plaintext(done.token_id)[:-1] + "x")
    with pytest.raises(errors.AlreadyMigrated):
        migrator.migrate_user(1, "single")
    with pytest.raises(errors.HoldsTokens):
        migrator.migrate_user(2, "single")
    with pytest.raises(errors.UnknownUser):
        migrator.migrate_user(404, "single")
    undone = migrator.rollback_user(1)
    assert (undone.users, undone.tokens_revoked) == (1, 1)
    with pytest.raises(errors.NotMigrated):
        migrator.rollback_user(1)
    with pytest.raises(errors.UnknownUser):
        migrator.rollback_user(404)


def test_bulk_migration_keeps_no_plaintext(migrator, db_engine):
    add_users(db_engine, [1])
    plan = migrator.plan("run-1", 10)
    outcome = migrator._migrate_range(0, 1, 1, [], "run-1", False)
    assert outcome.minted == {} and plan.total_users == 1


def test_whole_rollback_covers_single_user_migrations(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    migrator.migrate_user(2, "single")
    migrate_all(migrator)
    results = rollback_all(migrator)
    assert sum(r.users for r in results) == 2
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == 0


def test_stats_come_from_the_database(migrator, db_engine):
    assert stats(db_engine) == {"total_users": 0, "migrated_users": 0, "failed_migrations": 0,
                                "migration_percentage": 0.0, "last_migration_at": None, "exact": True}
    add_users(db_engine, [1, 2, 3])
    migrator.migrate_user(1, "single")
    with db_engine.begin() as conn:
        conn.execute(insert(ledger_failures).values(user_id=2, run_id="r", code="user_locked", message="m",
                                                    failed_at=utcnow()))
    data = stats(db_engine)
    assert (data["total_users"], data["migrated_users"], data["failed_migrations"]) == (3, 1, 1)
    assert data["migration_percentage"] == 33.33
    assert data["last_migration_at"].endswith("Z")


def test_cleanup_prunes_only_what_nobody_can_use(settings, db_engine, redis_client):
    from tokenmigration.engine.migrator import Migrator

    migrator = Migrator(settings, db_engine, redis_client)
    add_users(db_engine, [1, 2, 3, 4])
    app_token = add_app_token(db_engine, 4)
    for uid in (1, 2, 3):
        put_session(redis_client, f"s{uid}", express(uid))
    migrate_all(migrator, chunk_size=10)
    now = utcnow()
    with db_engine.begin() as conn:
        # user 1's token expired two days ago; user 2's session went stale; the app's token expired too
        conn.execute(update(tokens).where(tokens.c.tokenable_id.in_([1, 4])).values(expires_at=now - timedelta(days=2)))
        conn.execute(update(sessions).where(sessions.c.user_id == 2).values(last_activity=1))
        # Laravel's own GC removed user 3's session: its ledger row is now an orphan
        conn.execute(text("DELETE FROM sessions WHERE user_id = 3"))
    before = snapshot(db_engine)
    dry = cleanup(db_engine, settings, dry_run=True)
    assert snapshot(db_engine) == before
    real = cleanup(db_engine, settings)
    assert dry == {**real, "dry_run": True}
    assert real["details"] == {"expired_tokens": 1, "stale_sessions": 1, "ledger_rows": 3, "settled_failures": 0,
                               "old_rollback_records": 0}
    with db_engine.connect() as conn:
        left = set(conn.execute(select(tokens.c.id)).scalars())
        token_of_1 = conn.execute(select(users.c.migration_token_id).where(users.c.id == 1)).scalar_one()
    assert app_token in left and len(left) == 3 and token_of_1 is None
    assert cleanup(db_engine, settings)["cleaned_items"] == 0


def test_cleanup_keeps_unused_tokens_unless_retention_says_so(settings, db_engine, redis_client):
    from tokenmigration.engine.migrator import Migrator

    add_users(db_engine, [1, 2])
    migrate_all(Migrator(settings, db_engine, redis_client))
    old = utcnow() - timedelta(days=40)
    with db_engine.begin() as conn:
        conn.execute(update(tokens).values(created_at=old))
        conn.execute(update(tokens).where(tokens.c.tokenable_id == 2).values(last_used_at=utcnow()))
    assert cleanup(db_engine, settings)["details"]["expired_tokens"] == 0
    strict = settings.replace(migration_token_unused_retention_days=30)
    assert cleanup(db_engine, strict)["details"]["expired_tokens"] == 1  # user 2's token is in use: kept


def test_cleanup_walks_the_ledger_a_page_at_a_time_and_goes_on_where_it_stopped(settings, db_engine, redis_client):
    """At 100 million users one transaction over the ledger would outlast any Lambda and never commit: each page
    of users commits on its own, a deadline stops the walk after the page that passes it, and the next call goes
    on from ``resume_after_user_id``. The pages add up to exactly what one walk removes."""
    from tokenmigration.engine.migrator import Migrator

    add_users(db_engine, range(1, 8))
    for uid in range(1, 8):
        put_session(redis_client, f"s{uid}", express(uid))
    migrate_all(Migrator(settings, db_engine, redis_client), chunk_size=10)
    with db_engine.begin() as conn:  # every migrated session went stale; users 9-99 were never ledgered
        conn.execute(update(sessions).values(last_activity=1))
        conn.execute(insert(ledger_failures).values(user_id=100, run_id="r", code="user_locked", message="m",
                                                    failed_at=utcnow()))  # user 100 does not exist: settled

    whole = cleanup(db_engine, settings, dry_run=True)
    assert whole["complete"] is True and whole["resume_after_user_id"] is None
    assert whole["details"] == {"expired_tokens": 0, "stale_sessions": 7, "ledger_rows": 7, "settled_failures": 1,
                                "old_rollback_records": 0}

    calls, after, ticks = [], None, iter(range(1000))
    while True:  # a clock past the deadline at every look: one page per call, of 3 user ids
        report = cleanup(db_engine, settings, after_user_id=after, deadline=0, clock=lambda: next(ticks),
                         page_users=3)
        calls.append(report)
        if len(calls) == 1:  # the first page is committed already, the rest untouched
            with db_engine.connect() as conn:
                left = sorted(conn.execute(select(sessions.c.user_id)).scalars())
            assert left == [4, 5, 6, 7] and report["resume_after_user_id"] == 3
        if report["complete"]:
            break
        after = report["resume_after_user_id"]
    # pages [1-3] [4-6] [7-9]; then the walk jumps to user 100, the next ledgered id, and ends there
    assert [c["resume_after_user_id"] for c in calls] == [3, 6, 9, None]
    assert [c["complete"] for c in calls] == [False, False, False, True]
    assert {key: sum(c["details"][key] for c in calls) for key in whole["details"]} == whole["details"]
    with db_engine.connect() as conn:
        assert ledgered_session_rows(conn) == []
        assert conn.execute(select(func.count()).select_from(ledger_failures)).scalar_one() == 0
    assert cleanup(db_engine, settings)["cleaned_items"] == 0


def _migrated_users(db_engine, ids):
    with db_engine.begin() as conn:
        conn.execute(update(users).where(users.c.id.in_(ids)).values(migrated_to_sanctum_at=utcnow()))


def _analyze(db_engine):
    with db_engine.begin() as conn:
        conn.execute(text("ANALYZE users" if db_engine.dialect.name == "postgresql" else "ANALYZE TABLE users"))


def test_bounded_stats_count_a_small_users_table_exactly(db_engine):
    add_users(db_engine, [1, 2, 3, 4])
    _migrated_users(db_engine, [1, 2, 3])
    bounded, counted = stats(db_engine, bounded=True), stats(db_engine)
    assert bounded == counted and bounded["exact"] is True
    assert (bounded["total_users"], bounded["migrated_users"], bounded["migration_percentage"]) == (4, 3, 75.0)


def test_bounded_stats_of_a_table_too_big_to_count_are_the_planners_estimates(server_engine, monkeypatch):
    """At 100 million users a count outlasts API Gateway's 29 s: above EXACT_COUNT_MAX_USERS (by the planner's
    estimate) /stats answers the estimates, marked, without scanning; the CLI still counts."""
    import tokenmigration.engine.reporting as reporting

    add_users(server_engine, range(1, 41))
    _migrated_users(server_engine, range(1, 31))
    _analyze(server_engine)
    monkeypatch.setattr(reporting, "EXACT_COUNT_MAX_USERS", 10)

    estimated = stats(server_engine, bounded=True)
    assert estimated["exact"] is False and estimated["total_users"] == 40 and estimated["last_migration_at"] is None
    if server_engine.dialect.name == "postgresql":  # the share of non-null values ANALYZE recorded
        assert (estimated["migrated_users"], estimated["migration_percentage"]) == (30, 75.0)
    else:  # MariaDB keeps no such statistic by default
        assert (estimated["migrated_users"], estimated["migration_percentage"]) == (None, None)
    assert stats(server_engine)["exact"] is True


def test_bounded_stats_give_up_on_a_count_that_does_not_end_in_time(server_engine, monkeypatch):
    """A count the server cancels at the time limit (here: it waits for a lock another connection holds on
    users) gives the estimates instead of keeping the API waiting until API Gateway gives up."""
    import tokenmigration.engine.reporting as reporting

    add_users(server_engine, [1, 2, 3])
    with server_engine.begin() as conn:
        conn.execute(insert(ledger_failures), [{"user_id": uid, "run_id": "r", "code": "c", "message": "m",
                                                "failed_at": utcnow()} for uid in (1, 2)])
    _analyze(server_engine)
    with server_engine.begin() as conn:
        conn.execute(text("ANALYZE token_migration_failures" if server_engine.dialect.name == "postgresql"
                          else "ANALYZE TABLE token_migration_failures"))
    monkeypatch.setattr(reporting, "COUNT_TIME_LIMIT_SECONDS", 0.3)

    def while_locked(*tables: str) -> dict:
        holder = server_engine.connect()
        try:
            if server_engine.dialect.name == "postgresql":
                holder.begin()
                holder.execute(text(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE"))
            else:
                holder.execute(text("LOCK TABLES " + ", ".join(f"{t} WRITE" for t in tables)))
            return stats(server_engine, bounded=True)
        finally:
            if server_engine.dialect.name != "postgresql":
                holder.execute(text("UNLOCK TABLES"))
            holder.rollback()
            holder.close()

    estimated = while_locked("users")
    assert (estimated["exact"], estimated["total_users"], estimated["failed_migrations"]) == (False, 3, 2)
    # the failures' count runs out of time too: their estimate, from the same statistics
    estimated = while_locked("users", "token_migration_failures")
    assert (estimated["exact"], estimated["total_users"], estimated["failed_migrations"]) == (False, 3, 2)
    assert stats(server_engine, bounded=True)["exact"] is True  # the locks are gone: counted again


def test_the_rollback_plan_covers_ledgered_users_deleted_since_wherever_their_ids_fall(settings, db_engine,
                                                                                     redis_client):
    """Rollback is planned over the users table's key (a plan over the ledger's 400 million rows at 100 million
    users would outlast the planning Lambda); its chunks are contiguous and stretched to the ledger's ends, so
    what the tool made for users deleted since, below, between or above today's ids, is undone too."""
    from tokenmigration.engine.migrator import Migrator

    migrator = Migrator(settings, db_engine, redis_client)
    add_users(db_engine, [3, 10, 11, 20, 30, 31, 50])
    for uid in (3, 10, 20, 30, 50):
        migrator.migrate_user(uid, "run-1")
    with db_engine.begin() as conn:  # the app deleted users 3, 20 and 50, not what the tool made for them
        conn.execute(text("DELETE FROM users WHERE id IN (3, 20, 50)"))

    chunks = migrator.plan_rollback(2)
    assert [(c.lo, c.hi, c.users) for c in chunks] == [(3, 11, 2), (12, 50, 2)]
    results = [migrator.rollback_chunk(c) for c in chunks]
    assert sum(r.tokens_revoked for r in results) == 5 and sum(r.users for r in results) == 2
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == 0
        assert ledgered_token_rows(conn) == []

    with db_engine.begin() as conn:  # every user gone: one chunk over what the ledger still names
        conn.execute(text("DELETE FROM users"))
        conn.execute(insert(ledger_failures).values(user_id=7, run_id="r", code="c", message="m", failed_at=utcnow()))
    assert [(c.lo, c.hi, c.users) for c in migrator.plan_rollback(2)] == [(7, 7, 0)]
    with db_engine.begin() as conn:
        conn.execute(text("DELETE FROM token_migration_failures"))
    assert migrator.plan_rollback(2) == []
