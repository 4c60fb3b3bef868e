"""Nothing a client can send produces a 5xx, and no response carries a stack trace."""

from __future__ import annotations

import base64
import json

import pytest

from helpers import add_users

POST_FUNCTIONS = ("api_start", "api_complete", "api_rollback", "api_cleanup", "api_migrate_user",
                  "api_rollback_user", "api_exchange")
GET_FUNCTIONS = ("api_progress", "api_stats", "api_errors")

NASTY_BODIES = [
    None, "", " ", "\n", "{", "}", "null", "[]", "[1, 2]", "0", "-1", "1e999", "NaN", "Infinity", '"x"', "true",
    '{"confirm": NaN}', '{"confirm": Infinity}', '{"confirm": true, "chunk_size": 1e999}',
    '{"confirm": true, "chunk_size": ' + "9" * 5000 + "}",
    '{"confirm": true, "max_concurrency": -0}', '{"confirm": true, "confirm": false}',
    '{"confirm": {"$gt": ""}}', '{"confirm": [true]}', '{"confirm": "\\ud800"}', '{"__proto__": {"confirm": true}}',
    "[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "\x00", "\u2028", "{\"confirm\": true}\x00",
    json.dumps({"confirm": True, "dry_run": None, "chunk_size": None, "max_concurrency": None}),
    json.dumps({"confirm": True, "extra": "x" * 100_000}),
    json.dumps({f"k{i}": i for i in range(5_000)}),
]


def assert_safe(result, name: str) -> None:
    assert "Traceback" not in result.text and 'File "' not in result.text
    if name == "api_exchange":  # OAuth-shaped answers (RFC 8693), not the admin envelope
        assert result.status < 500, (name, result.status, result.text[:300])
        assert isinstance(result.body, dict) and isinstance(result.body.get("error", ""), str)
        return
    assert result.status < 500, (name, result.status, result.text[:300])
    assert isinstance(result.body, dict) and isinstance(result.body.get("success"), bool)
    assert isinstance(result.body.get("message"), str) and result.body["message"]
    if result.status == 400 and "errors" in result.body:
        assert all(isinstance(k, str) and v and all(isinstance(m, str) for m in v)
                   for k, v in result.body["errors"].items())


@pytest.fixture
def users(pg_engine):
    add_users(pg_engine, [42])


@pytest.mark.parametrize("name", POST_FUNCTIONS)
def test_nasty_bodies(api, stack, users, name):
    for body in NASTY_BODIES:
        assert_safe(api.invoke(name, body=body), name)
        stack.ledger.release_lock(stack.ledger.active_run() or "-")  # keep /start and /rollback testable


CONTENT_TYPES = [
    "application/xml", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
    "multipart/form-data", "", ";;;", "application/json; charset=latin-1", "application/problem+json",
]


@pytest.mark.parametrize("name", POST_FUNCTIONS)
def test_odd_content_types(api, stack, users, name):
    for content_type in CONTENT_TYPES:
        for body in ('{"confirm": true}', "confirm=true&dry_run=1", "--xyz\r\n\r\n--xyz--", None):
            assert_safe(api.invoke(name, body=body, headers={"Content-Type": content_type}), name)
            stack.ledger.release_lock(stack.ledger.active_run() or "-")


@pytest.mark.parametrize("name", POST_FUNCTIONS)
def test_base64_bodies(api, stack, users, name):
    for raw in ["!!!not base64!!!", base64.b64encode(b"\xff\xfe\xfd").decode(), "e30", "="]:
        assert_safe(api.invoke(name, body=raw, base64=True), name)


def test_a_base64_encoded_json_body_is_read(api, stack):
    body = base64.b64encode(b'{"confirm": true, "dry_run": true}').decode()
    result = api.invoke("api_start", body=body, base64=True)
    assert result.status == 202 and result.body["dry_run"] is True


@pytest.mark.parametrize("name", GET_FUNCTIONS)
def test_nasty_queries(api, stack, name):
    api.invoke("api_start", body={"confirm": True})
    for query in [
        {"migration_id": "\x00"}, {"migration_id": "x" * 10_000}, {"migration_id": "%00"}, {"migration_id": " "},
        {"limit": ""}, {"limit": "-1"}, {"limit": "1e2"}, {"limit": "0x10"}, {"limit": "٣"},
        {"cursor": "%%%"}, {"cursor": "===="}, {"cursor": base64.urlsafe_b64encode(b"[1]").decode()},
        {"cursor": base64.urlsafe_b64encode(b'{"sk": 5}').decode()}, {"cursor": "\ud800"},
        {"unknown": "x"}, {}, None,
    ]:
        assert_safe(api.invoke(name, query=query), name)


@pytest.mark.parametrize("name", POST_FUNCTIONS + GET_FUNCTIONS)
def test_no_headers_at_all(api, stack, users, name):
    event = api.event(name)
    event["headers"] = None
    event["multiValueHeaders"] = None
    assert_safe(api.invoke(name, event), name)
    stack.ledger.release_lock(stack.ledger.active_run() or "-")


@pytest.mark.parametrize("name", POST_FUNCTIONS + GET_FUNCTIONS)
def test_a_path_or_method_the_function_does_not_serve_is_404(api, stack, name):
    event = api.event(name)
    event["httpMethod"] = "DELETE"
    result = api.invoke(name, event)
    assert result.status == 404
    assert result.body == {"success": False, "message": "Not found"}
    event = api.event(name)
    event["path"] = "/auth/migration/nowhere"
    assert api.invoke(name, event).status == 404


def test_an_event_api_gateway_never_sends_is_a_plain_500(api, stack):
    event = api.event("api_stats")
    del event["httpMethod"]
    result = api.invoke("api_stats", event)
    assert result.status == 500
    assert result.body == {"success": False, "message": "internal error"}


def test_a_broken_database_is_a_plain_500(api, stack, monkeypatch, logs):
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://nobody:s3cr3t-pw@127.0.0.1:1/none")
    from tokenmigration.aws.context import reset_services
    reset_services()
    result = api.invoke("api_stats")
    assert result.status == 500
    assert result.body == {"success": False, "message": "internal error"}
    assert "s3cr3t-pw" not in result.text
    assert "unhandled error" in logs.text
    assert "s3cr3t-pw" not in logs.text  # the driver's message names host and port, never the password


def test_a_missing_setting_is_a_plain_500(api, stack, monkeypatch):
    monkeypatch.delenv("TABLE_NAME")
    from tokenmigration.aws.context import reset_services
    reset_services()
    result = api.invoke("api_progress")
    assert result.status == 500 and result.body == {"success": False, "message": "internal error"}
