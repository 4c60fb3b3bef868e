"""The session exchange against real PostgreSQL / SQLite and Redis.

Cookies are signed here straight from compat.md's algorithm (not with the code under test); every
issued token is checked with Sanctum's lookup against the database, every issued cookie is decrypted
by the port of Laravel's reader and must name a session row Laravel would accept for that user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
from datetime import UTC, timedelta
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import delete, event, func, select, update

from helpers import (
    add_app_token,
    add_users,
    express,
    ledgered_session_rows,
    ledgered_sessions_of,
    ledgered_token_rows,
    put_session,
    snapshot,
)
from tokenmigration.db.schema import sessions, tokens, users
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.verify import token_verifies, verify_migrated
from tokenmigration.exchange import (
    GRANT_TYPE,
    SUBJECT_TOKEN_TYPE,
    ExchangeService,
    InMemoryFailureThrottle,
    InvalidGrant,
    InvalidRequest,
    RedisFailureThrottle,
    TooManyRequests,
    UserBusy,
    parse_exchange_request,
)
from tokenmigration.formats.laravel_cookie import read_session_cookie
from tokenmigration.formats.laravel_session import LOGIN_WEB_KEY, decode_payload, is_valid_session_id

SECRETS = ("current-secret", "previous-secret", "oldest-secret")
APP_KEY_BYTES = hashlib.sha256(b"test app key").digest()
APP_KEY = "base64:" + base64.b64encode(APP_KEY_BYTES).decode()
LARAVEL_COOKIE = "myapp_session"
SOURCE = "203.0.113.10"


# --- express-session's cookie, from compat.md ------------------------------------------------------


def sign(session_id: str, secret: str) -> str:
    """cookie-signature: sid + "." + base64(HMAC-SHA256(secret, sid)) without trailing '='."""
    mac = hmac.new(secret.encode(), session_id.encode(), hashlib.sha256).digest()
    return session_id + "." + base64.b64encode(mac).decode().rstrip("=")


def wire_cookie(session_id: str, secret: str = SECRETS[0]) -> str:
    """encodeURIComponent("s:" + signed)."""
    return quote("s:" + sign(session_id, secret), safe="-_.!~*'()")


def new_sid() -> str:
    return secrets.token_urlsafe(24)  # 24 random bytes, base64url: what express-session generates


def test_signing_fixture_matches_cookie_signature():
    # cookie-signature's own README example: sign('hello', 'tobiiscool')
    assert sign("hello", "tobiiscool") == "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
    assert wire_cookie("abc", "x").startswith("s%3Aabc.") and len(sign(new_sid(), "x").split(".")[1]) == 43


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def xsettings(settings):
    return settings.replace(express_session_secrets=SECRETS, laravel_app_key=APP_KEY,
                            laravel_session_cookie=LARAVEL_COOKIE, laravel_session_domain=".example.test",
                            exchange_failure_limit=1000)


@pytest.fixture
def xmigrator(xsettings, db_engine, redis_client) -> Migrator:
    return Migrator(xsettings, db_engine, redis_client)


@pytest.fixture
def service(xsettings, xmigrator, redis_client) -> ExchangeService:
    return ExchangeService(xsettings, xmigrator, redis_client, InMemoryFailureThrottle.from_settings(xsettings))


def cookie_request(service: ExchangeService, cookie: str, source: str = SOURCE):
    return service.parse({"Cookie": f"theme=dark; connect.sid={cookie}"}, None, source=source)


def live_session(redis_client, user, sid: str | None = None, **extra) -> str:
    sid = sid or new_sid()
    put_session(redis_client, sid, express(user, **extra))
    return sid


def exchange_cookie(service, redis_client, user, secret=SECRETS[0], **extra):
    sid = live_session(redis_client, user, **extra)
    return sid, service.exchange(cookie_request(service, wire_cookie(sid, secret)))


def laravel_session_from(result, engine, lifetime_minutes: int = 120):
    """Follow the Set-Cookie as Laravel would; return the session row it names (asserting it is usable)."""
    assert result.set_cookie is not None
    name_value = result.set_cookie.split(";", 1)[0]
    name, value = name_value.split("=", 1)
    assert name == LARAVEL_COOKIE
    session_id = read_session_cookie(LARAVEL_COOKIE, value, APP_KEY)  # decrypt + CookieValuePrefix::validate
    assert session_id is not None and is_valid_session_id(session_id)  # Store::isValidId
    with engine.connect() as conn:
        row = conn.execute(select(sessions).where(sessions.c.id == session_id)).one()
    now = int(utcnow().replace(tzinfo=UTC).timestamp())
    assert row.last_activity >= now - lifetime_minutes * 60  # DatabaseSessionHandler::expired
    attrs = decode_payload(row.payload)
    assert attrs[LOGIN_WEB_KEY] == result.user_id == row.user_id  # SessionGuard finds the user
    return row


def migration_tokens(engine, user_id):
    with engine.connect() as conn:
        ledgered = [token_id for _, token_id, _ in ledgered_token_rows(conn)]
        return conn.execute(
            select(tokens.c.id).where(tokens.c.tokenable_id == user_id,
                                      tokens.c.id.in_(ledgered)).order_by(tokens.c.id)
        ).scalars().all()


def ledger_rows(engine, user_id):
    """The user's session rows in the ledger, in either form (one per session, or packed per user by a run)."""
    with engine.connect() as conn:
        return ledgered_sessions_of(conn, user_id)


# --- success paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 2])
def test_cookie_signed_with_any_configured_secret(service, db_engine, redis_client, position):
    add_users(db_engine, [7])
    sid, result = exchange_cookie(service, redis_client, 7, secret=SECRETS[position])
    assert result.body()["token_type"] == "Bearer"
    assert result.body()["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert "expires_in" not in result.body()
    assert result.migrated_now and result.user_id == 7
    assert token_verifies(db_engine, result.access_token)
    assert result.access_token.startswith(f"{result.token_id}|")
    with db_engine.connect() as conn:
        user = conn.execute(select(users).where(users.c.id == 7)).one()
    assert user.migration_token_id == result.token_id and user.migrated_to_sanctum_at is not None
    row = laravel_session_from(result, db_engine)
    [ledgered] = ledger_rows(db_engine, 7)
    assert (ledgered.session_id, ledgered.run_id) == (row.id, "exchange")
    assert ledgered.source_hash == hashlib.sha256(sid.encode()).hexdigest()
    assert all(c.ok for c in verify_migrated(db_engine, service.settings))


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_rfc8693_body(service, db_engine, redis_client, encoding):
    add_users(db_engine, [3])
    sid = live_session(redis_client, {"id": 3, "username": "ann"})
    fields = {"grant_type": GRANT_TYPE, "subject_token": wire_cookie(sid, SECRETS[1]),
              "subject_token_type": SUBJECT_TOKEN_TYPE}
    if encoding == "json":
        request = service.parse({"Content-Type": "application/json"}, json.dumps(fields), source=SOURCE)
    else:
        request = service.parse({"Content-Type": "application/x-www-form-urlencoded"},
                                base64.b64encode(urlencode(fields).encode()), is_base64=True, source=SOURCE)
    result = service.exchange(request)
    assert token_verifies(db_engine, result.access_token) and result.user_id == 3
    laravel_session_from(result, db_engine)


def test_set_cookie_attributes_and_cache_headers(service, db_engine, redis_client):
    add_users(db_engine, [1])
    _, result = exchange_cookie(service, redis_client, 1)
    headers = result.headers()
    assert headers["Cache-Control"] == "no-store" and headers["Pragma"] == "no-cache"
    attributes = [part.strip() for part in headers["Set-Cookie"].split(";")[1:]]
    assert {"Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Domain=.example.test", "Max-Age=7200"} <= set(attributes)
    assert "+" not in headers["Set-Cookie"].split(";")[0]


def test_insecure_cookie_setting_and_no_app_key(xsettings, db_engine, redis_client):
    insecure = xsettings.replace(laravel_session_secure=False, laravel_session_domain=None)
    service = ExchangeService(insecure, Migrator(insecure, db_engine, redis_client), redis_client,
                              InMemoryFailureThrottle())
    add_users(db_engine, [1, 2])
    _, result = exchange_cookie(service, redis_client, 1)
    assert "Secure" not in result.set_cookie and "Domain" not in result.set_cookie
    plain = xsettings.replace(laravel_app_key=None)
    service = ExchangeService(plain, Migrator(plain, db_engine, redis_client), redis_client, InMemoryFailureThrottle())
    assert not service.sets_laravel_cookie
    _, result = exchange_cookie(service, redis_client, 2)
    assert result.set_cookie is None and "Set-Cookie" not in result.headers()
    assert token_verifies(db_engine, result.access_token)
    assert len(ledger_rows(db_engine, 2)) == 1  # the migration still carries the session


def test_json_session_serialization(xsettings, db_engine, redis_client):
    json_settings = xsettings.replace(laravel_session_serialization="json")
    service = ExchangeService(json_settings, Migrator(json_settings, db_engine, redis_client), redis_client,
                              InMemoryFailureThrottle())
    add_users(db_engine, [4])
    sid = live_session(redis_client, 4)
    service.exchange(cookie_request(service, wire_cookie(sid)))  # migrates
    result = service.exchange(cookie_request(service, wire_cookie(sid)))  # finds the row again
    session_id = read_session_cookie(LARAVEL_COOKIE, result.set_cookie.split(";")[0].split("=", 1)[1], APP_KEY)
    with db_engine.connect() as conn:
        payload = conn.execute(select(sessions.c.payload).where(sessions.c.id == session_id)).scalar_one()
    assert decode_payload(payload, "json")[LOGIN_WEB_KEY] == 4


def test_retries_end_with_one_working_token(service, db_engine, redis_client):
    add_users(db_engine, [5])
    sid = live_session(redis_client, 5)
    first = service.exchange(cookie_request(service, wire_cookie(sid)))
    second = service.exchange(cookie_request(service, wire_cookie(sid, SECRETS[2])))
    third = service.exchange(cookie_request(service, wire_cookie(sid)))
    assert (first.migrated_now, second.migrated_now, third.migrated_now) == (True, False, False)
    assert first.token_id == second.token_id == third.token_id
    assert [token_verifies(db_engine, r.access_token) for r in (first, second, third)] == [False, False, True]
    assert migration_tokens(db_engine, 5) == [first.token_id]
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == 1
        assert conn.execute(select(users.c.migration_token_id).where(users.c.id == 5)).scalar_one() == first.token_id
    # the same Express session keeps naming the same Laravel session
    rows = {laravel_session_from(r, db_engine).id for r in (first, second, third)}
    assert len(rows) == 1 and len(ledger_rows(db_engine, 5)) == 1
    assert all(c.ok for c in verify_migrated(db_engine, service.settings))


def test_expires_in_follows_the_token(xsettings, db_engine, redis_client):
    expiring = xsettings.replace(migration_token_expires_days=30, sanctum_expiration=60 * 24 * 7)
    service = ExchangeService(expiring, Migrator(expiring, db_engine, redis_client), redis_client,
                              InMemoryFailureThrottle())
    add_users(db_engine, [6])
    sid = live_session(redis_client, 6)
    first = service.exchange(cookie_request(service, wire_cookie(sid)))
    week = 7 * 24 * 3600  # sanctum.expiration (from created_at) comes before expires_at (30 days)
    assert week - 5 <= first.body()["expires_in"] <= week
    rotated = service.exchange(cookie_request(service, wire_cookie(sid)))
    assert week - 5 <= rotated.body()["expires_in"] <= week  # a rotation does not extend the token's life


def test_bulk_migrated_user_then_exchanges(service, xmigrator, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    sid = live_session(redis_client, 2, ip="198.51.100.4", userAgent="Firefox")
    plan = xmigrator.plan("run-1", 10)
    for chunk in plan.chunks:
        xmigrator.migrate_chunk(chunk, "run-1")
    with db_engine.connect() as conn:
        token_id, stored_hash = conn.execute(
            select(tokens.c.id, tokens.c.token).where(tokens.c.tokenable_id == 2)).one()
        [bulk_session] = conn.execute(select(sessions.c.id).where(sessions.c.user_id == 2)).scalars().all()
    result = service.exchange(cookie_request(service, wire_cookie(sid)))
    assert not result.migrated_now and result.token_id == token_id
    assert token_verifies(db_engine, result.access_token)
    with db_engine.connect() as conn:
        assert conn.execute(select(tokens.c.token).where(tokens.c.id == token_id)).scalar_one() != stored_hash
        assert conn.execute(select(users.c.migration_token_id).where(users.c.id == 2)).scalar_one() == token_id
    assert migration_tokens(db_engine, 2) == [token_id]
    assert laravel_session_from(result, db_engine).id == bulk_session  # the row migrated from this session
    assert [r.run_id for r in ledger_rows(db_engine, 2)] == ["run-1"]


def test_migrated_user_with_a_new_express_session_gets_a_ledgered_row(service, xmigrator, db_engine, redis_client):
    add_users(db_engine, [2])
    xmigrator.migrate_user(2, "admin")  # migrated without any session
    sid = live_session(redis_client, 2, ip="2001:db8::5", userAgent="Safari")
    result = service.exchange(cookie_request(service, wire_cookie(sid)))
    row = laravel_session_from(result, db_engine)
    assert (row.ip_address, row.user_agent) == ("2001:db8::5", "Safari")
    [ledgered] = ledger_rows(db_engine, 2)
    assert (ledgered.session_id, ledgered.run_id, ledgered.source_hash) == (
        row.id, "exchange", hashlib.sha256(sid.encode()).hexdigest())
    # another Express session of the same user gets its own row
    other = service.exchange(cookie_request(service, wire_cookie(live_session(redis_client, 2))))
    assert laravel_session_from(other, db_engine).id != row.id
    assert len(ledger_rows(db_engine, 2)) == 2


def test_stale_or_reassigned_laravel_rows_are_not_handed_out(service, db_engine, redis_client):
    add_users(db_engine, [1, 9])
    sid = live_session(redis_client, 1)
    first = laravel_session_from(service.exchange(cookie_request(service, wire_cookie(sid))), db_engine)
    with db_engine.begin() as conn:  # past session.lifetime: Laravel would treat it as expired
        conn.execute(update(sessions).where(sessions.c.id == first.id).values(last_activity=first.last_activity - 7201))
    second = laravel_session_from(service.exchange(cookie_request(service, wire_cookie(sid))), db_engine)
    assert second.id != first.id
    with db_engine.begin() as conn:  # Laravel rewrote the row for someone else (user_id column)
        conn.execute(update(sessions).where(sessions.c.id == second.id).values(user_id=9))
    third = laravel_session_from(service.exchange(cookie_request(service, wire_cookie(sid))), db_engine)
    assert third.id not in (first.id, second.id)
    with db_engine.begin() as conn:  # logged out: Laravel deleted the row
        conn.execute(delete(sessions).where(sessions.c.id == third.id))
    fourth = laravel_session_from(service.exchange(cookie_request(service, wire_cookie(sid))), db_engine)
    assert fourth.id not in (first.id, second.id, third.id)
    # Every row it made that still exists is in the ledger: the expired one and the one Laravel deleted went
    # (one row per Express session), the one Laravel gave user 9 stays ledgered for rollback.
    ledgered = {r.session_id for r in ledger_rows(db_engine, 1)}
    assert ledgered == {second.id, fourth.id}
    with db_engine.connect() as conn:
        assert conn.execute(select(sessions.c.id).where(sessions.c.id == first.id)).first() is None


def test_found_row_is_touched(service, db_engine, redis_client):
    add_users(db_engine, [1])
    sid = live_session(redis_client, 1)
    row = laravel_session_from(service.exchange(cookie_request(service, wire_cookie(sid))), db_engine)
    with db_engine.begin() as conn:
        conn.execute(update(sessions).where(sessions.c.id == row.id).values(last_activity=row.last_activity - 3600))
    again = laravel_session_from(service.exchange(cookie_request(service, wire_cookie(sid))), db_engine)
    assert again.id == row.id and again.last_activity >= row.last_activity


def test_concurrent_exchanges_of_a_fresh_user(service, db_engine, redis_client):
    add_users(db_engine, [8])
    sid = live_session(redis_client, 8)
    barrier = threading.Barrier(2)
    results, failures = [], []

    def run():
        barrier.wait()
        try:
            results.append(service.exchange(cookie_request(service, wire_cookie(sid))))
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert sorted(r.migrated_now for r in results) == [False, True]
    assert sum(token_verifies(db_engine, r.access_token) for r in results) == 1
    assert len(migration_tokens(db_engine, 8)) == 1
    assert len(ledger_rows(db_engine, 8)) == 1


# --- refusals --------------------------------------------------------------------------------------


def _bad_cookies(redis_client):
    """Every kind of bad session, each as the cookie value a client would send."""
    add = live_session
    good_sid = add(redis_client, 1)
    signed = sign(good_sid, SECRETS[0])
    expired_sid = add(redis_client, 1)
    redis_client.delete("sess:" + expired_sid)
    return {
        "unknown secret": wire_cookie(good_sid, "not-a-configured-secret"),
        "tampered signature": quote("s:" + signed[:-1] + ("A" if signed[-1] != "A" else "B"), safe=""),
        "tampered session id": quote("s:" + ("X" if signed[0] != "X" else "Y") + signed[1:], safe=""),
        "truncated signature": quote("s:" + signed[:-1], safe=""),
        "signature cut at the dot": quote("s:" + signed.split(".")[0] + ".", safe=""),
        "no signature": quote("s:" + good_sid, safe=""),
        "without s: prefix": quote(signed, safe=""),
        "not a cookie at all": "garbage",
        "expired key": wire_cookie(expired_sid),
        "anonymous session": wire_cookie(add(redis_client, None)),
        "orphaned session": wire_cookie(add(redis_client, 424242)),
        "user id not a number": wire_cookie(add(redis_client, "ann")),
        "user object without id": wire_cookie(add(redis_client, {"username": "ann"})),
        "non-JSON value": wire_cookie(_raw(redis_client, b"not json")),
        "JSON null": wire_cookie(_raw(redis_client, b"null")),
        "cookie: null": wire_cookie(_raw(redis_client, b'{"cookie": null, "passport": {"user": 1}}')),
    }


def _raw(redis_client, value: bytes) -> str:
    sid = new_sid()
    put_session(redis_client, sid, value)
    return sid


def test_every_bad_session_is_the_same_invalid_grant(service, db_engine, redis_client):
    add_users(db_engine, [1])
    bad = _bad_cookies(redis_client)
    before = snapshot(db_engine)
    for kind, cookie in bad.items():
        with pytest.raises(InvalidGrant) as raised:
            service.exchange(cookie_request(service, cookie))
        refused = raised.value
        assert (refused.status, refused.body(), refused.headers()) == (
            401, {"error": "invalid_grant"}, {"Cache-Control": "no-store", "Pragma": "no-cache"}), kind
    assert snapshot(db_engine) == before
    # the same cookie in an RFC 8693 body fares the same
    body = {"grant_type": GRANT_TYPE, "subject_token": bad["tampered signature"],
            "subject_token_type": SUBJECT_TOKEN_TYPE}
    with pytest.raises(InvalidGrant):
        service.exchange(service.parse({"Content-Type": "application/json"}, json.dumps(body), source=SOURCE))


class CountingRedis:
    """The Redis client, counting the GETs the exchange makes (a wrapper of redis-py, not of our code)."""

    def __init__(self, inner) -> None:
        self.inner, self.gets = inner, 0

    def get(self, key):
        self.gets += 1
        return self.inner.get(key)


class CountingHmac:
    """The standard library's ``hmac`` as the cookie check sees it, counting the MACs computed."""

    compare_digest = staticmethod(hmac.compare_digest)

    def __init__(self) -> None:
        self.macs = 0

    def new(self, *args, **kwargs):
        self.macs += 1
        return hmac.new(*args, **kwargs)


def test_every_bad_session_costs_the_same_work(xsettings, xmigrator, db_engine, redis_client, monkeypatch):
    """No timing assertions: the same HMACs, Redis and database round trips for every kind of bad session."""
    import tokenmigration.formats.express as express_format

    assert len(SECRETS) > 1, "the check must cost one HMAC per configured secret, so configure several"
    add_users(db_engine, [1])
    counting = CountingRedis(redis_client)
    macs = CountingHmac()
    monkeypatch.setattr(express_format, "hmac", macs)
    service = ExchangeService(xsettings, xmigrator, counting, InMemoryFailureThrottle(limit=1000))
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    event.listen(db_engine, "before_cursor_execute", record)
    try:
        work = {}
        for kind, cookie in _bad_cookies(redis_client).items():
            counting.gets, macs.macs, statements[:] = 0, 0, []
            with pytest.raises(InvalidGrant):
                service.exchange(cookie_request(service, cookie))
            work[kind] = (macs.macs, counting.gets, tuple(statements))
    finally:
        event.remove(db_engine, "before_cursor_execute", record)
    shapes = set(work.values())
    assert len(shapes) == 1, work
    hmacs, gets, sql = shapes.pop()
    assert hmacs == len(SECRETS) and gets == 1
    assert sum("FROM users" in s for s in sql) == 1 and not any("UPDATE" in s or "INSERT" in s for s in sql)


def test_a_user_holding_app_tokens_gets_a_migration_token_minted_now(service, db_engine, redis_client):
    add_users(db_engine, [4])
    app_token = add_app_token(db_engine, 4)
    sid = live_session(redis_client, 4)
    first = service.exchange(cookie_request(service, wire_cookie(sid)))
    again = service.exchange(cookie_request(service, wire_cookie(sid)))  # the client lost the first answer
    assert first.migrated_now and not again.migrated_now
    assert not token_verifies(db_engine, first.access_token) and token_verifies(db_engine, again.access_token)
    assert migration_tokens(db_engine, 4) == [first.token_id] == [again.token_id]  # one live migration token
    with db_engine.connect() as conn:
        holders = conn.execute(select(tokens.c.id).where(tokens.c.tokenable_id == 4)).scalars().all()
    assert sorted(holders) == sorted([app_token, first.token_id])  # the app's token untouched
    assert laravel_session_from(first, db_engine).id == laravel_session_from(again, db_engine).id
    assert len(ledger_rows(db_engine, 4)) == 1


def test_a_holder_whose_session_a_run_carried_gets_that_row(service, xmigrator, db_engine, redis_client):
    add_users(db_engine, [4])
    add_app_token(db_engine, 4)
    sid = live_session(redis_client, 4)
    for chunk in xmigrator.plan("run-1", 10).chunks:
        result = xmigrator.migrate_chunk(chunk, "run-1")
        assert (result.skipped_users, result.sessions_migrated) == (1, 1)  # skipped for the token only
    (carried,) = ledger_rows(db_engine, 4)
    exchanged = service.exchange(cookie_request(service, wire_cookie(sid)))
    assert token_verifies(db_engine, exchanged.access_token)
    assert laravel_session_from(exchanged, db_engine).id == carried.session_id
    assert ledger_rows(db_engine, 4) == [carried]


def test_a_revoked_or_expired_migration_token_is_not_reissued(service, db_engine, redis_client):
    add_users(db_engine, [1, 2])
    sid1, first = exchange_cookie(service, redis_client, 1)
    sid2, second = exchange_cookie(service, redis_client, 2)
    with db_engine.begin() as conn:
        conn.execute(delete(tokens).where(tokens.c.id == first.token_id))  # the app revoked it (logout)
        conn.execute(update(tokens).where(tokens.c.id == second.token_id)
                     .values(expires_at=utcnow() - timedelta(minutes=1)))
    before = snapshot(db_engine)
    for sid in (sid1, sid2):
        with pytest.raises(InvalidGrant):
            service.exchange(cookie_request(service, wire_cookie(sid)))
    assert snapshot(db_engine) == before  # no second token, no new hash on the expired one


def test_an_app_token_pointed_at_is_never_rotated(service, db_engine, redis_client):
    """migration_token_id naming a token outside the ledger (not ours): refuse rather than rotate it."""
    add_users(db_engine, [1])
    sid, _ = exchange_cookie(service, redis_client, 1)
    app_token = add_app_token(db_engine, 1)
    with db_engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == 1).values(migration_token_id=app_token))
    before = snapshot(db_engine)
    with pytest.raises(InvalidGrant):
        service.exchange(cookie_request(service, wire_cookie(sid)))
    assert snapshot(db_engine) == before


@pytest.mark.parametrize("db_engine", ["postgresql", "mysql"], indirect=True)  # row locks of another connection
def test_user_locked_by_another_transaction(xsettings, db_engine, redis_client, request):
    settings = xsettings.replace(lock_timeout_ms=50)
    service = ExchangeService(settings, Migrator(settings, db_engine, redis_client), redis_client,
                              InMemoryFailureThrottle())
    add_users(db_engine, [3])
    sid = live_session(redis_client, 3)
    with db_engine.connect() as holder, holder.begin():
        holder.execute(select(users.c.id).where(users.c.id == 3).with_for_update())
        with pytest.raises(UserBusy) as raised:
            service.exchange(cookie_request(service, wire_cookie(sid)))
    assert raised.value.status == 409 and raised.value.headers()["Retry-After"] == "1"
    assert token_verifies(db_engine, service.exchange(cookie_request(service, wire_cookie(sid))).access_token)


def test_service_configuration_errors(xsettings, xmigrator, redis_client):
    from tokenmigration.config import ConfigError

    with pytest.raises(ConfigError, match="EXPRESS_SESSION_SECRETS"):
        ExchangeService(xsettings.replace(express_session_secrets=()), xmigrator, redis_client,
                        InMemoryFailureThrottle())
    with pytest.raises(ConfigError, match="LARAVEL_SESSION_COOKIE"):
        ExchangeService(xsettings.replace(laravel_session_cookie=None), xmigrator, redis_client,
                        InMemoryFailureThrottle())
    with pytest.raises(ConfigError, match="LARAVEL_APP_KEY"):
        ExchangeService(xsettings.replace(laravel_app_key="base64:c2hvcnQ="), xmigrator, redis_client,
                        InMemoryFailureThrottle())


# --- throttling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_failures_get_a_source_blocked(xsettings, xmigrator, db_engine, redis_client, kind):
    throttle = (InMemoryFailureThrottle(limit=3, window_seconds=600) if kind == "memory"
                else RedisFailureThrottle(redis_client, limit=3, window_seconds=600))
    service = ExchangeService(xsettings, xmigrator, redis_client, throttle)
    add_users(db_engine, [1, 2])
    for _ in range(3):
        with pytest.raises(InvalidGrant):
            service.exchange(cookie_request(service, wire_cookie(new_sid())))  # no such session
    sid = live_session(redis_client, 1)
    with pytest.raises(TooManyRequests) as raised:  # even a valid session, once blocked
        service.exchange(cookie_request(service, wire_cookie(sid)))
    assert raised.value.status == 429 and raised.value.headers()["Retry-After"] == "600"
    # another source is not affected
    result = service.exchange(cookie_request(service, wire_cookie(sid), source="198.51.100.99"))
    assert token_verifies(db_engine, result.access_token)
    # successes never count: many in a row from one source
    for _ in range(6):
        result = service.exchange(cookie_request(service, wire_cookie(live_session(redis_client, 2)),
                                                 source="198.51.100.50"))
    assert token_verifies(db_engine, result.access_token) and not throttle.blocked("198.51.100.50")


def test_malformed_requests_do_not_reach_the_service(service):
    with pytest.raises(InvalidRequest):
        service.parse({"Cookie": "theme=dark"}, None, source=SOURCE)
    with pytest.raises(InvalidRequest):
        parse_exchange_request({"Content-Type": "application/json"}, '{"grant_type": "x"}')


# --- rollback --------------------------------------------------------------------------------------


def _exchange_everything(service, xmigrator, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3, 4, 5])
    add_app_token(db_engine, 5)  # the app's own token: never touched
    before = snapshot(db_engine)
    bulk_sid = live_session(redis_client, 2)
    for chunk in xmigrator.plan("run-1", 2).chunks:
        xmigrator.migrate_chunk(chunk, "run-1")
    exchange_cookie(service, redis_client, 1)  # already migrated by the run: rotation, new session row
    service.exchange(cookie_request(service, wire_cookie(bulk_sid)))  # rotation, the run's row
    exchange_cookie(service, redis_client, 2)  # a second session of user 2: new row
    exchange_cookie(service, redis_client, 5)  # holds the app's token: a migration token next to it
    return before


def test_rollback_user_after_exchanges_restores_everything(service, xmigrator, db_engine, redis_client):
    add_users(db_engine, [6])
    before_all = snapshot(db_engine)
    sid, _ = exchange_cookie(service, redis_client, 6)  # migrated by the exchange
    service.exchange(cookie_request(service, wire_cookie(sid)))
    exchange_cookie(service, redis_client, 6)
    result = xmigrator.rollback_user(6)
    assert (result.tokens_revoked, result.sessions_removed, result.users) == (1, 2, 1)
    assert snapshot(db_engine) == before_all


def test_whole_rollback_after_exchanges_restores_everything(service, xmigrator, db_engine, redis_client):
    before = _exchange_everything(service, xmigrator, db_engine, redis_client)
    assert snapshot(db_engine) != before
    for chunk in xmigrator.plan_rollback(2):
        xmigrator.rollback_chunk(chunk)
    assert snapshot(db_engine) == before
    with db_engine.connect() as conn:
        assert ledgered_token_rows(conn) == [] and ledgered_session_rows(conn) == []


def test_per_user_rollback_after_exchanges_restores_everything(service, xmigrator, db_engine, redis_client):
    before = _exchange_everything(service, xmigrator, db_engine, redis_client)
    for user_id in (1, 2, 3, 4, 5):
        xmigrator.rollback_user(user_id)
    assert snapshot(db_engine) == before


# --- secrets stay out of the logs ------------------------------------------------------------------


def test_no_secret_reaches_the_logs(service, xsettings, db_engine, redis_client, caplog):
    caplog.set_level(logging.DEBUG)
    add_users(db_engine, [1, 2, 3])
    add_app_token(db_engine, 3)
    secrets_seen: list[str] = [*SECRETS, APP_KEY, APP_KEY.removeprefix("base64:"), APP_KEY_BYTES.hex()]
    outputs: list[object] = []
    sids = [live_session(redis_client, 1), live_session(redis_client, 1), live_session(redis_client, 3)]
    for sid in sids:
        secrets_seen += [sid, sign(sid, SECRETS[0]), wire_cookie(sid)]
    for sid in [*sids[:2] * 2, sids[2]]:  # sids[2]: a holder of an app-made token, served all the same
        result = service.exchange(cookie_request(service, wire_cookie(sid)))
        value = result.set_cookie.split(";")[0].split("=", 1)[1]
        laravel_id = read_session_cookie(LARAVEL_COOKIE, value, APP_KEY)
        secrets_seen += [result.access_token, result.access_token.split("|", 1)[1], value, laravel_id]
        outputs += [result, repr(result)]
    body = {"grant_type": GRANT_TYPE, "subject_token": wire_cookie(sids[0]), "subject_token_type": SUBJECT_TOKEN_TYPE}
    request = service.parse({"Content-Type": "application/json"}, json.dumps(body), source=SOURCE)
    outputs.append(repr(request))
    result = service.exchange(request)
    secrets_seen += [result.access_token, result.access_token.split("|", 1)[1]]
    for cookie in (wire_cookie(new_sid()), wire_cookie(sids[0], "wrong-secret"), "s%3Ajunk"):
        secrets_seen.append(cookie)
        with pytest.raises(InvalidGrant) as refused:  # each refusal is real, and its text is checked below
            service.exchange(cookie_request(service, cookie))
        outputs += [str(refused.value), repr(refused.value), refused.value.body()]
    assert caplog.records, "the exchange logs its outcomes"
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records) + "\n".join(map(str, outputs))
    for secret in secrets_seen:
        assert secret and secret not in text
