"""GET /auth/migration/progress: the run's counters from the ledger, the stats from the database,
is_in_progress from the lock."""

from __future__ import annotations

import pytest

from helpers import add_users
from tokenmigration.engine.results import ChunkResult


def test_no_run_ever_is_200_with_progress_null(api, stack, pg_engine):
    add_users(pg_engine, [1, 2, 3])
    result = api.invoke("api_progress")

    assert result.status == 200
    assert result.body == {
        "success": True,
        "message": "No migration has been started yet",
        "progress": None,
        "stats": {"total_users": 3, "migrated_users": 0, "failed_migrations": 0, "migration_percentage": 0.0,
                  "last_migration_at": None, "exact": True},
        "is_in_progress": False,
        "can_rollback": False,
    }


def test_progress_of_the_latest_run(api, stack):
    run_id = api.invoke("api_start", body={"confirm": True}).body["migration_id"]
    stack.ledger.set_plan(run_id, total_users=3, total_batches=2)
    stack.ledger.record_chunk(run_id, 0, ChunkResult(chunk=0, processed_users=2, migrated_users=1, skipped_users=1,
                                                     sessions_migrated=4))

    result = api.invoke("api_progress")

    assert result.status == 200
    progress = result.body["progress"]
    assert set(progress) == {
        "migration_id", "kind", "status", "dry_run", "total_users", "processed_users", "migrated_users",
        "skipped_users", "failed_migrations", "sessions_migrated", "current_batch", "total_batches", "percentage",
        "started_at", "updated_at", "finished_at", "estimated_completion", "error",
    }
    assert progress["migration_id"] == run_id and progress["kind"] == "migration"
    assert progress["status"] == "RUNNING"
    assert (progress["total_users"], progress["processed_users"], progress["migrated_users"]) == (3, 2, 1)
    assert (progress["current_batch"], progress["total_batches"], progress["sessions_migrated"]) == (1, 2, 4)
    assert progress["percentage"] == 66.67
    assert progress["started_at"].endswith("Z") and progress["finished_at"] is None
    assert result.body["is_in_progress"] is True
    assert result.body["can_rollback"] is False


def test_progress_of_a_named_run_and_is_in_progress_from_the_lock(api, stack):
    first = api.invoke("api_start", body={"confirm": True}).body["migration_id"]
    stack.ledger.finish_run(first, "SUCCEEDED")
    stack.ledger.release_lock(first)
    stack.flags.on_migration_finished()
    second = api.invoke("api_start", body={"confirm": True, "dry_run": True}).body["migration_id"]

    named = api.invoke("api_progress", query={"migration_id": first})
    assert named.status == 200
    assert named.body["progress"]["migration_id"] == first
    assert named.body["progress"]["status"] == "SUCCEEDED"
    assert named.body["progress"]["finished_at"] is not None
    # The second run holds the lock: in progress, so no rollback now.
    assert named.body["is_in_progress"] is True and named.body["can_rollback"] is False

    stack.ledger.finish_run(second, "FAILED")
    stack.ledger.release_lock(second)
    latest = api.invoke("api_progress", query={"migration_id": ""})  # blank means "not given"
    assert latest.body["progress"]["migration_id"] == second
    assert latest.body["progress"]["dry_run"] is True
    assert latest.body["is_in_progress"] is False and latest.body["can_rollback"] is True


def test_a_rollback_run_has_progress_too(api, stack):
    stack.flags.on_migration_finished()
    rollback_id = api.invoke("api_rollback", body={"confirm": True}).body["rollback_id"]
    result = api.invoke("api_progress", query={"migration_id": rollback_id})
    assert result.body["progress"]["kind"] == "rollback"


def test_unknown_run_is_404(api, stack):
    result = api.invoke("api_progress", query={"migration_id": "migration-20250101T000000Z-deadbeef"})
    assert result.status == 404
    assert result.body["success"] is False and "migration-20250101T000000Z-deadbeef" in result.body["message"]


@pytest.mark.parametrize("run_id", ["a b", "x" * 81, "../etc", "migration;drop", "ü"])
def test_a_malformed_run_id_is_400(api, stack, run_id):
    result = api.invoke("api_progress", query={"migration_id": run_id})
    assert result.status == 400 and "migration_id" in result.body["errors"]


def test_stats_come_from_the_database(api, stack, pg_engine):
    add_users(pg_engine, [1, 2, 3, 4])
    assert api.invoke("api_migrate_user", user_id=2).status == 200
    result = api.invoke("api_progress")
    stats = result.body["stats"]
    assert (stats["total_users"], stats["migrated_users"], stats["migration_percentage"]) == (4, 1, 25.0)
    assert stats["last_migration_at"].endswith("Z")


def test_while_a_run_executes_stats_are_counted_at_most_once_a_minute(api, stack, pg_engine, monkeypatch):
    """A watcher polls /progress every second; each stats() counts the whole users table (16 GB at 100 million
    users), so while a run holds the lock the count is reused for a minute. /stats and idle /progress count."""
    from tokenmigration.aws import context
    from tokenmigration.engine import reporting

    now = [1000.0]
    monkeypatch.setattr(reporting.time, "monotonic", lambda: now[0])
    counted = []
    real_stats = reporting.stats
    monkeypatch.setattr(reporting, "stats", lambda engine, **kw: counted.append(1) or real_stats(engine, **kw))
    add_users(pg_engine, [1, 2, 3, 4])
    assert api.invoke("api_start", body={"confirm": True}).status == 202

    assert api.invoke("api_progress").body["stats"]["migrated_users"] == 0
    assert api.invoke("api_migrate_user", user_id=2).status == 200
    assert api.invoke("api_progress").body["stats"]["migrated_users"] == 0  # the minute-old count
    assert api.invoke("api_stats").body["stats"]["migrated_users"] == 1  # /stats always counts
    now[0] += context.PROGRESS_STATS_MAX_AGE_SECONDS
    assert api.invoke("api_progress").body["stats"]["migrated_users"] == 1
    assert len(counted) == 2  # two /progress counts in four polls of the run
