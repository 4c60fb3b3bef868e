"""Nothing a client can send produces a 5xx, and no response carries a stack trace."""

from __future__ import annotations

import base64
import json

import pytest

from helpers import add_users, snapshot

POST_FUNCTIONS = ("api_start", "api_complete", "api_rollback", "api_cleanup", "api_migrate_user",
                  "api_rollback_user", "api_exchange", "api_bridge")
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
    if name in ("api_exchange", "api_bridge"):  # OAuth-shaped answers (RFC 8693), not the admin envelope
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


# --- what each POST route answers: a refusal is asserted as a refusal, never as "anything below 500" ---------

ADMIN_POSTS = ("api_start", "api_complete", "api_rollback", "api_cleanup")
USER_POSTS = ("api_migrate_user", "api_rollback_user")  # their input is the path: the body is never read
NO_BODY = (None, "", "null")  # "no options": only cleanup has none that are required
INVALID_PREFIX = "The request is invalid: "


def assert_invalid(result, name: str, body=None) -> None:
    """400 with the field errors, and a message naming the first of them."""
    context = (name, body if body is None else str(body)[:60], result.status, result.text[:300])
    assert result.status == 400, context
    assert result.body["success"] is False, context
    errors = result.body["errors"]
    assert errors, context
    field, messages = next(iter(errors.items()))
    assert result.body["message"].startswith(f"{INVALID_PREFIX}{field} {messages[0]}"), context


def assert_not_json_refusal(result, name: str) -> None:
    assert (result.status, result.body) == (400, {
        "success": False, "message": f"{INVALID_PREFIX}body must be sent as application/json",
        "errors": {"body": ["must be sent as application/json"]}}), (name, result.text[:300])


def assert_nothing_started(stack, flags_before) -> None:
    assert stack.ledger.active_run() is None and stack.ledger.latest_run_id() is None
    assert stack.executions() == [] and stack.executions(stack.rollback_arn) == []
    assert stack.flags.read() == flags_before


def expect_body_refused(name: str, body) -> bool:
    """Whether a POST route must refuse this body (every NASTY_BODIES entry but cleanup's "no body")."""
    return not (name == "api_cleanup" and body in NO_BODY)


@pytest.mark.parametrize("name", ADMIN_POSTS)
def test_nasty_bodies_are_refused_and_start_nothing(api, stack, users, pg_engine, name):
    flags_before = stack.flags.read()
    before = snapshot(pg_engine)
    for body in NASTY_BODIES:
        result = api.invoke(name, body=body)
        assert_safe(result, name)
        if expect_body_refused(name, body):
            assert_invalid(result, name, body)
        else:
            assert result.status == 200 and result.body["success"] is True, (body, result.text[:300])
        assert_nothing_started(stack, flags_before)
    assert snapshot(pg_engine) == before


@pytest.mark.parametrize("name", USER_POSTS)
def test_the_user_routes_never_read_the_body(api, stack, users, pg_engine, name):
    """Whatever the body, the answer is the one for the path alone: migrated once, then refused as a conflict."""
    expected = {"api_migrate_user": "user 42 is already migrated", "api_rollback_user": "user 42 is not migrated"}
    if name == "api_migrate_user":
        first = api.invoke(name, body=NASTY_BODIES[1])
        assert first.status == 200 and first.body["data"]["token_id"], first.text[:300]
    after_first = snapshot(pg_engine)
    for body in NASTY_BODIES:
        result = api.invoke(name, body=body)
        assert_safe(result, name)
        assert (result.status, result.body) == (409, {"success": False, "message": expected[name]}), body
    assert snapshot(pg_engine) == after_first


def test_nasty_exchange_bodies_are_refused_and_issue_nothing(api, stack, users, pg_engine):
    before = snapshot(pg_engine)
    for number, body in enumerate(NASTY_BODIES):
        event = api.event("api_exchange", body=body)
        event["requestContext"]["identity"]["sourceIp"] = f"198.51.100.{number}"  # below the failure throttle
        result = api.invoke("api_exchange", event)
        assert_safe(result, "api_exchange")
        assert (result.status, result.body) in ((400, {"error": "invalid_request"}), (401, {"error": "invalid_grant"})
                                                ), (body if body is None else body[:60], result.text[:200])
    assert snapshot(pg_engine) == before


CONTENT_TYPES = [
    "application/xml", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
    "multipart/form-data", "", ";;;", "application/json; charset=latin-1", "application/problem+json",
]
JSON_MEDIA = ("", ";;;", "application/json; charset=latin-1", "application/problem+json")  # read as JSON
ODD_TYPE_BODIES = ('{"confirm": true}', "confirm=true&dry_run=1", "--xyz\r\n\r\n--xyz--", None)
RUN_IDS = ("migration_id", "rollback_id", "execution_arn")


def _comparable(result) -> tuple[int, object]:
    body = result.body
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in RUN_IDS}
    return result.status, body


@pytest.mark.parametrize("name", ADMIN_POSTS)
def test_odd_content_types(api, stack, users, name):
    """Other media types are refused as such; JSON-ish ones (or none) answer exactly as application/json does."""
    flags_before = stack.flags.read()
    for content_type in CONTENT_TYPES:
        if content_type in JSON_MEDIA:
            continue
        for body in ODD_TYPE_BODIES:
            result = api.invoke(name, body=body, headers={"Content-Type": content_type})
            assert_not_json_refusal(result, name)
            assert_nothing_started(stack, flags_before)
    for body in ODD_TYPE_BODIES:
        reference = api.invoke(name, body=body, headers={"Content-Type": "application/json"})
        stack.ledger.release_lock(stack.ledger.active_run() or "-")  # /start's reference run: free the lock
        for content_type in JSON_MEDIA:
            result = api.invoke(name, body=body, headers={"Content-Type": content_type})
            assert _comparable(result) == _comparable(reference), (content_type, body)
            stack.ledger.release_lock(stack.ledger.active_run() or "-")


@pytest.mark.parametrize("name", ADMIN_POSTS)
def test_base64_bodies(api, stack, users, name):
    flags_before = stack.flags.read()
    for raw in ["!!!not base64!!!", base64.b64encode(b"\xff\xfe\xfd").decode(), "e30"]:  # "e30": bad padding
        result = api.invoke(name, body=raw, base64=True)
        assert_safe(result, name)
        assert_invalid(result, name, raw)
        assert result.body["errors"] == {"body": ["is not valid JSON"]}
        assert_nothing_started(stack, flags_before)
    empty = api.invoke(name, body="=", base64=True)  # decodes to nothing: answered as no body at all
    assert _comparable(empty) == _comparable(api.invoke(name, body=None))
    assert_nothing_started(stack, flags_before)
    result = api.invoke(name, body="e30=", base64=True)  # "{}": the route's own rules apply
    if name == "api_cleanup":
        assert result.status == 200 and result.body["success"] is True
    else:
        assert_invalid(result, name, "{}")
        assert result.body["errors"] == {"confirm": ["is required"]}
    assert_nothing_started(stack, flags_before)


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


@pytest.mark.parametrize("name", ADMIN_POSTS)
def test_no_headers_at_all(api, stack, users, name):
    """The sample event's body with no headers: read as JSON (no Content-Type), so the route's answer is the same."""
    reference = api.invoke(name)
    stack.ledger.release_lock(stack.ledger.active_run() or "-")
    event = api.event(name)
    event["headers"] = None
    event["multiValueHeaders"] = None
    result = api.invoke(name, event)
    assert_safe(result, name)
    assert _comparable(result) == _comparable(reference)


@pytest.mark.parametrize("name", (*USER_POSTS, "api_exchange", *GET_FUNCTIONS))
def test_no_headers_at_all_elsewhere(api, stack, users, name):
    event = api.event(name)
    event["headers"] = None
    event["multiValueHeaders"] = None
    result = api.invoke(name, event)
    assert_safe(result, name)
    if name == "api_exchange":  # no cookie, no body: no session to exchange
        assert (result.status, result.body) == (401, {"error": "invalid_grant"})
    else:
        assert result.status in (200, 409), result.text[:300]


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
