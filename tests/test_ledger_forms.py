"""The packed ledger (one row per user, PostgreSQL bulk chunks) keeps every guarantee the per-row ledger gave.

The same story runs twice on PostgreSQL, once with each form: migration, a retried chunk, the app's own work
in between, cleanup, an exchange, a whole-run rollback. Everything a person or the app could see must be the
same: the counts, what cleanup prunes, which Laravel session the exchange hands back, and the tables after
rollback.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from helpers import (
    add_app_token,
    add_users,
    express,
    ledgered_session_rows,
    ledgered_token_rows,
    put_session,
    reset_database,
)
from tokenmigration.db.schema import ledger_packed, ledger_sessions, ledger_tokens, sessions, tokens, users
from tokenmigration.engine import ledger
from tokenmigration.engine.cleanup import cleanup
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.results import session_fingerprint
from tokenmigration.engine.session_index import IndexedSession
from tokenmigration.engine.verify import verify_migrated

PREFIX = "laravel_database_laravel_cache_"
EXPRESS = {1: ("a1", "b1"), 2: ("a2",), 3: ("a3",), 5: ("a5",), 6: ("a6", "b6", "c6")}  # user 4 has none


def _counts(conn) -> dict[str, int]:
    return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (ledger_tokens, ledger_sessions, ledger_packed)}


def _entries(conn) -> tuple[list, list]:
    """What the ledger names, without the random session ids: (user, source hash) and token owners."""
    return (sorted((u, h) for u, _, h, _ in ledgered_session_rows(conn)),
            sorted(u for u, _, _ in ledgered_token_rows(conn)))


def _story(engine, redis_client, settings, packed: bool) -> dict:
    reset_database(engine)
    redis_client.flushdb()
    migrator = Migrator(settings, engine, redis_client)
    migrator._packed_ledger = packed
    add_users(engine, [1, 2, 3, 4, 5, 6])
    app_token = add_app_token(engine, 3)  # user 3 is skipped for the token; its session is carried
    for uid, sids in EXPRESS.items():
        for sid in sids:
            put_session(redis_client, sid, express(uid))
    seen: dict = {}
    plan = migrator.plan("run-1", 4)
    first = [migrator.migrate_chunk(c, "run-1") for c in plan.chunks]
    again = [migrator.migrate_chunk(c, "run-1") for c in plan.chunks]  # retried after their commits
    seen["counts"] = [(r.migrated_users, r.sessions_migrated, r.skipped_users) for r in first]
    seen["retried"] = [(r.migrated_users, r.sessions_migrated, r.skipped_users) for r in again]
    assert all(c.ok for c in verify_migrated(engine, migrator.settings))
    with engine.connect() as conn:
        seen["forms"] = _counts(conn)
        seen["migrated"] = _entries(conn)
        carried = {h: sid for _, sid, h, _ in ledgered_session_rows(conn)}
    # The app works meanwhile: user 1's second session and user 6's first go stale, Laravel's GC drops user 2's
    # and user 6's second, the app revokes user 5's token and user 4's expires.
    def rows_of(*express_ids):
        return sessions.c.id.in_([carried[session_fingerprint(s)] for s in express_ids])

    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(sessions).where(rows_of("b1", "a6")).values(last_activity=1))
        conn.execute(sessions.delete().where(rows_of("a2", "b6")))
        conn.execute(tokens.delete().where(tokens.c.tokenable_id == 5))
        conn.execute(update(tokens).where(tokens.c.tokenable_id == 4).values(expires_at=now - timedelta(days=2)))
    seen["cleanup_dry"] = cleanup(engine, settings, dry_run=True)["details"]
    seen["cleanup"] = cleanup(engine, settings, page_users=2)["details"]
    seen["cleanup_again"] = cleanup(engine, settings)["cleaned_items"]
    with engine.connect() as conn:
        seen["cleaned"] = _entries(conn)
    # A rotation finds user 2's token in the ledger whichever form holds it, and keeps its id.
    with engine.connect() as conn:
        token_of_2 = conn.execute(select(tokens.c.id).where(tokens.c.tokenable_id == 2)).scalar_one()
    seen["rotation_keeps_the_token"] = migrator.rotate_migration_token(2).token_id == token_of_2
    # The exchange of user 6's live Express session finds the row the bulk run made from it.
    seen["exchange_finds_carried"] = migrator.session_for_express_session(
        IndexedSession("c6", 6), "exchange") == carried[session_fingerprint("c6")]
    seen["exchange_replaces_stale"] = migrator.session_for_express_session(
        IndexedSession("b1", 1), "exchange") != carried[session_fingerprint("b1")]
    with engine.connect() as conn:
        seen["after_exchange"] = _entries(conn)
    rolled = [migrator.rollback_chunk(c) for c in migrator.plan_rollback(4)]
    seen["rollback"] = (sum(r.users for r in rolled), sum(r.tokens_revoked for r in rolled),
                        sum(r.sessions_removed for r in rolled))
    with engine.connect() as conn:
        seen["left"] = {
            "tokens": list(conn.execute(select(tokens.c.id).order_by(tokens.c.id)).scalars()),
            "sessions": conn.execute(select(func.count()).select_from(sessions)).scalar_one(),
            "migrated": conn.execute(select(func.count()).select_from(users)
                                     .where(users.c.migrated_to_sanctum_at.is_not(None))).scalar_one(),
            "ledgers": _counts(conn),
        }
    assert seen["left"]["tokens"] == [app_token]
    return seen


@pytest.fixture
def pg_settings(pg_engine, redis_url):
    from tokenmigration.config import Settings

    return Settings(database_url=pg_engine.url.render_as_string(hide_password=False), redis_url=redis_url,
                    lock_timeout_ms=200)


def test_both_ledger_forms_tell_the_same_story(pg_engine, redis_client, pg_settings):
    per_row = _story(pg_engine, redis_client, pg_settings, packed=False)
    packed = _story(pg_engine, redis_client, pg_settings, packed=True)
    # The forms differ where they should: one row per user, against one per token and one per session.
    assert per_row.pop("forms") == {"token_migration_tokens": 5, "token_migration_sessions": 8,
                                    "token_migration_users": 0}
    assert packed.pop("forms") == {"token_migration_tokens": 0, "token_migration_sessions": 0,
                                   "token_migration_users": 6}
    assert packed == per_row
    assert per_row["counts"] == [(3, 4, 1), (2, 4, 0)] and per_row["retried"] == per_row["counts"]
    # expired token 4; stale b1 and a6; gone a2, b6 (GC) and a6, b1 (just pruned); token 5 revoked, 4 pruned
    assert per_row["cleanup"] == {"expired_tokens": 1, "stale_sessions": 2, "ledger_rows": 6,
                                  "settled_failures": 0, "old_rollback_records": 0}
    assert per_row["cleanup_dry"] == per_row["cleanup"] and per_row["cleanup_again"] == 0
    fp = session_fingerprint
    assert per_row["cleaned"] == (sorted([(1, fp("a1")), (3, fp("a3")), (5, fp("a5")), (6, fp("c6"))]),
                                  [1, 2, 6])
    assert per_row["exchange_finds_carried"] and per_row["exchange_replaces_stale"]
    assert per_row["rotation_keeps_the_token"]
    assert per_row["rollback"] == (5, 3, 5)
    assert per_row["left"] == {"tokens": per_row["left"]["tokens"], "sessions": 0, "migrated": 0,
                               "ledgers": {"token_migration_tokens": 0, "token_migration_sessions": 0,
                                           "token_migration_users": 0}}


def test_the_exchange_unpacks_only_its_own_user(pg_engine, redis_client, pg_settings):
    migrator = Migrator(pg_settings, pg_engine, redis_client)
    add_users(pg_engine, [1, 2])
    for uid, sid in ((1, "x1"), (1, "y1"), (2, "x2")):
        put_session(redis_client, sid, express(uid))
    [migrator.migrate_chunk(c, "run-1") for c in migrator.plan("run-1", 10).chunks]
    with pg_engine.connect() as conn:
        before = ledgered_session_rows(conn)
    migrator.session_for_express_session(IndexedSession("x1", 1), "exchange")
    with pg_engine.connect() as conn:
        assert list(conn.execute(select(ledger_packed.c.user_id))) == [(2,)]
        assert sorted(conn.execute(select(ledger_sessions.c.user_id, ledger_sessions.c.run_id))) == \
            [(1, "run-1"), (1, "run-1")]
        assert list(conn.execute(select(ledger_tokens.c.user_id, ledger_tokens.c.run_id))) == [(1, "run-1")]
        assert ledgered_session_rows(conn) == before  # moved, not changed
        assert ledger.run_counts(conn, 1, 2, "run-1") == (2, 3)


def test_cleanup_keeps_a_packed_row_whose_sessions_all_went_for_its_token(pg_engine, redis_client, pg_settings):
    migrator = Migrator(pg_settings, pg_engine, redis_client)
    add_users(pg_engine, [1])
    put_session(redis_client, "s1", express(1))
    [migrator.migrate_chunk(c, "run-1") for c in migrator.plan("run-1", 10).chunks]
    with pg_engine.begin() as conn:
        conn.execute(text("DELETE FROM sessions"))
    assert cleanup(pg_engine, pg_settings)["details"]["ledger_rows"] == 1
    with pg_engine.connect() as conn:
        row = conn.execute(select(ledger_packed)).one()
        token = conn.execute(select(tokens.c.id)).scalar_one()
    assert (row.token_id, row.session_ids, row.source_hashes) == (token, None, None)


def test_redis_driver_cleanup_drops_gone_keys_from_packed_rows_across_pages(pg_engine, redis_client, pg_settings,
                                                                          monkeypatch):
    import tokenmigration.engine.cleanup as cleanup_module

    monkeypatch.setattr(cleanup_module, "LEDGER_PAGE", 2)
    settings = pg_settings.replace(laravel_session_driver="redis", laravel_session_redis_prefix=PREFIX)
    migrator = Migrator(settings, pg_engine, redis_client)
    add_users(pg_engine, [1, 2, 3, 4])
    for uid, sids in {1: ("a1", "b1", "c1"), 2: ("a2",), 3: ("a3", "b3"), 4: ("a4",)}.items():
        for sid in sids:
            put_session(redis_client, sid, express(uid))
    [migrator.migrate_chunk(c, "run-1") for c in migrator.plan("run-1", 10).chunks]
    with pg_engine.connect() as conn:
        carried = {h: sid for _, sid, h, _ in ledgered_session_rows(conn)}
        assert _counts(conn)["token_migration_users"] == 4
    gone = [carried[session_fingerprint(s)] for s in ("b1", "a2", "a3", "b3")]
    redis_client.delete(*[PREFIX + sid for sid in gone])
    report = cleanup(pg_engine, settings, session_store=migrator.session_store)
    assert report["details"]["ledger_rows"] == 4
    with pg_engine.connect() as conn:
        left = sorted((u, h) for u, _, h, _ in ledgered_session_rows(conn))
        packed = dict(conn.execute(select(ledger_packed.c.user_id, ledger_packed.c.session_ids)).all())
    assert left == sorted([(1, session_fingerprint("a1")), (1, session_fingerprint("c1")),
                           (4, session_fingerprint("a4"))])
    # every user still holds the token: rows stay, user 2's and 3's without sessions
    assert packed[2] is None and packed[3] is None and len(packed) == 4
    assert cleanup(pg_engine, settings, session_store=migrator.session_store)["cleaned_items"] == 0


def test_mysql_and_sqlite_keep_the_per_row_ledger(db_engine, migrator, redis_client):
    add_users(db_engine, [1, 2])
    put_session(redis_client, "s1", express(1))
    [migrator.migrate_chunk(c, "run-1") for c in migrator.plan("run-1", 10).chunks]
    with db_engine.connect() as conn:
        forms = _counts(conn)
    packed = db_engine.dialect.name == "postgresql"
    assert forms == ({"token_migration_tokens": 0, "token_migration_sessions": 0, "token_migration_users": 2}
                     if packed else
                     {"token_migration_tokens": 2, "token_migration_sessions": 1, "token_migration_users": 0})


def test_before_db_upgrade_creates_the_packed_table_only_bulk_runs_are_refused(pg_engine, redis_client, pg_settings,
                                                                               monkeypatch):
    """A stack deployed before its `db upgrade` ran: the exchange and the bridge must go on working (at cutover a
    failure logs people out), on the per-row ledger; only a bulk run, which would write packed rows, stops at
    its plan with the message that says what to do."""
    from tokenmigration.db.upgrade import SchemaError, upgrade

    with pg_engine.begin() as conn:
        conn.execute(text("DROP TABLE token_migration_users"))
    monkeypatch.setattr(ledger, "_HAS_PACKED_TABLE", type(ledger._HAS_PACKED_TABLE)())
    migrator = Migrator(pg_settings, pg_engine, redis_client)
    add_users(pg_engine, [1, 2])
    put_session(redis_client, "s1", express(1))
    with pytest.raises(SchemaError, match="db upgrade"):
        migrator.plan("run-1", 10)
    migrated = migrator.migrate_user(1, "exchange", [IndexedSession("s1", 1)], deliver_token=True)
    assert migrator.session_for_express_session(IndexedSession("s1", 1), "exchange") == migrated.session_ids[0]
    assert migrator.rotate_migration_token(1).token_id == migrated.token_id
    assert cleanup(pg_engine, pg_settings)["cleaned_items"] == 0
    assert migrator.rollback_user(1).tokens_revoked == 1
    upgrade(pg_engine)  # the table arrives while the process runs: bulk runs write it, readers see it
    put_session(redis_client, "s2", express(2))
    [migrator.migrate_chunk(c, "run-1") for c in migrator.plan("run-1", 10).chunks]
    with pg_engine.connect() as conn:
        assert _counts(conn)["token_migration_users"] == 2
    assert sum(r.tokens_revoked for r in (migrator.rollback_chunk(c) for c in migrator.plan_rollback(10))) == 2


def test_a_cleanup_page_and_an_exchange_of_one_of_its_users_take_their_locks_in_one_order(
        pg_engine, redis_client, pg_settings, monkeypatch):
    """The exchange locks the user, unpacks the user's packed rows, then deletes the dead session rows it
    replaces. A cleanup page that deleted a stale session row first and locked the packed row after would wait
    for the exchange while the exchange waits for it: PostgreSQL would abort one of them. The page locks the
    packed rows it will change first, so it simply waits its turn and runs once."""
    import threading
    import time

    migrator = Migrator(pg_settings, pg_engine, redis_client)
    add_users(pg_engine, [1])
    for sid in ("live", "dead"):
        put_session(redis_client, sid, express(1))
    [migrator.migrate_chunk(c, "run-1") for c in migrator.plan("run-1", 10).chunks]
    with pg_engine.connect() as conn:
        carried = {h: sid for _, sid, h, _ in ledgered_session_rows(conn)}
    dead = carried[session_fingerprint("dead")]
    with pg_engine.begin() as conn:
        conn.execute(update(sessions).where(sessions.c.id == dead).values(last_activity=1))

    import tokenmigration.engine.cleanup as cleanup_module

    attempts, report, failure = [], {}, []
    real_page = cleanup_module._page

    def counted_page(*args):
        attempts.append(args[1])
        return real_page(*args)

    monkeypatch.setattr(cleanup_module, "_page", counted_page)
    with pg_engine.connect() as exchange, exchange.begin():  # the exchange's order, held open at each step
        exchange.execute(select(users.c.id).where(users.c.id == 1).with_for_update())
        ledger.unpack(exchange, 1, 1)
        me = exchange.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def clean():
            try:
                report.update(cleanup(pg_engine, pg_settings))
            except Exception as exc:
                failure.append(exc)

        worker = threading.Thread(target=clean)
        worker.start()
        deadline = time.monotonic() + 30
        waiting = text("SELECT count(*) FROM pg_stat_activity WHERE :me = ANY(pg_blocking_pids(pid))")
        with pg_engine.connect() as watch:  # until the page waits for a lock the exchange holds
            # One transaction per look: pg_stat_activity is a snapshot taken once per transaction.
            while not watch.execute(waiting, {"me": me}).scalar_one():
                watch.rollback()
                assert time.monotonic() < deadline and worker.is_alive(), failure
        exchange.execute(sessions.delete().where(sessions.c.id == dead))  # _drop_replaced
    worker.join(60)
    assert not failure and report["complete"] is True
    assert attempts == [1]  # one page, never a deadlock victim run again
    with pg_engine.connect() as conn:
        assert [(u, h) for u, _, h, _ in ledgered_session_rows(conn)] == [(1, session_fingerprint("live"))]
        assert _counts(conn)["token_migration_users"] == 0
