"""POST /auth/migration/bridge through its Lambda handler: real PostgreSQL and Redis, moto for SSM (the flags).

The throttle here is the deployed one (Redis): failures count per client_ip and per Express session, and every
request of these tests comes from the same caller address, as every request of one Laravel app does."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from helpers import add_app_token, add_users, express, put_session
from tokenmigration.db.schema import sessions
from tokenmigration.formats.express import cookie_value
from tokenmigration.formats.laravel_session import LOGIN_WEB_KEY, decode_payload

SECRET = "current-express-secret"


@pytest.fixture
def session_of_42(pg_engine, redis_client) -> str:
    add_users(pg_engine, [42])
    put_session(redis_client, "live-session-of-user-42", express(42, userAgent="Firefox"))
    return cookie_value("live-session-of-user-42", SECRET)


def bridge(api, body):
    return api.invoke("api_bridge", body=body if isinstance(body, str) or body is None else json.dumps(body))


def test_a_valid_cookie_gets_the_users_laravel_session(api, stack, pg_engine, session_of_42):
    result = bridge(api, {"session_cookie": session_of_42, "client_ip": "203.0.113.10"})
    assert result.status == 200, result.body
    body = result.body
    assert set(body) == {"user_id", "session_id", "lifetime_minutes", "auth_mode"}  # no cookie name configured
    assert (body["user_id"], body["auth_mode"], body["lifetime_minutes"]) == (42, "dual", 120)
    with pg_engine.connect() as conn:
        row = conn.execute(select(sessions).where(sessions.c.id == body["session_id"])).one()
    assert row.user_id == 42 and decode_payload(row.payload)[LOGIN_WEB_KEY] == 42
    assert "access_token" not in result.text
    again = bridge(api, {"session_cookie": session_of_42})
    assert again.body["session_id"] == body["session_id"]
    assert (result.raw.get("multiValueHeaders") or {}).get("Cache-Control") == ["no-store"] or \
        result.raw["headers"]["Cache-Control"] == "no-store"


def test_the_cookie_name_is_answered_when_configured(api, stack, session_of_42, monkeypatch):
    from tokenmigration.aws.context import reset_services

    monkeypatch.setenv("LARAVEL_SESSION_COOKIE", "laravel_session")
    reset_services()
    result = bridge(api, {"session_cookie": session_of_42})
    assert result.status == 200 and result.body["session_cookie_name"] == "laravel_session"


def test_a_holder_of_app_tokens_is_bridged(api, stack, pg_engine, redis_client):
    add_users(pg_engine, [7])
    add_app_token(pg_engine, 7)
    put_session(redis_client, "holder-session", express(7))
    result = bridge(api, {"session_cookie": cookie_value("holder-session", SECRET)})
    assert result.status == 200 and result.body["user_id"] == 7


@pytest.mark.parametrize("cookie", [
    cookie_value("live-session-of-user-42", "not-our-secret"),
    cookie_value("no-such-session", SECRET),
    "s%3Alive-session-of-user-42.AAAA",
    "plain-garbage",
])
def test_every_bad_session_is_the_same_401(api, stack, session_of_42, cookie):
    result = bridge(api, {"session_cookie": cookie, "client_ip": "203.0.113.10"})
    assert (result.status, result.body) == (401, {"error": "invalid_grant"})


@pytest.mark.parametrize("body", [None, "", "{}", "[]", '{"session_cookie": 1}', "not json",
                                  '{"session_cookie": "x", "client_ip": "nope"}'])
def test_a_malformed_body_is_invalid_request(api, stack, body):
    result = bridge(api, body)
    assert (result.status, result.body) == (400, {"error": "invalid_request"})


@pytest.mark.parametrize(("flags", "expected"), [
    ({"exchange_enabled": False}, {"auth_mode": "dual", "exchange_enabled": False}),
    ({"auth_mode": "sanctum", "sanctum_only": True}, {"auth_mode": "sanctum", "exchange_enabled": True}),
])
def test_off_while_the_exchange_is_off_or_the_app_is_token_only(api, stack, pg_engine, session_of_42, flags,
                                                                 expected):
    stack.flags.set(**flags)
    result = bridge(api, {"session_cookie": session_of_42})
    assert (result.status, result.body) == (403, {"error": "bridge_off", **expected})
    with pg_engine.connect() as conn:
        assert conn.execute(select(sessions.c.id)).first() is None  # nothing done


def test_the_throttle_counts_the_browser_address_not_the_caller(api, stack, session_of_42):
    for n in range(20):  # EXCHANGE_FAILURE_LIMIT's default, all from one browser address
        assert bridge(api, {"session_cookie": cookie_value(f"gone-{n}", SECRET),
                            "client_ip": "203.0.113.66"}).status == 401
    slowed = bridge(api, {"session_cookie": session_of_42, "client_ip": "203.0.113.66"})
    assert (slowed.status, slowed.body) == (429, {"error": "slow_down"})
    headers = {**(slowed.raw.get("headers") or {}),
               **{k: v[-1] for k, v in (slowed.raw.get("multiValueHeaders") or {}).items()}}
    assert headers["Retry-After"] == "300"
    # The same caller (every request here has one sourceIp) serves every other browser.
    assert bridge(api, {"session_cookie": session_of_42, "client_ip": "203.0.113.67"}).status == 200


def test_nothing_secret_reaches_the_logs(api, stack, session_of_42, capsys):
    result = bridge(api, {"session_cookie": session_of_42, "client_ip": "203.0.113.10"})
    bridge(api, {"session_cookie": cookie_value("live-session-of-user-42", "wrong")})
    logged = capsys.readouterr()
    text = logged.out + logged.err
    for forbidden in (result.body["session_id"], "live-session-of-user-42", session_of_42, SECRET):
        assert forbidden not in text
