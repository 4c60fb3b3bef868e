"""POST /auth/migration/exchange through its Lambda handler: real PostgreSQL and Redis, moto for SSM."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from sqlalchemy import select

from helpers import add_users, express, put_session
from tokenmigration.aws.context import reset_services
from tokenmigration.db.schema import sessions
from tokenmigration.engine.verify import token_verifies
from tokenmigration.formats.express import cookie_value
from tokenmigration.formats.laravel_cookie import read_session_cookie

APP_KEY = "base64:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TYPE = "urn:tokenmigration:express-session"


@pytest.fixture
def session_of_42(pg_engine, redis_client) -> str:
    add_users(pg_engine, [42])
    put_session(redis_client, "live-session-of-user-42", express(42, ip="198.51.100.4", userAgent="Firefox"))
    return "live-session-of-user-42"


def header(result, name: str) -> list[str]:
    """A response header's values, as API Gateway (REST, multi-value) gets them from the handler."""
    multi = result.raw.get("multiValueHeaders") or {}
    single = result.raw.get("headers") or {}
    return multi.get(name) or ([single[name]] if name in single else [])


def exchange(api, *, cookie: str | None = None, body=None):
    headers = {"Cookie": f"connect.sid={cookie}"} if cookie else {}
    return api.invoke("api_exchange", body=body, headers=headers, drop_headers=() if cookie else ("Cookie",))


def test_a_signed_cookie_gets_a_working_token(api, stack, pg_engine, session_of_42):
    result = exchange(api, cookie=cookie_value(session_of_42, "current-express-secret"))
    assert result.status == 200, result.body
    assert result.body["token_type"] == "Bearer"
    assert result.body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert token_verifies(pg_engine, result.body["access_token"])
    assert header(result, "Cache-Control") == ["no-store"]


def test_the_rfc_8693_body_signed_with_the_previous_secret(api, stack, pg_engine, session_of_42):
    body = {"grant_type": GRANT, "subject_token": cookie_value(session_of_42, "previous-express-secret"),
            "subject_token_type": SUBJECT_TYPE}
    first = exchange(api, body=body)
    again = exchange(api, body=body)  # the client lost the first answer
    assert (first.status, again.status) == (200, 200)
    assert not token_verifies(pg_engine, first.body["access_token"])
    assert token_verifies(pg_engine, again.body["access_token"])
    assert first.body["access_token"].split("|")[0] == again.body["access_token"].split("|")[0]


@pytest.mark.parametrize("cookie", [
    cookie_value("live-session-of-user-42", "not-our-secret"),
    cookie_value("no-such-session", "current-express-secret"),
    "s%3Alive-session-of-user-42.AAAA",
])
def test_every_bad_session_is_the_same_invalid_grant(api, stack, session_of_42, cookie):
    result = exchange(api, cookie=cookie)
    assert (result.status, result.body) == (401, {"error": "invalid_grant"})


def test_no_session_at_all_is_a_malformed_request(api, stack):
    result = exchange(api, body=None)
    assert result.status == 400 and result.body["error"] == "invalid_request"


def test_switched_off_by_its_flag(api, stack, session_of_42):
    stack.flags.set(exchange_enabled=False)
    result = exchange(api, cookie=cookie_value(session_of_42, "current-express-secret"))
    assert result.status == 403 and result.body["error"] == "exchange_disabled"


def test_with_the_app_key_it_sets_the_laravel_session_cookie(api, stack, pg_engine, session_of_42, monkeypatch):
    monkeypatch.setenv("LARAVEL_APP_KEY", APP_KEY)
    monkeypatch.setenv("LARAVEL_SESSION_COOKIE", "laravel_session")
    reset_services()
    result = exchange(api, cookie=cookie_value(session_of_42, "current-express-secret"))
    assert result.status == 200, result.body
    (laravel,) = [c for c in header(result, "Set-Cookie") if c.startswith("laravel_session=")]
    assert "HttpOnly" in laravel and "SameSite=Lax" in laravel and "Path=/" in laravel
    session_id = read_session_cookie("laravel_session", laravel.split(";")[0].split("=", 1)[1], APP_KEY)
    with pg_engine.connect() as conn:
        owner = conn.execute(select(sessions.c.user_id).where(sessions.c.id == session_id)).scalar_one()
    assert owner == 42


def test_nothing_secret_reaches_the_logs(api, stack, session_of_42, capsys):
    cookie = cookie_value(session_of_42, "current-express-secret")
    result = exchange(api, cookie=cookie)
    logged = capsys.readouterr()
    text = logged.out + logged.err
    secret = result.body["access_token"].split("|")[1]
    for forbidden in (secret, session_of_42, cookie, quote(cookie), "current-express-secret"):
        assert forbidden not in text
    assert json.dumps(result.body)  # the answer itself is where the token goes


def _fail_from(api, forwarded_for: str | None):
    headers = {"Cookie": f"connect.sid={cookie_value('gone', 'current-express-secret')}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return api.invoke("api_exchange", body=None, headers=headers)


def test_behind_cloudfront_the_throttle_counts_the_viewer_not_the_edge(api, stack, session_of_42, monkeypatch):
    monkeypatch.setenv("EXCHANGE_TRUSTED_PROXY_HEADER", "X-Forwarded-For")
    monkeypatch.setenv("EXCHANGE_TRUSTED_PROXY_HOPS", "2")
    reset_services()
    edge = "130.176.98.77"  # every request of this test comes from one source IP (the sample event's)
    for n in range(20):  # EXCHANGE_FAILURE_LIMIT's default, from one viewer (spoofing its own left part)
        assert _fail_from(api, f"10.9.9.{n}, 203.0.113.66, {edge}").status == 401
    assert _fail_from(api, f"203.0.113.66, {edge}").status == 429
    good = exchange(api, cookie=cookie_value(session_of_42, "current-express-secret"))
    assert good.status == 200, good.body  # the sample event's viewer is another address: not slowed down


def test_without_a_trusted_header_every_viewer_behind_one_proxy_shares_the_count(api, stack, session_of_42):
    for n in range(20):
        assert _fail_from(api, f"203.0.113.{n}, 130.176.98.77").status == 401
    assert exchange(api, cookie=cookie_value(session_of_42, "current-express-secret")).status == 429
