"""The API functions on the stack template.yaml deploys (tests/aws/stack.py's ``aws_stack``): their
environment is the template's, /start and /rollback start the real state machines, which moto executes with
our workflow handlers, and /progress, /stats and /errors report what the runs did."""

from __future__ import annotations

import copy
import json

from stack import AwsStack, load_event

from helpers import add_app_token, add_users, express, put_session

USERS = [1, 2, 3, 5, 8, 13, 21]


def call(aws_stack: AwsStack, name: str, body=None, query=None) -> tuple[int, dict]:
    """Through the stack's invoke: serialised with the workflow's own invocations, as separate containers are."""
    event = copy.deepcopy(load_event(name))
    if body is not None:
        event["body"] = json.dumps(body)
    if query is not None:
        event["queryStringParameters"] = query
    response = aws_stack.invoke(name, event)
    return response["statusCode"], json.loads(response["body"])


def test_migrate_then_roll_back_through_the_api(aws_stack, pg_engine, redis_client):
    add_users(pg_engine, USERS)
    add_app_token(pg_engine, 21)  # skipped by the run
    for uid in (1, 2, 3):
        put_session(redis_client, f"sid-{uid}", express(uid))
    put_session(redis_client, "sid-ghost", express(999))  # a session of a user that does not exist

    status, started = call(aws_stack, "api_start", {"confirm": True, "chunk_size": 2, "max_concurrency": 2})
    assert status == 202
    done = aws_stack.wait(started["execution_arn"])
    assert done["status"] == "SUCCEEDED", done

    status, progress = call(aws_stack, "api_progress")
    assert status == 200
    run = progress["progress"]
    assert run["migration_id"] == started["migration_id"] and run["status"] == "SUCCEEDED"
    assert (run["total_users"], run["processed_users"], run["migrated_users"], run["skipped_users"]) == (7, 7, 6, 1)
    assert run["sessions_migrated"] == 3 and run["percentage"] == 100.0
    assert progress["is_in_progress"] is False  # the state machine released the lock
    assert progress["can_rollback"] is True
    assert progress["stats"]["migrated_users"] == 6

    status, stats = call(aws_stack, "api_stats")
    assert stats["feature_flags"] == {"auth_mode": "dual", "sanctum_only": False, "migration_in_progress": False,
                                      "rollback_available": True}

    status, errors = call(aws_stack, "api_errors", query={"limit": "10"})
    assert status == 200 and errors["migration_id"] == started["migration_id"]
    assert [e["code"] for e in errors["errors"]] == ["unknown_user"]
    assert errors["errors"][0]["user_id"] == 999 and errors["errors"][0]["session_id"]

    status, rollback = call(aws_stack, "api_rollback", {"confirm": True})
    assert status == 202 and rollback["auth_mode"] == "dual"
    assert aws_stack.wait(rollback["execution_arn"])["status"] == "SUCCEEDED"

    status, progress = call(aws_stack, "api_progress")
    assert progress["progress"]["migration_id"] == rollback["rollback_id"]
    assert progress["progress"]["kind"] == "rollback" and progress["progress"]["status"] == "SUCCEEDED"
    assert progress["stats"]["migrated_users"] == 0
    assert progress["is_in_progress"] is False and progress["can_rollback"] is False
    status, stats = call(aws_stack, "api_stats")
    assert stats["feature_flags"]["rollback_available"] is False

    # Migrate again and finish: Sanctum only.
    status, started = call(aws_stack, "api_start", {"confirm": True})
    assert aws_stack.wait(started["execution_arn"])["status"] == "SUCCEEDED"
    status, completed = call(aws_stack, "api_complete", {"confirm": True})
    assert status == 200 and completed["auth_mode"] == "sanctum_only"
    status, stats = call(aws_stack, "api_stats")
    assert stats["feature_flags"] == {"auth_mode": "sanctum", "sanctum_only": True, "migration_in_progress": False,
                                      "rollback_available": False}


def test_a_dry_run_changes_nothing_and_offers_no_rollback(aws_stack, pg_engine, redis_client):
    add_users(pg_engine, USERS)
    status, started = call(aws_stack, "api_start", {"confirm": True, "dry_run": True})
    assert status == 202 and started["dry_run"] is True
    assert aws_stack.wait(started["execution_arn"])["status"] == "SUCCEEDED"
    status, progress = call(aws_stack, "api_progress")
    assert progress["progress"]["dry_run"] is True and progress["progress"]["migrated_users"] == len(USERS)
    assert progress["stats"]["migrated_users"] == 0
    assert progress["can_rollback"] is False
    status, refused = call(aws_stack, "api_rollback", {"confirm": True})
    assert status == 400 and refused["message"] == "Rollback is not available"
