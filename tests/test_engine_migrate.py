"""migrate_chunk and plan against real PostgreSQL / SQLite and Redis."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from helpers import add_app_token, add_users, express, ledgered_session_rows, ledgered_token_rows, put_session, snapshot
from tokenmigration.db.schema import ledger_failures, sessions, tokens, users
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.migrator import Migrator, plan_chunks
from tokenmigration.engine.results import Chunk
from tokenmigration.engine.verify import verify_migrated
from tokenmigration.formats.laravel_session import LOGIN_WEB_KEY, decode_payload, is_valid_session_id


def run_all(migrator: Migrator, chunk_size: int = 2, dry_run: bool = False):
    plan = migrator.plan("run-1", chunk_size)
    results = [migrator.migrate_chunk(c, "run-1", dry_run) for c in plan.chunks]
    return plan, results


def total(results, field: str) -> int:
    return sum(getattr(r, field) for r in results)


def test_plan_chunks_by_user_count_not_id_span(db_engine):
    add_users(db_engine, [1, 2, 3, 1000, 1001, 50_000, 50_001])
    with db_engine.connect() as conn:
        chunks = plan_chunks(conn, 3)
    assert [(c.lo, c.hi, c.users) for c in chunks] == [(1, 3, 3), (1000, 50_000, 3), (50_001, 50_001, 1)]
    assert [c.number for c in chunks] == [0, 1, 2]


def test_migrates_users_with_their_live_sessions(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3])
    put_session(redis_client, "a" * 32, express(1, ip="203.0.113.9", userAgent="Firefox"))
    put_session(redis_client, "b" * 32, express("1"))  # passport may store a string id
    put_session(redis_client, "c" * 32, express({"id": 2, "username": "ann"}))
    plan, results = run_all(migrator)
    assert plan.total_users == 3
    assert (total(results, "migrated_users"), total(results, "sessions_migrated")) == (3, 3)
    with db_engine.connect() as conn:
        rows = conn.execute(select(sessions).order_by(sessions.c.user_id)).all()
        marked = conn.execute(select(func.count()).where(users.c.migrated_to_sanctum_at.is_not(None))
                              .select_from(users)).scalar_one()
    assert marked == 3
    assert [r.user_id for r in rows] == [1, 1, 2]
    for row in rows:
        assert is_valid_session_id(row.id)
        attrs = decode_payload(row.payload)
        assert attrs[LOGIN_WEB_KEY] == row.user_id and len(attrs["_token"]) == 40
    carried = [r for r in rows if r.ip_address]
    assert [(r.ip_address, r.user_agent) for r in carried] == [("203.0.113.9", "Firefox")]
    assert all(c.ok for c in verify_migrated(db_engine, migrator.settings))


# Free text from Express sessions reaches Laravel's columns beside its own session, whatever it holds: the
# PostgreSQL chunk statement joins these values with control characters, so a value that kept one would shift
# every later session's text (and a NUL, or a lone surrogate, used to fail the whole chunk there).
HOSTILE_TEXT = {
    1: ("203.0.113.1", "Mozilla/5.0\x00 (X11; Linux)", "Mozilla/5.0 (X11; Linux)"),
    2: (None, "comma, \"quote\" \\ back\x1fslash\x1e", "comma, \"quote\" \\ backslash"),
    3: ("2001:db8::3", None, None),
    4: ("10.0.0.4\x1f", "broken \ud800 surrogate", "broken \ufffd surrogate"),
    5: ("", "\x00\x1f\x1e", None),
    6: ("198.51.100.6", "é 𝄞 \u2028 end", "é 𝄞 \u2028 end"),
}


def test_free_text_lands_on_its_own_session_whatever_it_holds(migrator, db_engine, redis_client):
    add_users(db_engine, list(HOSTILE_TEXT))
    for uid, (ip, ua, _) in HOSTILE_TEXT.items():
        fields = {k: v for k, v in (("ip", ip), ("userAgent", ua)) if v is not None}
        put_session(redis_client, f"{uid}" * 32, express(uid, **fields))
    _, results = run_all(migrator, chunk_size=10)
    assert (total(results, "migrated_users"), total(results, "sessions_migrated")) == (6, 6)
    with db_engine.connect() as conn:
        rows = conn.execute(select(sessions.c.user_id, sessions.c.ip_address, sessions.c.user_agent)
                            .order_by(sessions.c.user_id)).all()
    expected_ip = {1: "203.0.113.1", 2: None, 3: "2001:db8::3", 4: None, 5: None, 6: "198.51.100.6"}
    assert [tuple(r) for r in rows] == [(uid, expected_ip[uid], HOSTILE_TEXT[uid][2]) for uid in HOSTILE_TEXT]


def test_json_serialization_setting(settings, db_engine, redis_client):
    migrator = Migrator(settings.replace(laravel_session_serialization="json"), db_engine, redis_client)
    add_users(db_engine, [5])
    put_session(redis_client, "s" * 32, express(5))
    run_all(migrator)
    with db_engine.connect() as conn:
        payload = conn.execute(select(sessions.c.payload)).scalar_one()
    assert decode_payload(payload, "json")[LOGIN_WEB_KEY] == 5


def test_rerunning_a_chunk_changes_nothing(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3, 4])
    put_session(redis_client, "x" * 32, express(3))
    plan, first = run_all(migrator, chunk_size=10)
    before = snapshot(db_engine)
    migrator.plan("run-2", 10)
    again = migrator.migrate_chunk(plan.chunks[0], "run-2")
    assert snapshot(db_engine) == before
    assert (again.migrated_users, again.skipped_users, again.skip_reasons["already_migrated"]) == (0, 4, 4)
    assert migrator.migrate_chunk(plan.chunks[0], "run-1").migrated_users == 4  # same run: same report
    assert first[0].migrated_users == 4


def test_a_chunk_retried_after_it_committed_reports_the_same_counts(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3])
    add_app_token(db_engine, 3)
    put_session(redis_client, "r1", express(1))
    plan = migrator.plan("run-1", 10)
    first = migrator.migrate_chunk(plan.chunks[0], "run-1")
    retry = migrator.migrate_chunk(plan.chunks[0], "run-1")  # e.g. the Lambda timed out after COMMIT
    migrator.plan("run-2", 10)
    other_run = migrator.migrate_chunk(plan.chunks[0], "run-2")
    for result in (first, retry):
        assert (result.migrated_users, result.skipped_users, result.sessions_migrated) == (2, 1, 1)
        assert result.skip_reasons == {"has_tokens": 1}
    assert (other_run.migrated_users, other_run.skipped_users, other_run.skip_reasons["already_migrated"]) == (0, 3, 2)


def test_token_holders_and_migrated_users_are_skipped_not_failed(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    app_token = add_app_token(db_engine, 2)
    put_session(redis_client, "y" * 32, express(2))
    _, results = run_all(migrator)
    r = results[0]
    assert (r.migrated_users, r.skipped_users, r.failed_users) == (1, 1, 0)
    assert r.skip_reasons == {"has_tokens": 1}
    with db_engine.connect() as conn:
        owned = conn.execute(select(tokens.c.id).where(tokens.c.tokenable_id == 2)).scalars().all()
        user2 = conn.execute(select(users.c.migrated_to_sanctum_at).where(users.c.id == 2)).scalar_one()
        user2_sessions = conn.execute(select(func.count()).select_from(sessions)
                                      .where(sessions.c.user_id == 2)).scalar_one()
    # Skipped for the token only: the live session still gets its Laravel row (api.md).
    assert owned == [app_token] and user2 is None and user2_sessions == 1
    assert r.sessions_migrated == 1


def test_another_models_token_does_not_count_as_the_users(migrator, db_engine):
    add_users(db_engine, [7])
    with db_engine.begin() as conn:
        conn.execute(tokens.insert().values(tokenable_type="App\\Models\\Team", tokenable_id=7, name="t",
                                            token="f" * 64, abilities="[]", created_at=utcnow(),
                                            updated_at=utcnow()))
    _, results = run_all(migrator)
    assert results[0].migrated_users == 1


def test_dry_run_counts_the_same_and_writes_nothing(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3])
    add_app_token(db_engine, 3)
    put_session(redis_client, "d" * 32, express(1))
    before = snapshot(db_engine)
    _, dry = run_all(migrator, dry_run=True)
    assert snapshot(db_engine) == before
    with db_engine.connect() as conn:
        assert ledgered_token_rows(conn) == []
    _, real = run_all(migrator)
    for field in ("processed_users", "migrated_users", "skipped_users", "sessions_migrated"):
        assert total(dry, field) == total(real, field), field


def test_odd_session_values_are_reported_never_fatal(migrator, db_engine, redis_client):
    add_users(db_engine, [0, 1, 2])
    odd = {
        "n1": b"null", "n2": b"", "n3": b"not json", "n4": b"[]", "n5": b'{"cookie": null}',
        "n6": express("abc"), "n7": express(True), "n8": b"\xff\xfe", "n9": express(-4),
    }
    for sid, value in odd.items():
        put_session(redis_client, sid, value)
    put_session(redis_client, "anon", express(None))
    put_session(redis_client, "zero", express(0))  # user id 0 is a logged-in user
    put_session(redis_client, "ghost-in-range", express(2))
    put_session(redis_client, "ghost-beyond", express(999))
    with db_engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE id = 2"))
    add_users(db_engine, [3])
    plan, results = run_all(migrator, chunk_size=10)
    kinds = plan.scan.kinds
    assert kinds["null_value"] == 1 and kinds["empty_value"] == 1 and kinds["not_json"] == 1
    assert kinds["not_an_object"] == 1 and kinds["invalid_cookie"] == 1 and kinds["not_utf8"] == 1
    assert kinds["invalid_user_id"] == 3 and kinds["anonymous"] == 1
    codes = sorted(p.code for p in plan.scan.problems + [p for r in results for p in r.problems])
    assert codes.count("unknown_user") == 2  # user 2 (deleted, inside the chunk) and user 999 (beyond it)
    assert total(results, "migrated_users") == 3 and total(results, "sessions_migrated") == 1
    with db_engine.connect() as conn:
        assert conn.execute(select(sessions.c.user_id)).scalars().all() == [0]
    for problem in plan.scan.problems:
        assert problem.session_id is None or len(problem.session_id) <= 9  # redacted, never the full id


def test_unknown_users_inside_and_outside_chunk_bounds(migrator, db_engine, redis_client):
    add_users(db_engine, [10, 20])
    put_session(redis_client, "inside-bounds", express(15))
    put_session(redis_client, "beyond-bounds", express(99))
    plan, results = run_all(migrator, chunk_size=10)
    scan_unknown = [p.user_id for p in plan.scan.problems if p.code == "unknown_user"]
    chunk_unknown = [p.user_id for r in results for p in r.problems if p.code == "unknown_user"]
    assert scan_unknown == [99] and chunk_unknown == [15]


def test_chunks_use_the_plans_view_of_sessions(migrator, db_engine, redis_client):
    # Documented choice: no second look at Redis per chunk. A session that ended after planning
    # becomes a row whose random id nobody holds; the exchange re-verifies the live session.
    add_users(db_engine, [1])
    put_session(redis_client, "stays", express(1))
    put_session(redis_client, "logs-out", express(1))
    plan = migrator.plan("run-1", 10)
    redis_client.delete("sess:logs-out")
    assert migrator.migrate_chunk(plan.chunks[0], "run-1").sessions_migrated == 2


def test_a_retried_plan_does_not_duplicate_index_entries(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    put_session(redis_client, "one", express(1))
    put_session(redis_client, "two", express(2, ip="198.51.100.7"))
    migrator.plan("run-1", 10)
    plan = migrator.plan("run-1", 10)  # e.g. the plan Lambda retried after a timeout
    indexer = migrator.indexer("run-1", plan.chunks)
    indexer.index([b"sess:one", b"sess:two"])  # SCAN may hand out a key twice
    found = migrator.index_store("run-1").read(0)
    assert sorted((e.session_id, e.user_id, e.ip_address) for e in found) == [
        ("one", 1, None), ("two", 2, "198.51.100.7")]
    assert migrator.migrate_chunk(plan.chunks[0], "run-1").sessions_migrated == 2


def test_odd_session_ids_survive_the_index(migrator, db_engine, redis_client):
    add_users(db_engine, [1])
    weird = 'a"b\\c\td ü'  # apps can override genid; nothing but "non-empty" is promised
    put_session(redis_client, weird, express(1))
    plan = migrator.plan("run-1", 10)
    assert [e.session_id for e in migrator.index_store("run-1").read(0)] == [weird]
    assert migrator.migrate_chunk(plan.chunks[0], "run-1").sessions_migrated == 1


def test_a_chunk_refuses_to_run_without_a_complete_index(migrator, db_engine, redis_client):
    # Migrating without the sessions would log every user of the chunk out: refuse instead.
    from tokenmigration.engine.errors import SessionIndexMissing

    add_users(db_engine, [1])
    put_session(redis_client, "s", express(1))
    plan = migrator.plan("run-1", 10)
    migrator.discard_index("run-1", plan.chunks)
    with pytest.raises(SessionIndexMissing):
        migrator.migrate_chunk(plan.chunks[0], "run-1")
    with pytest.raises(SessionIndexMissing):
        migrator.migrate_chunk(plan.chunks[0], "never-planned")
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == 0


def test_a_chunk_whose_index_slice_vanished_after_the_plan_refuses_to_run(migrator, db_engine, redis_client):
    """A Redis short of memory evicts keys with a TTL, the index's slices among them: a chunk whose slice the
    plan wrote and that is gone must fail loudly, not migrate its users without their sessions (logged out).
    A chunk that never had a slice (no logged-in sessions) still migrates."""
    from tokenmigration.engine.errors import SessionIndexMissing

    add_users(db_engine, [1, 2, 3, 11, 12])
    for uid in (1, 2, 3):
        put_session(redis_client, f"s{uid}", express(uid))
    plan = migrator.plan("run-1", 3)  # chunks [1-3] (with sessions) and [11-12] (none)
    redis_client.delete(migrator.index_store("run-1").key(0))  # evicted
    with pytest.raises(SessionIndexMissing, match=r"slice of chunk 0 of run run-1 is gone.*log its users out"):
        migrator.migrate_chunk(plan.chunks[0], "run-1")
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == 0
    assert migrator.migrate_chunk(plan.chunks[1], "run-1").migrated_users == 2


def test_a_chunk_without_sessions_in_a_complete_index_migrates(migrator, db_engine, redis_client):
    add_users(db_engine, [1])
    plan = migrator.plan("run-1", 10)
    assert migrator.migrate_chunk(plan.chunks[0], "run-1").migrated_users == 1


def test_the_index_is_discarded_after_the_run(migrator, db_engine, redis_client):
    add_users(db_engine, [1])
    put_session(redis_client, "s", express(1))
    plan = migrator.plan("run-1", 10)
    assert redis_client.exists(migrator.index_store("run-1").key(0))
    assert 14 * 24 * 3600 < redis_client.ttl(migrator.index_store("run-1").key(0)) <= 15 * 24 * 3600  # redrive window
    migrator.discard_index("run-1", plan.chunks)
    assert not redis_client.keys("tokenmigration:index:*")


def test_expired_keys_are_not_sessions(migrator, db_engine, redis_client):
    add_users(db_engine, [1])
    put_session(redis_client, "gone", express(1))
    redis_client.pexpire("sess:gone", 1)
    redis_client.delete("sess:gone")  # what expiry does, without waiting for it
    _, results = run_all(migrator)
    assert results[0].sessions_migrated == 0 and results[0].migrated_users == 1


def test_token_expiry_setting(settings, db_engine, redis_client):
    migrator = Migrator(settings.replace(migration_token_expires_days=30), db_engine, redis_client)
    add_users(db_engine, [1])
    run_all(migrator)
    with db_engine.connect() as conn:
        created, expires = conn.execute(select(tokens.c.created_at, tokens.c.expires_at)).one()
    assert (expires - created).days == 30


def test_ledger_records_exactly_what_was_created(migrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    put_session(redis_client, "l1", express(1))
    put_session(redis_client, "l2", express(1))
    run_all(migrator)
    with db_engine.connect() as conn:
        token_ids = set(conn.execute(select(tokens.c.id)).scalars())
        ledger = {token_id for _, token_id, _ in ledgered_token_rows(conn)}
        session_ids = set(conn.execute(select(sessions.c.id)).scalars())
        ledger_s = {session_id for _, session_id, _, _ in ledgered_session_rows(conn)}
        runs = {run_id for _, _, _, run_id in ledgered_session_rows(conn)}
    assert token_ids == ledger and session_ids == ledger_s and runs == {"run-1"}


@pytest.mark.parametrize("db_engine", ["postgresql", "mysql"], indirect=True)
def test_two_workers_on_overlapping_chunks_migrate_each_user_once(settings, db_engine, redis_client):
    ids = list(range(1, 401))
    add_users(db_engine, ids)
    for uid in ids:
        put_session(redis_client, f"s{uid}", express(uid))
    first = Migrator(settings, db_engine, redis_client)
    plan = first.plan("run-1", 400)
    second = Migrator(settings, db_engine, redis_client)
    overlapping = [Chunk(0, 1, 400, 400), Chunk(0, 101, 400, 300)]
    results = []
    barrier = threading.Barrier(2)

    def work(m, chunk, run_id):
        barrier.wait()
        results.append(m.migrate_chunk(chunk, run_id))

    # Two runs (say the CLI and a Lambda); the index of run-1 serves both.
    second.index_store = lambda _run_id: first.index_store("run-1")
    threads = [threading.Thread(target=work, args=(m, c, "run-1" if m is first else "run-2"))
               for m, c in zip((first, second), overlapping, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert plan.chunks[0].users == 400
    assert sum(r.migrated_users for r in results) == 400
    assert sum(r.failed_users for r in results) == 0
    with db_engine.connect() as conn:
        per_user = conn.execute(text(
            "SELECT tokenable_id, count(*) FROM personal_access_tokens GROUP BY tokenable_id HAVING count(*) > 1"
        )).all()
        session_count = conn.execute(select(func.count()).select_from(sessions)).scalar_one()
    assert per_user == [] and session_count == 400


@pytest.mark.parametrize("db_engine", ["postgresql", "mysql"], indirect=True)
def test_a_user_row_held_by_the_app_fails_with_a_code_and_the_rest_proceeds(migrator, db_engine, pg_url):
    add_users(db_engine, [1, 2, 3])
    plan = migrator.plan("run-1", 10)
    with db_engine.connect() as app:
        app.execute(text("SELECT id FROM users WHERE id = 2 FOR UPDATE"))  # the app's open transaction
        result = migrator.migrate_chunk(plan.chunks[0], "run-1")
        app.rollback()
    assert (result.migrated_users, result.failed_users, result.processed_users) == (2, 1, 3)
    assert [(p.code, p.user_id) for p in result.problems] == [("user_locked", 2)]
    with db_engine.connect() as conn:
        assert conn.execute(select(ledger_failures.c.user_id, ledger_failures.c.code)).all() == [(2, "user_locked")]
    retry = migrator.migrate_chunk(plan.chunks[0], "run-1")
    assert (retry.migrated_users, retry.skipped_users, retry.failed_users) == (3, 0, 0)  # all three by run-1
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ledger_failures)).scalar_one() == 0


def test_sanctum_2_table_without_expires_at(settings, db_engine, redis_client):
    with db_engine.begin() as conn:
        conn.execute(text("ALTER TABLE personal_access_tokens DROP COLUMN expires_at"))
    add_users(db_engine, [1])
    run_all(Migrator(settings, db_engine, redis_client))
    with db_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM personal_access_tokens")).scalar_one() == 1
    from tokenmigration.config import ConfigError

    with pytest.raises(ConfigError, match="MIGRATION_TOKEN_EXPIRES_DAYS"):
        Migrator(settings.replace(migration_token_expires_days=3), db_engine, redis_client).check_schema()


@pytest.mark.parametrize("db_engine", ["postgresql", "mysql"], indirect=True)
def test_workers_on_disjoint_chunks_all_commit(settings, db_engine, redis_client):
    """Four workers at once on neighbouring chunks, as the local driver and the Lambdas run them: every chunk
    commits (MySQL's REPEATABLE READ gap locks once made them deadlock) and every user is migrated once."""
    ids = list(range(1, 1201))
    add_users(db_engine, ids)
    for uid in ids:
        put_session(redis_client, f"s{uid}", express(uid, userAgent=f"agent {uid}"))
    plan = Migrator(settings, db_engine, redis_client).plan("run-1", 150)
    assert len(plan.chunks) == 8
    barrier = threading.Barrier(4)
    results, failures = [], []

    def work(chunks):
        migrator = Migrator(settings, db_engine, redis_client)
        barrier.wait()
        for chunk in chunks:
            try:
                results.append(migrator.migrate_chunk(chunk, "run-1"))
            except Exception as exc:  # reported below, with the chunk
                failures.append((chunk.number, exc))

    threads = [threading.Thread(target=work, args=(plan.chunks[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sum(r.migrated_users for r in results) == 1200 and sum(r.sessions_migrated for r in results) == 1200
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count(func.distinct(tokens.c.tokenable_id)))).scalar_one() == 1200
        assert conn.execute(select(func.count()).select_from(sessions)).scalar_one() == 1200


def test_a_chunks_session_rows_share_one_random_prefix(migrator, db_engine, redis_client):
    """So their sessions_pkey entries land on a few neighbouring pages (see new_session_ids_for_batch)."""
    add_users(db_engine, [1, 2, 3, 4])
    for uid in (1, 1, 2, 3, 4):
        put_session(redis_client, f"p{redis_client.dbsize()}", express(uid))
    run_all(migrator, chunk_size=2)
    with db_engine.connect() as conn:
        rows = conn.execute(select(sessions.c.user_id, sessions.c.id)).all()
    prefixes = {uid: sid[:8] for uid, sid in rows}
    assert len(rows) == 5 and is_valid_session_id(rows[0].id)
    assert prefixes[1] == prefixes[2] and prefixes[3] == prefixes[4] and prefixes[1] != prefixes[3]
