"""The bridge (ExchangeService.bridge, POST /auth/migration/bridge's protocol) against real PostgreSQL / SQLite and
Redis. Cookies are signed from compat.md's algorithm (test_exchange's helpers); every answered session id must
name a row Laravel accepts as the user's login."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import select
from test_exchange import APP_KEY, LARAVEL_COOKIE, SECRETS, live_session, migration_tokens, new_sid, sign, wire_cookie

from helpers import add_app_token, add_users, express, ledgered_session_rows, put_session, snapshot
from tokenmigration.db.schema import sessions, tokens
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.migrator import Migrator
from tokenmigration.exchange import (
    BridgeRequest,
    ExchangeService,
    InMemoryFailureThrottle,
    InvalidGrant,
    InvalidRequest,
    SlowDown,
    UserBusy,
    parse_bridge_request,
)
from tokenmigration.exchange.bridge import claimed_session_id
from tokenmigration.formats.laravel_session import LOGIN_WEB_KEY, decode_payload, is_valid_session_id

BROWSER = "198.51.100.7"


@pytest.fixture
def bsettings(settings):
    return settings.replace(express_session_secrets=SECRETS, laravel_app_key=APP_KEY,
                            laravel_session_cookie=LARAVEL_COOKIE, exchange_failure_limit=3)


@pytest.fixture
def bmigrator(bsettings, db_engine, redis_client) -> Migrator:
    return Migrator(bsettings, db_engine, redis_client)


@pytest.fixture
def bridge_service(bsettings, bmigrator, redis_client) -> ExchangeService:
    return ExchangeService(bsettings, bmigrator, redis_client, InMemoryFailureThrottle.from_settings(bsettings))


def ask(service, cookie: str, client_ip: str | None = BROWSER):
    return service.bridge(BridgeRequest(cookie, client_ip))


def laravel_row(engine, session_id: str):
    assert is_valid_session_id(session_id)  # Store::isValidId, or Laravel starts a fresh, guest session
    with engine.connect() as conn:
        row = conn.execute(select(sessions).where(sessions.c.id == session_id)).one()
    assert decode_payload(row.payload)[LOGIN_WEB_KEY] == row.user_id  # SessionGuard logs the user in
    return row


def test_parse_takes_the_contracts_body():
    body = json.dumps({"session_cookie": "s%3Aabc.def", "client_ip": " 203.0.113.9 ", "later_field": 1})
    assert parse_bridge_request(body) == BridgeRequest("s%3Aabc.def", "203.0.113.9")
    assert parse_bridge_request(json.dumps({"session_cookie": "x"})).client_ip is None
    assert parse_bridge_request(json.dumps({"session_cookie": "x", "client_ip": "::ffff:10.0.0.1"})).client_ip \
        == "10.0.0.1"  # one counter per address, however it is spelt
    assert parse_bridge_request(json.dumps({"session_cookie": "x", "client_ip": "2001:DB8::1"})).client_ip \
        == "2001:db8::1"


@pytest.mark.parametrize("body", [
    None, "", "{", "[]", '"s%3Aabc"', "{}", '{"session_cookie": ""}', '{"session_cookie": 5}',
    '{"session_cookie": null}', json.dumps({"session_cookie": "x" * 4097}),
    '{"session_cookie": "x", "client_ip": "not an address"}', '{"session_cookie": "x", "client_ip": 5}',
    '{"session_cookie": "x", "client_ip": ""}', b"\xff\xfe",
])
def test_parse_refuses_malformed_bodies(body):
    with pytest.raises(InvalidRequest):
        parse_bridge_request(body)


def test_the_claimed_session_id_is_read_without_checking():
    assert claimed_session_id(wire_cookie("abc-DEF_1")) == "abc-DEF_1"
    assert claimed_session_id("s:a.b.c") == "a.b"
    assert claimed_session_id("junk") == "junk"


def test_a_user_not_migrated_is_migrated_and_gets_the_row_of_this_session(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1])
    sid = live_session(redis_client, 1, userAgent="Firefox")
    result = ask(bridge_service, wire_cookie(sid))
    assert result.migrated_now and result.user_id == 1
    row = laravel_row(db_engine, result.session_id)
    assert (row.user_id, row.ip_address, row.user_agent) == (1, BROWSER, "Firefox")
    body = result.body()
    assert body == {"user_id": 1, "session_id": result.session_id, "session_cookie_name": "myapp_session",
                    "lifetime_minutes": 120, "auth_mode": "dual"}
    assert len(migration_tokens(db_engine, 1)) == 1  # migrated: the token exists, nobody was given it
    assert result.headers()["Cache-Control"] == "no-store"


def test_every_call_for_one_session_answers_the_same_row(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1])
    sid = live_session(redis_client, 1)
    answers = {ask(bridge_service, wire_cookie(sid)).session_id for _ in range(3)}
    answers.add(ask(bridge_service, wire_cookie(sid, "previous-secret")).session_id)  # rotated secret
    assert len(answers) == 1
    with db_engine.connect() as conn:
        assert len(ledgered_session_rows(conn)) == 1
    assert len(migration_tokens(db_engine, 1)) == 1  # no token rotated or minted again


def test_two_sessions_of_one_user_get_two_rows(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1])
    first = ask(bridge_service, wire_cookie(live_session(redis_client, 1))).session_id
    second = ask(bridge_service, wire_cookie(live_session(redis_client, 1))).session_id
    assert first != second and {laravel_row(db_engine, s).user_id for s in (first, second)} == {1}


def test_a_session_carried_by_a_run_is_answered_not_copied(bridge_service, bmigrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    add_app_token(db_engine, 2)  # skipped by the run for the token only
    sids = {user: live_session(redis_client, user) for user in (1, 2)}
    for chunk in bmigrator.plan("run-1", 10).chunks:
        bmigrator.migrate_chunk(chunk, "run-1")
    with db_engine.connect() as conn:
        by_user = {user_id: session_id for user_id, session_id, _, _ in ledgered_session_rows(conn)}
    for user, sid in sids.items():
        assert ask(bridge_service, wire_cookie(sid)).session_id == by_user[user]
    with db_engine.connect() as conn:
        assert len(ledgered_session_rows(conn)) == 2


def test_a_user_holding_app_tokens_is_served(bridge_service, db_engine, redis_client):
    add_users(db_engine, [4])
    app_token = add_app_token(db_engine, 4)
    result = ask(bridge_service, wire_cookie(live_session(redis_client, 4)))
    assert laravel_row(db_engine, result.session_id).user_id == 4
    with db_engine.connect() as conn:
        held = conn.execute(select(tokens.c.id).where(tokens.c.tokenable_id == 4)).scalars().all()
    assert app_token in held and len(migration_tokens(db_engine, 4)) == 1


def test_an_expired_laravel_row_is_replaced_by_one_row(bridge_service, bsettings, db_engine, redis_client):
    add_users(db_engine, [1])
    sid = live_session(redis_client, 1)
    old = ask(bridge_service, wire_cookie(sid)).session_id
    stale = int(utcnow().timestamp()) - bsettings.laravel_session_lifetime * 60 - 3600
    with db_engine.begin() as conn:
        conn.execute(sessions.update().where(sessions.c.id == old).values(last_activity=stale))
    new = ask(bridge_service, wire_cookie(sid)).session_id
    assert new != old and laravel_row(db_engine, new).user_id == 1
    with db_engine.connect() as conn:  # the dead row went, with its ledger row: one row per Express session
        assert conn.execute(select(sessions.c.id)).scalars().all() == [new]
        assert [session_id for _, session_id, _, _ in ledgered_session_rows(conn)] == [new]


def test_a_row_laravel_gave_to_another_user_is_left_alone(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    sid = live_session(redis_client, 1)
    old = ask(bridge_service, wire_cookie(sid)).session_id
    with db_engine.begin() as conn:
        conn.execute(sessions.update().where(sessions.c.id == old).values(user_id=2))
    new = ask(bridge_service, wire_cookie(sid)).session_id
    assert new != old
    with db_engine.connect() as conn:
        assert sorted(conn.execute(select(sessions.c.id)).scalars().all()) == sorted([old, new])


def test_concurrent_calls_for_one_session_end_with_one_row(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1])
    cookie = wire_cookie(live_session(redis_client, 1))
    answers, failures = [], []

    def call():
        try:
            answers.append(ask(bridge_service, cookie).session_id)
        except Exception as exc:  # UserBusy is allowed: the caller retries; anything else fails the test
            failures.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(f, UserBusy) for f in failures), failures
    assert answers and len(set(answers)) == 1
    with db_engine.connect() as conn:
        assert len(ledgered_session_rows(conn)) == 1
    assert len(migration_tokens(db_engine, 1)) == 1


@pytest.mark.parametrize("kind", ["forged", "unknown_session", "anonymous", "unknown_user", "garbage"])
def test_every_bad_session_is_the_same_invalid_grant_and_changes_nothing(bridge_service, db_engine, redis_client,
                                                                          kind):
    add_users(db_engine, [1])
    sid = new_sid()
    cookie = {
        "forged": wire_cookie(live_session(redis_client, 1), "not-our-secret"),
        "unknown_session": wire_cookie(sid),
        "anonymous": wire_cookie(live_session(redis_client, None)),
        "unknown_user": wire_cookie(live_session(redis_client, 999)),
        "garbage": "s%3Ajunk",
    }[kind]
    before = snapshot(db_engine)
    with pytest.raises(InvalidGrant) as refused:
        ask(bridge_service, cookie)
    assert (refused.value.status, refused.value.body()) == (401, {"error": "invalid_grant"})
    assert snapshot(db_engine) == before


def test_failures_count_per_browser_address_not_per_caller(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1])
    good = wire_cookie(live_session(redis_client, 1))
    for _ in range(3):  # the limit: three failures of one browser address, each with another session
        with pytest.raises(InvalidGrant):
            ask(bridge_service, wire_cookie(new_sid()))
    with pytest.raises(SlowDown) as slowed:
        ask(bridge_service, good)  # that address is slowed down, even with a valid cookie
    assert (slowed.value.status, slowed.value.body()["error"]) == (429, "slow_down")
    assert slowed.value.headers()["Retry-After"] == "300"
    # Every other browser behind the same app server goes on.
    assert laravel_row(db_engine, ask(bridge_service, good, client_ip="198.51.100.8").session_id).user_id == 1
    assert ask(bridge_service, good, client_ip=None).user_id == 1


def test_failures_count_per_express_session_across_addresses(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1])
    sid = live_session(redis_client, 1)
    for n in range(3):  # someone guessing signatures for one session id, from three addresses
        with pytest.raises(InvalidGrant):
            ask(bridge_service, "s%3A" + sign(sid, f"guess-{n}"), client_ip=f"203.0.113.{n + 1}")
    with pytest.raises(SlowDown):
        ask(bridge_service, wire_cookie(sid), client_ip="203.0.113.99")
    other = wire_cookie(live_session(redis_client, 1))
    assert ask(bridge_service, other, client_ip="203.0.113.1").user_id == 1  # that address itself is fine


def test_a_success_counts_nothing(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1])
    cookie = wire_cookie(live_session(redis_client, 1))
    for _ in range(10):
        ask(bridge_service, cookie)
    assert not bridge_service.throttle.blocked("bridge-ip:" + BROWSER)


def test_a_session_expired_in_express_is_refused_even_if_bridged_before(bridge_service, db_engine, redis_client):
    add_users(db_engine, [1])
    sid = live_session(redis_client, 1)
    bridged = ask(bridge_service, wire_cookie(sid)).session_id
    redis_client.delete("sess:" + sid)  # Express logged out or expired
    with pytest.raises(InvalidGrant):
        ask(bridge_service, wire_cookie(sid))
    assert laravel_row(db_engine, bridged).user_id == 1  # the bridged browser keeps its Laravel session


def test_rollback_after_bridging_restores_the_three_tables(bridge_service, bmigrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3])
    add_app_token(db_engine, 3)
    before = snapshot(db_engine)
    for user in (1, 1, 2, 3):
        ask(bridge_service, wire_cookie(live_session(redis_client, user)))
    put_session(redis_client, new_sid(), express(2))
    for chunk in bmigrator.plan("run-1", 2).chunks:
        bmigrator.migrate_chunk(chunk, "run-1")
    assert snapshot(db_engine) != before
    for chunk in bmigrator.plan_rollback(2):
        bmigrator.rollback_chunk(chunk)
    assert snapshot(db_engine) == before
