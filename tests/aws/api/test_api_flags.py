"""/stats, /complete and /rollback: the flag transitions of api.md, refused while a run holds the lock."""

from __future__ import annotations

import json

import pytest

from helpers import add_users
from tokenmigration.aws.context import reset_services
from tokenmigration.aws.flags import Flags


def flags_of(stack) -> Flags:
    return stack.flags.read(force_fetch=True)


def test_stats_before_anything(api, stack, pg_engine):
    add_users(pg_engine, [10, 20])
    result = api.invoke("api_stats")
    assert result.status == 200
    assert result.body == {
        "success": True,
        "message": "Migration statistics",
        "stats": {"total_users": 2, "migrated_users": 0, "failed_migrations": 0, "migration_percentage": 0.0,
                  "last_migration_at": None, "exact": True},
        "feature_flags": {"auth_mode": "dual", "sanctum_only": False, "migration_in_progress": False,
                          "rollback_available": False},
    }


def test_migration_in_progress_is_the_lock(api, stack):
    stack.ledger.acquire_lock("migration-x", "migration")
    assert api.invoke("api_stats").body["feature_flags"]["migration_in_progress"] is True
    stack.ledger.release_lock("migration-x")
    assert api.invoke("api_stats").body["feature_flags"]["migration_in_progress"] is False


@pytest.mark.parametrize("name", ["api_complete", "api_rollback"])
@pytest.mark.parametrize("body", [None, {}, {"confirm": False}, {"confirm": "yes"}, {"confirm": True, "x": 1}, "[]"])
def test_complete_and_rollback_need_confirm_true(api, stack, name, body):
    stack.flags.on_migration_finished()
    result = api.invoke(name, body=body)
    assert result.status == 400 and result.body["success"] is False and result.body["errors"]
    assert flags_of(stack) == Flags(rollback_available=True)
    assert stack.ledger.active_run() is None


def test_complete_sets_sanctum_only(api, stack):
    stack.flags.on_migration_finished()
    result = api.invoke("api_complete", body={"confirm": True})

    assert result.status == 200
    assert result.body == {"success": True, "auth_mode": "sanctum_only",
                           "message": "Migration completed: only Sanctum tokens are accepted from now on"}
    assert flags_of(stack) == Flags(auth_mode="sanctum", sanctum_only=True, rollback_available=False)
    assert api.invoke("api_stats").body["feature_flags"] == {
        "auth_mode": "sanctum", "sanctum_only": True, "migration_in_progress": False, "rollback_available": False,
    }
    # Completing withdrew the rollback.
    refused = api.invoke("api_rollback", body={"confirm": True})
    assert refused.status == 400 and refused.body == {"success": False, "message": "Rollback is not available"}


def test_complete_flips_the_flags_under_the_lock_and_gives_it_back(api, stack):
    seen = []
    original = stack.flags.__class__.on_complete

    def observe(flags):  # what a /start would meet while the flags flip
        seen.append(stack.ledger.active_run())
        return original(flags)

    stack.flags.__class__.on_complete = observe
    try:
        assert api.invoke("api_complete", body={"confirm": True}).status == 200
    finally:
        stack.flags.__class__.on_complete = original
    assert len(seen) == 1 and seen[0].startswith("complete-")
    assert stack.ledger.active_run() is None
    assert api.invoke("api_start", body={"confirm": True}).status == 202


def test_complete_is_refused_while_a_run_is_active(api, stack):
    run_id = api.invoke("api_start", body={"confirm": True}).body["migration_id"]
    result = api.invoke("api_complete", body={"confirm": True})
    assert result.status == 409
    assert result.body["success"] is False and result.body["migration_id"] == run_id
    assert flags_of(stack) == Flags()


def test_rollback_is_not_available_before_a_migration_finished(api, stack):
    result = api.invoke("api_rollback", body={"confirm": True})
    assert result.status == 400
    assert result.body == {"success": False, "message": "Rollback is not available"}
    assert stack.ledger.active_run() is None
    assert stack.executions(stack.rollback_arn) == []


def test_rollback_switches_back_to_dual_and_starts_the_rollback_machine(api, stack):
    stack.flags.set(auth_mode="sanctum", sanctum_only=True, rollback_available=True)  # as an operator might

    result = api.invoke("api_rollback", body={"confirm": True})

    assert result.status == 202
    body = result.body
    assert set(body) == {"success", "message", "auth_mode", "rollback_id", "execution_arn"}
    assert body["success"] is True and body["auth_mode"] == "dual"
    rollback_id = body["rollback_id"]
    assert rollback_id.startswith("rollback-")
    assert stack.ledger.active_run() == rollback_id
    assert stack.ledger.get_run(rollback_id)["kind"] == "rollback"
    [execution] = stack.executions(stack.rollback_arn)
    assert execution["name"] == rollback_id and execution["executionArn"] == body["execution_arn"]
    assert json.loads(execution["input"]) == {"run_id": rollback_id, "kind": "rollback", "dry_run": False,
                                              "chunk_size": 2000, "max_concurrency": 10}
    # Express sessions work again at once; rollback_available turns false when the run finishes.
    assert flags_of(stack) == Flags(auth_mode="dual", sanctum_only=False, rollback_available=True)
    assert stack.executions(stack.migration_arn) == []


def test_rollback_is_refused_while_a_run_is_active_and_changes_no_flag(api, stack):
    stack.flags.set(auth_mode="sanctum", sanctum_only=True, rollback_available=True)
    stack.ledger.acquire_lock("migration-busy", "migration")
    result = api.invoke("api_rollback", body={"confirm": True})
    assert result.status == 409 and result.body["migration_id"] == "migration-busy"
    assert flags_of(stack) == Flags(auth_mode="sanctum", sanctum_only=True, rollback_available=True)
    assert stack.ledger.active_run() == "migration-busy"


def test_a_second_rollback_is_409(api, stack):
    stack.flags.on_migration_finished()
    first = api.invoke("api_rollback", body={"confirm": True}).body["rollback_id"]
    second = api.invoke("api_rollback", body={"confirm": True})
    assert second.status == 409 and second.body["migration_id"] == first
    start = api.invoke("api_start", body={"confirm": True})
    assert start.status == 409 and start.body["migration_id"] == first


def test_a_rollback_that_cannot_start_leaves_it_available(api, stack, monkeypatch):
    stack.flags.on_migration_finished()
    monkeypatch.setenv("ROLLBACK_STATE_MACHINE_ARN", stack.rollback_arn + "-gone")
    reset_services()
    result = api.invoke("api_rollback", body={"confirm": True})
    assert result.status == 503 and result.body["success"] is False
    assert stack.ledger.active_run() is None
    assert flags_of(stack).rollback_available is True
    assert stack.ledger.get_run(result.body["migration_id"])["status"] == "FAILED"


def test_the_whole_cycle(api, stack):
    """deployed -> run finishes -> rollback -> its run finishes -> run again -> complete (api.md's table)."""
    assert flags_of(stack) == Flags()
    run_id = api.invoke("api_start", body={"confirm": True}).body["migration_id"]
    stack.ledger.finish_run(run_id, "SUCCEEDED")
    stack.flags.on_migration_finished()  # the workflow's finalize step
    stack.ledger.release_lock(run_id)
    assert api.invoke("api_stats").body["feature_flags"]["rollback_available"] is True

    rollback_id = api.invoke("api_rollback", body={"confirm": True}).body["rollback_id"]
    stack.ledger.finish_run(rollback_id, "SUCCEEDED")
    stack.flags.on_rollback_finished()
    stack.ledger.release_lock(rollback_id)
    assert flags_of(stack) == Flags()

    run_id = api.invoke("api_start", body={"confirm": True}).body["migration_id"]
    assert api.invoke("api_complete", body={"confirm": True}).status == 409
    stack.ledger.finish_run(run_id, "SUCCEEDED")
    stack.flags.on_migration_finished()
    stack.ledger.release_lock(run_id)
    assert api.invoke("api_complete", body={"confirm": True}).status == 200
    assert flags_of(stack) == Flags(auth_mode="sanctum", sanctum_only=True, rollback_available=False)
