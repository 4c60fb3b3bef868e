"""The api.md progress object: exact shape, percentage and ETA, never a division by zero."""

from __future__ import annotations

from collections import Counter

import pytest

from tokenmigration.aws.progress import estimated_completion, percentage
from tokenmigration.aws.runs import RunLedger
from tokenmigration.engine.results import ChunkResult

API_FIELDS = [
    "migration_id", "kind", "status", "dry_run", "total_users", "processed_users", "migrated_users",
    "skipped_users", "failed_migrations", "sessions_migrated", "current_batch", "total_batches", "percentage",
    "started_at", "updated_at", "finished_at", "estimated_completion",
    "error",  # not in the contract's list: this project's addition, null unless the run failed
]


def processed(users: int) -> ChunkResult:
    return ChunkResult(chunk=0, processed_users=users, migrated_users=users, skip_reasons=Counter())


def test_shape_of_a_fresh_run(ledger: RunLedger):
    ledger.create_run("m", "migration", dry_run=True)
    progress = ledger.progress("m")
    assert list(progress) == API_FIELDS
    assert progress == {
        "migration_id": "m", "kind": "migration", "status": "RUNNING", "dry_run": True,
        "total_users": 0, "processed_users": 0, "migrated_users": 0, "skipped_users": 0, "failed_migrations": 0,
        "sessions_migrated": 0, "current_batch": 0, "total_batches": 0, "percentage": 0.0,
        "started_at": "2025-03-01T12:00:00Z", "updated_at": "2025-03-01T12:00:00Z", "finished_at": None,
        "estimated_completion": None, "error": None,
    }


def test_an_empty_plan_is_zero_percent_and_no_eta(ledger: RunLedger, clock):
    ledger.create_run("m", "migration", dry_run=False)
    ledger.set_plan("m", total_users=0, total_batches=0)
    clock.advance(10)
    progress = ledger.progress("m")
    assert (progress["percentage"], progress["estimated_completion"]) == (0.0, None)
    ledger.finish_run("m", "SUCCEEDED")
    assert ledger.progress("m")["finished_at"] == "2025-03-01T12:00:10Z"


def test_eta_from_the_processing_rate(ledger: RunLedger, clock):
    ledger.create_run("m", "migration", dry_run=False)
    ledger.set_plan("m", total_users=1000, total_batches=4)
    clock.advance(100)
    ledger.record_chunk("m", 0, processed(250))
    progress = ledger.progress("m")
    # 250 users in 100 s: the other 750 take 300 s after the last update.
    assert progress["percentage"] == 25.0 and progress["current_batch"] == 1
    assert progress["estimated_completion"] == "2025-03-01T12:06:40Z"
    clock.advance(50)
    ledger.record_chunk("m", 1, processed(250))
    assert ledger.progress("m")["estimated_completion"] == "2025-03-01T12:05:00Z"  # 150 s for 500, 150 s to go

    ledger.finish_run("m", "ABORTED")
    progress = ledger.progress("m")
    assert progress["status"] == "ABORTED" and progress["estimated_completion"] is None
    assert progress["percentage"] == 50.0


def test_no_eta_when_no_time_has_passed(ledger: RunLedger):
    ledger.create_run("m", "migration", dry_run=False)
    ledger.set_plan("m", total_users=10, total_batches=1)
    ledger.record_chunk("m", 0, processed(5))  # same second as started_at
    assert ledger.progress("m")["estimated_completion"] is None


@pytest.mark.parametrize(("part", "whole", "expected"), [
    (0, 0, 0.0), (5, 0, 0.0), (1, 3, 33.33), (2, 3, 66.67), (3, 3, 100.0), (4, 3, 100.0),
])
def test_percentage(part, whole, expected):
    assert percentage(part, whole) == expected


def test_eta_needs_a_running_run_with_progress():
    run = {"status": "RUNNING", "started_at": "2025-03-01T12:00:00Z", "updated_at": "2025-03-01T12:01:00Z",
           "processed_users": 0, "total_users": 100}
    assert estimated_completion(run) is None
    assert estimated_completion({**run, "processed_users": 100}) == "2025-03-01T12:01:00Z"  # all done
    assert estimated_completion({**run, "processed_users": 50, "status": "SUCCEEDED"}) is None
