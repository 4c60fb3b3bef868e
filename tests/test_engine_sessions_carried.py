"""api.md "Skipped users keep their sessions": every live logged-in Express session of every existing user gets
exactly one Laravel row, ledgered and counted, however many runs, retries and exchanges see it.

Real PostgreSQL / SQLite and Redis; every row is read back as Laravel would (payload, guard key, owner)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from helpers import add_app_token, add_users, express, ledgered_session_rows, put_session, snapshot
from tokenmigration.db.schema import sessions, tokens, users
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.results import session_fingerprint
from tokenmigration.engine.session_index import IndexedSession
from tokenmigration.formats.laravel_session import LOGIN_WEB_KEY, decode_payload, is_valid_session_id


def run(migrator: Migrator, run_id: str, chunk_size: int = 2, dry_run: bool = False):
    plan = migrator.plan(run_id, chunk_size)
    return [migrator.migrate_chunk(c, run_id, dry_run) for c in plan.chunks]


def total(results, name: str) -> int:
    return sum(getattr(r, name) for r in results)


def carried(engine) -> dict[str, tuple[int, str]]:
    """source hash -> (user id, Laravel session id), asserting one ledger row and one usable row per source."""
    with engine.connect() as conn:
        ledger_rows = ledgered_session_rows(conn)  # both forms: per-session rows and a run's packed rows
        found = {session_id: (owner, payload) for session_id, owner, payload in conn.execute(
            select(sessions.c.id, sessions.c.user_id, sessions.c.payload)
            .where(sessions.c.id.in_([session_id for _, session_id, _, _ in ledger_rows])))}
    rows = [(source, ledger_user, session_id, *found[session_id])
            for ledger_user, session_id, source, _ in ledger_rows if session_id in found]
    ledgered = len(ledger_rows)
    assert ledgered == len(rows)  # no ledger row without its session row
    out: dict[str, tuple[int, str]] = {}
    for source, ledger_user, session_id, owner, payload in rows:
        assert source not in out, "two Laravel rows for one Express session"
        assert ledger_user == owner and is_valid_session_id(session_id)
        assert decode_payload(payload)[LOGIN_WEB_KEY] == owner  # SessionGuard logs the owner in
        out[source] = (owner, session_id)
    return out


def sources(*sids: str) -> set[str]:
    return {session_fingerprint(sid) for sid in sids}


def test_skipped_users_keep_every_session(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3, 4])
    add_app_token(db_engine, 2)  # e.g. a mobile-app token: skipped for the token
    add_app_token(db_engine, 4)
    for sid, user in (("s-1a", 1), ("s-1b", 1), ("s-2a", 2), ("s-2b", 2), ("s-3", 3), ("s-4", 4)):
        put_session(redis_client, sid, express(user))
    put_session(redis_client, "anon", express(None))
    results = run(migrator, "run-1")
    assert (total(results, "migrated_users"), total(results, "skipped_users")) == (2, 2)
    assert total(results, "sessions_migrated") == 6
    assert {r for res in results for r in res.skip_reasons.elements()} == {"has_tokens"}
    rows = carried(db_engine)
    assert set(rows) == sources("s-1a", "s-1b", "s-2a", "s-2b", "s-3", "s-4")
    assert sorted(owner for owner, _ in rows.values()) == [1, 1, 2, 2, 3, 4]
    with db_engine.connect() as conn:  # the holders hold only the app's tokens, and are not marked migrated
        marked = conn.execute(select(users.c.id).where(users.c.migrated_to_sanctum_at.is_not(None))
                              .order_by(users.c.id)).scalars().all()
        holder_tokens = conn.execute(select(func.count()).select_from(tokens)
                                     .where(tokens.c.tokenable_id.in_([2, 4]))).scalar_one()
    assert marked == [1, 3] and holder_tokens == 2


def test_a_second_run_carries_only_sessions_that_appeared_since(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3])
    add_app_token(db_engine, 3)
    put_session(redis_client, "early-1", express(1))
    put_session(redis_client, "early-3", express(3))
    first = run(migrator, "run-1")
    assert total(first, "sessions_migrated") == 2
    before = carried(db_engine)
    put_session(redis_client, "late-1", express(1))  # logged in again after the run
    put_session(redis_client, "late-2", express(2))
    put_session(redis_client, "late-3", express(3))
    second = run(migrator, "run-2")
    assert total(second, "sessions_migrated") == 3
    assert (total(second, "migrated_users"), total(second, "skipped_users")) == (0, 3)
    after = carried(db_engine)
    assert set(after) == sources("early-1", "early-3", "late-1", "late-2", "late-3")
    assert {k: after[k] for k in before} == before  # the earlier rows are the same rows
    third = run(migrator, "run-3")  # nothing new: nothing written, nothing counted
    assert total(third, "sessions_migrated") == 0
    assert carried(db_engine) == after


def test_retries_of_a_committed_chunk_report_the_same_and_write_nothing(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    add_app_token(db_engine, 1)
    add_app_token(db_engine, 2)  # a chunk of holders only: no token is minted at all
    for sid, user in (("h-1", 1), ("h-2a", 2), ("h-2b", 2)):
        put_session(redis_client, sid, express(user))
    plan = migrator.plan("run-1", 10)
    first = migrator.migrate_chunk(plan.chunks[0], "run-1")
    state = snapshot(db_engine)
    retry = migrator.migrate_chunk(plan.chunks[0], "run-1")  # the Lambda timed out after COMMIT
    assert snapshot(db_engine) == state
    for result in (first, retry):
        assert (result.migrated_users, result.skipped_users, result.sessions_migrated) == (0, 2, 3)
        assert result.skip_reasons == {"has_tokens": 2}
    assert len(carried(db_engine)) == 3


def test_dry_run_counts_only_sessions_not_carried_yet(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    add_app_token(db_engine, 2)
    put_session(redis_client, "d-1", express(1))
    run(migrator, "run-1")
    put_session(redis_client, "d-2", express(2))
    put_session(redis_client, "d-1b", express(1))
    state = snapshot(db_engine)
    dry = run(migrator, "run-dry", dry_run=True)
    assert total(dry, "sessions_migrated") == 2
    assert snapshot(db_engine) == state
    assert total(run(migrator, "run-2"), "sessions_migrated") == 2


def test_an_exchanged_session_is_not_carried_again_by_a_run(migrator, db_engine, redis_client):
    add_users(db_engine, [5, 6])
    add_app_token(db_engine, 6)
    put_session(redis_client, "x-5", express(5))
    put_session(redis_client, "x-6", express(6))
    for user, sid in ((5, "x-5"), (6, "x-6")):  # what the exchange and the bridge do for one live session
        migrator.migrate_user(user, "exchange", [IndexedSession(sid, user)], mint_for_holders=True)
        migrator.session_for_express_session(IndexedSession(sid, user), "exchange")
    exchanged = carried(db_engine)
    assert set(exchanged) == sources("x-5", "x-6")
    results = run(migrator, "run-1")
    assert total(results, "sessions_migrated") == 0 and total(results, "migrated_users") == 0
    assert carried(db_engine) == exchanged


def test_a_session_carried_by_a_run_is_the_one_the_exchange_finds(migrator, db_engine, redis_client):
    add_users(db_engine, [7])
    add_app_token(db_engine, 7)
    put_session(redis_client, "r-7", express(7))
    run(migrator, "run-1")
    (row,) = carried(db_engine).values()
    migrator.migrate_user(7, "exchange", [IndexedSession("r-7", 7)], mint_for_holders=True)
    assert migrator.session_for_express_session(IndexedSession("r-7", 7), "exchange") == row[1]
    assert list(carried(db_engine).values()) == [row]


def test_whole_rollback_restores_the_three_tables_after_runs_and_exchanges(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3, 4])
    add_app_token(db_engine, 2)
    add_app_token(db_engine, 4)
    before = snapshot(db_engine)
    put_session(redis_client, "a-1", express(1))
    put_session(redis_client, "a-2", express(2))
    run(migrator, "run-1")
    put_session(redis_client, "b-2", express(2))
    put_session(redis_client, "b-4", express(4))
    run(migrator, "run-2")
    migrator.migrate_user(4, "exchange", [IndexedSession("b-4", 4)], mint_for_holders=True)
    assert snapshot(db_engine) != before
    for chunk in migrator.plan_rollback(2):
        migrator.rollback_chunk(chunk)
    assert snapshot(db_engine) == before


@pytest.mark.parametrize("user", [2, 4])
def test_per_user_rollback_of_a_skipped_user_removes_their_carried_sessions(migrator, db_engine, redis_client,
                                                                            user):
    add_users(db_engine, [2, 4])
    add_app_token(db_engine, 2)
    add_app_token(db_engine, 4)
    put_session(redis_client, "p-2", express(2))
    put_session(redis_client, "p-4", express(4))
    run(migrator, "run-1")
    result = migrator.rollback_user(user)
    assert (result.tokens_revoked, result.sessions_removed, result.users) == (0, 1, 0)
    assert [owner for owner, _ in carried(db_engine).values()] == [6 - user]
