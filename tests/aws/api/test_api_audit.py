"""Every state-changing call writes one audit line with the caller's IAM identity, and no secret."""

from __future__ import annotations

import re

import pytest

from helpers import add_users

IDENTITY = {
    "user_arn": "arn:aws:sts::123456789012:assumed-role/TokenMigrationOperator/alice@example.com",
    "caller": "AROAZEXAMPLEROLEID01:alice@example.com",
    "user": "AROAZEXAMPLEROLEID01:alice@example.com",
    "access_key": "ASIAZEXAMPLEKEYID01",
    "account_id": "123456789012",
    "source_ip": "203.0.113.10",
    "user_agent": "awscurl/0.36",
}


def assert_no_secrets(text: str, event: dict) -> None:
    headers = event["headers"]
    assert headers["X-Amz-Security-Token"] not in text
    signature = re.search(r"Signature=(\w+)", headers["Authorization"]).group(1)
    assert signature not in text
    # Sanctum plaintext tokens: "<id>|<40 alphanumerics + crc32>".
    assert not re.search(r"\d+\|[A-Za-z0-9]{40}", text)


def test_start_is_audited_with_the_caller(api, stack, logs):
    result = api.invoke("api_start", body={"confirm": True, "dry_run": True})

    [entry] = logs.audit()
    assert entry["action"] == "migration.start"
    assert entry["outcome"] == "accepted" and entry["status"] == 202
    assert entry["run_id"] == result.body["migration_id"]
    assert entry["dry_run"] is True and entry["chunk_size"] == 2000
    assert entry["caller"] == IDENTITY
    assert entry["request_id"] == result.event["requestContext"]["requestId"]
    assert_no_secrets(logs.text, result.event)


def test_a_refused_start_is_audited_too(api, stack, logs):
    first = api.invoke("api_start", body={"confirm": True}).body["migration_id"]
    api.invoke("api_start", body={"confirm": True})
    accepted, refused = logs.audit()
    assert accepted["outcome"] == "accepted"
    assert refused["outcome"] == "refused" and refused["status"] == 409
    assert refused["active_run_id"] == first and refused["error"] == "run_in_progress"
    assert refused["caller"] == IDENTITY


def test_every_state_changing_route_is_audited(api, stack, pg_engine, logs):
    add_users(pg_engine, [42])
    stack.flags.on_migration_finished()
    calls = [
        ("api_migrate_user", {}, "user.migrate"),
        ("api_rollback_user", {}, "user.rollback"),
        ("api_cleanup", {"body": {"dry_run": True}}, "migration.cleanup"),
        ("api_rollback", {"body": {"confirm": True}}, "migration.rollback"),
        ("api_complete", {"body": {"confirm": True}}, "migration.complete"),  # refused: the rollback runs
    ]
    events = []
    for name, changes, _ in calls:
        events.append(api.invoke(name, **changes).event)
    entries = logs.audit()
    assert [e["action"] for e in entries] == [action for _, _, action in calls]
    assert all(e["caller"] == IDENTITY for e in entries)
    migrate, rollback_user, cleanup, rollback, complete = entries
    assert migrate["user_id"] == 42 and migrate["token_id"] > 0 and migrate["run_id"].startswith("user-")
    assert rollback_user["user_id"] == 42 and rollback_user["tokens_revoked"] == 1
    assert cleanup["dry_run"] is True and "cleaned_items" in cleanup
    assert rollback["run_id"].startswith("rollback-") and rollback["status"] == 202
    assert complete["outcome"] == "refused" and complete["status"] == 409
    for event in events:
        assert_no_secrets(logs.text, event)


def test_refusals_of_user_routes_are_audited(api, stack, pg_engine, logs):
    add_users(pg_engine, [1])
    api.invoke("api_migrate_user", user_id=404)
    api.invoke("api_rollback_user", user_id=1)
    missing, not_migrated = logs.audit()
    assert (missing["outcome"], missing["status"], missing["error"]) == ("refused", 404, "unknown_user")
    assert (not_migrated["status"], not_migrated["error"]) == (409, "not_migrated")


@pytest.mark.parametrize("name", ["api_progress", "api_stats", "api_errors"])
def test_reads_are_not_audited(api, stack, logs, name):
    api.invoke(name)
    assert logs.audit() == []


def test_a_request_api_gateway_gave_no_identity_is_audited_with_nulls(api, stack, logs):
    event = api.event("api_start", body={"confirm": True})
    event["requestContext"]["identity"] = None
    assert api.invoke("api_start", event).status == 202
    [entry] = logs.audit()
    assert entry["caller"] == dict.fromkeys(IDENTITY)


def test_log_lines_carry_the_api_gateway_request_id(api, stack, logs):
    result = api.invoke("api_start", body={"confirm": True})
    request_id = result.event["requestContext"]["requestId"]
    lines = [r for r in logs.records() if "audit" in r]
    assert lines and all(r["correlation_id"] == request_id for r in lines)
