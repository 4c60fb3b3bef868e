"""The real state machines (statemachine/*.asl.json, as template.yaml deploys them) executed by moto's Step
Functions interpreter, their Lambdas running our handlers against the real PostgreSQL and Redis."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from stack import AwsStack, Fault

from helpers import ledgered_session_rows, ledgered_token_rows, snapshot
from tokenmigration.config import ConfigError, Settings
from tokenmigration.demo_data import SeedReport, seed
from tokenmigration.engine.migrator import Migrator

USERS = 60
CHUNK_SIZE = 7
# The plan's inline map over Redis nodes puts its loop's states in the parent's history: one slice here.
MIGRATION_STATES = ["Plan chunks", "Index sessions on every node", "Index one slice of sessions",
                    "Is this node scanned?", "This node is scanned", "Finish the plan", "Migrate chunks",
                    "Finish the run"]
ROLLBACK_STATES = ["Plan the rollback", "Roll back chunks", "Finish the rollback"]


@pytest.fixture
def seeded(aws_stack: AwsStack, pg_engine: Engine, redis_client) -> SeedReport:
    # Holders of an app token (skipped), users without sessions, anonymous, orphaned and malformed sessions.
    report = seed(pg_engine, redis_client, users=USERS, seed_value=11, token_share=0.1)
    assert report.users_with_tokens, "the seed must include users the run skips"
    return report


def expected(report: SeedReport) -> dict[str, int]:
    holders = set(report.users_with_tokens)
    return {
        "total_users": USERS,
        "processed_users": USERS,
        "migrated_users": USERS - len(holders),
        "skipped_users": len(holders),
        "failed_migrations": 0,
        # Skipped users keep their sessions: skipping is about the token only.
        "sessions_migrated": sum(report.sessions_by_user.values()),
        "current_batch": math.ceil(USERS / CHUNK_SIZE),
        "total_batches": math.ceil(USERS / CHUNK_SIZE),
    }


def counters(progress: dict) -> dict[str, int]:
    return {name: progress[name] for name in ("total_users", "processed_users", "migrated_users", "skipped_users",
                                              "failed_migrations", "sessions_migrated", "current_batch",
                                              "total_batches")}


def database_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            "migrated_users": conn.execute(text(
                "SELECT count(*) FROM users WHERE migrated_to_sanctum_at IS NOT NULL")).scalar_one(),
            "migration_tokens": conn.execute(text(
                "SELECT count(*) FROM personal_access_tokens WHERE name = 'migration-token'")).scalar_one(),
            "sessions": conn.execute(text("SELECT count(*) FROM sessions")).scalar_one(),
        }


def index_keys(redis_client) -> list[bytes]:
    return list(redis_client.scan_iter(match="tokenmigration:index:*"))


def test_a_migration_run_migrates_every_user_and_ends_cleanly(aws_stack, seeded, pg_engine, redis_client):
    done = aws_stack.run("migration", chunk_size=CHUNK_SIZE, max_concurrency=3)

    assert done["status"] == "SUCCEEDED", done
    run_id = done["run_id"]
    assert aws_stack.state_names(done["executionArn"]) == MIGRATION_STATES
    progress = aws_stack.ledger.progress(run_id)
    assert progress["status"] == "SUCCEEDED" and progress["percentage"] == 100.0 and progress["finished_at"]
    assert counters(progress) == expected(seeded)
    # Counters agree with what the database holds.
    db = database_counts(pg_engine)
    assert db == {"migrated_users": progress["migrated_users"], "migration_tokens": progress["migrated_users"],
                  "sessions": progress["sessions_migrated"]}
    # Flags: a finished migration offers a rollback and changes nothing else; the lock is released.
    assert aws_stack.flag_values() == {"auth_mode": "dual", "sanctum_only": "false", "rollback_available": "true",
                                       "exchange_enabled": "true"}
    assert aws_stack.ledger.active_run() is None
    assert index_keys(redis_client) == []
    # The plan's problems (malformed and orphaned sessions) are on the run, page by page.
    errors, _ = aws_stack.ledger.errors(run_id, limit=100)
    assert {e["code"] for e in errors} >= {"unknown_user", "not_json", "null_value"}
    # The map read its items from the chunk list the plan wrote: one child per chunk, as planned.
    chunk_list = json.loads(aws_stack.s3.get_object(Bucket=aws_stack.bucket, Key=f"runs/{run_id}/chunks.json")
                            ["Body"].read())
    planned = [c.to_dict() for c in Migrator(Settings.from_env(), pg_engine).plan_chunks(CHUNK_SIZE)]
    assert chunk_list == planned
    calls = aws_stack.invocations_of("wf_migrate_chunk")
    assert sorted(c["chunk"]["number"] for c in calls) == list(range(len(planned)))
    assert all(c == {"run_id": run_id, "dry_run": False, "chunk": chunk_list[c["chunk"]["number"]]} for c in calls)
    # Its output stays small whatever the number of chunks: the results went to S3 (ResultWriter).
    output = json.loads(done["output"])
    assert set(output["map_run"]) == {"MapRunArn", "ResultWriterDetails"}
    assert output["result"]["progress"]["migration_id"] == run_id


def test_the_execution_input_is_the_api_contract(aws_stack, seeded):
    arn = aws_stack.start("migration", chunk_size=CHUNK_SIZE, max_concurrency=2)
    described = aws_stack.wait(arn)
    run_id = described["name"]
    assert json.loads(described["input"]) == {"run_id": run_id, "kind": "migration", "dry_run": False,
                                              "chunk_size": CHUNK_SIZE, "max_concurrency": 2}
    assert aws_stack.ledger.get_run(run_id)["execution_arn"] == arn


def test_a_dry_run_writes_nothing_and_offers_no_rollback(aws_stack, seeded, pg_engine, redis_client):
    before = snapshot(pg_engine)

    done = aws_stack.run("migration", chunk_size=CHUNK_SIZE, dry_run=True)

    assert done["status"] == "SUCCEEDED", done
    assert snapshot(pg_engine) == before
    progress = aws_stack.ledger.progress(done["run_id"])
    assert progress["dry_run"] is True and progress["status"] == "SUCCEEDED"
    # The same counts a real run would report.
    assert counters(progress) == expected(seeded)
    assert aws_stack.flag_values()["rollback_available"] == "false"
    assert aws_stack.ledger.active_run() is None
    assert index_keys(redis_client) == []


def test_a_chunk_that_fails_transiently_is_retried_and_counted_once(aws_stack, seeded, pg_engine, monkeypatch):
    real = Migrator.migrate_chunk
    failures: list[int] = []

    def flaky(self, chunk, run_id, dry_run=False):
        if chunk.number == 1 and not failures:
            failures.append(chunk.number)
            raise OperationalError("SELECT 1", {}, ConnectionResetError("server closed the connection unexpectedly"))
        return real(self, chunk, run_id, dry_run)

    monkeypatch.setattr(Migrator, "migrate_chunk", flaky)

    done = aws_stack.run("migration", chunk_size=CHUNK_SIZE, max_concurrency=2)

    assert done["status"] == "SUCCEEDED", done
    assert failures == [1]
    assert [c["chunk"]["number"] for c in aws_stack.invocations_of("wf_migrate_chunk")].count(1) == 2
    # The Retry on TransientDatabaseError waited (full jitter: anything up to IntervalSeconds).
    assert len(aws_stack.retry_delays) == 1 and 0 <= aws_stack.retry_delays[0] <= 2
    progress = aws_stack.ledger.progress(done["run_id"])
    assert counters(progress) == expected(seeded)
    assert database_counts(pg_engine)["migrated_users"] == progress["migrated_users"]


def test_a_chunk_retried_after_it_committed_is_counted_once(aws_stack, seeded, pg_engine):
    # The handler ran and committed, then the invoke failed as Lambda's service does (Lambda.ServiceException):
    # Step Functions retries a chunk whose work is already done.
    aws_stack.faults.append(Fault("wf_migrate_chunk", when=lambda e: e["chunk"]["number"] == 2, after=True))

    done = aws_stack.run("migration", chunk_size=CHUNK_SIZE, max_concurrency=2)

    assert done["status"] == "SUCCEEDED", done
    assert [c["chunk"]["number"] for c in aws_stack.invocations_of("wf_migrate_chunk")].count(2) == 2
    progress = aws_stack.ledger.progress(done["run_id"])
    assert counters(progress) == expected(seeded)
    db = database_counts(pg_engine)
    assert db["migrated_users"] == db["migration_tokens"] == progress["migrated_users"]
    assert db["sessions"] == progress["sessions_migrated"]


def test_a_failed_run_is_recorded_releases_the_lock_and_is_rolled_back(aws_stack, seeded, pg_engine):
    before = snapshot(pg_engine)
    aws_stack.faults.append(Fault("wf_migrate_chunk", when=lambda e: e["chunk"]["number"] == 3,
                                  error=RuntimeError("chunk 3 exploded"), times=100))

    failed = aws_stack.run("migration", chunk_size=CHUNK_SIZE, max_concurrency=2)

    assert failed["status"] == "FAILED"
    # moto's map does not fail on a failed child (AWS's does); finish then refuses an incomplete run.
    # Either way no state catches: the failing state stays redrivable, and the status rule records it.
    assert aws_stack.state_names(failed["executionArn"]) == MIGRATION_STATES
    run = aws_stack.ledger.get_run(failed["run_id"])
    assert run["status"] == "FAILED" and run["finished_at"]
    # A short line: no stack trace, no JSON document.
    assert "\n" not in run["error"] and "Traceback" not in run["error"] and len(run["error"]) <= 300
    assert aws_stack.ledger.active_run() is None
    # Chunks that ran were counted exactly, and what they migrated can be rolled back.
    progress = aws_stack.ledger.progress(failed["run_id"])
    migrated = database_counts(pg_engine)["migrated_users"]
    assert 0 < progress["migrated_users"] == migrated < expected(seeded)["migrated_users"]
    assert progress["current_batch"] == progress["total_batches"] - 1
    assert aws_stack.flag_values()["rollback_available"] == "true"

    with pg_engine.connect() as conn:  # migrated users, and skipped users whose sessions were carried
        ledgered = len({row[0] for row in ledgered_token_rows(conn)} | {row[0] for row in ledgered_session_rows(conn)})
    aws_stack.faults.clear()
    rolled_back = aws_stack.run("rollback", chunk_size=CHUNK_SIZE)

    assert rolled_back["status"] == "SUCCEEDED", rolled_back
    assert aws_stack.state_names(rolled_back["executionArn"]) == ROLLBACK_STATES
    assert snapshot(pg_engine) == before
    assert aws_stack.flag_values() == {"auth_mode": "dual", "sanctum_only": "false", "rollback_available": "false",
                                       "exchange_enabled": "true"}
    assert aws_stack.ledger.active_run() is None
    run = aws_stack.ledger.get_run(rolled_back["run_id"])
    assert run["status"] == "SUCCEEDED" and run["kind"] == "rollback"
    # every user was looked at; the ledger named `ledgered` of them, and the migrated ones were undone
    with pg_engine.connect() as conn:
        everyone = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
    assert 0 < migrated <= ledgered < everyone
    assert (run["processed_users"], run["rolled_back_users"], run["tokens_revoked"]) == (everyone, migrated, migrated)
    assert run["sessions_removed"] == progress["sessions_migrated"]


def redrive(aws_stack: AwsStack, failed: dict, chunk_numbers: list[int]) -> dict:
    """What RedriveExecution runs again (moto has no redrive): the failed chunks, then the finish step."""
    execution_input = json.loads(failed["input"])
    chunks = {c["number"]: c for c in json.loads(aws_stack.s3.get_object(
        Bucket=aws_stack.bucket, Key=f"runs/{failed['run_id']}/chunks.json")["Body"].read())}
    for number in chunk_numbers:
        aws_stack.invoke("wf_migrate_chunk", {"run_id": failed["run_id"], "dry_run": execution_input["dry_run"],
                                              "chunk": chunks[number]})
    return aws_stack.invoke("wf_finalize", {"run_id": failed["run_id"], "kind": "migration",
                                            "dry_run": execution_input["dry_run"]})


def test_a_failed_run_redriven_completes_without_double_counting(aws_stack, seeded, pg_engine, redis_client):
    aws_stack.faults.append(Fault("wf_migrate_chunk", when=lambda e: e["chunk"]["number"] == 3,
                                  error=RuntimeError("chunk 3 exploded"), times=100))
    failed = aws_stack.run("migration", chunk_size=CHUNK_SIZE, max_concurrency=2)
    assert failed["status"] == "FAILED" and aws_stack.ledger.active_run() is None
    assert index_keys(redis_client), "a failed run keeps its session index for a redrive"
    aws_stack.faults.clear()

    progress = redrive(aws_stack, failed, [3])

    assert progress["status"] == "SUCCEEDED"
    assert counters(progress) == expected(seeded)
    assert database_counts(pg_engine)["migrated_users"] == expected(seeded)["migrated_users"]
    assert database_counts(pg_engine)["sessions"] == expected(seeded)["sessions_migrated"]
    assert aws_stack.ledger.active_run() is None and index_keys(redis_client) == []
    assert aws_stack.flag_values()["rollback_available"] == "true"


def test_a_redrive_never_disturbs_a_run_that_holds_the_lock(aws_stack, seeded, pg_engine):
    from tokenmigration.aws.errors import RunInProgress

    aws_stack.faults.append(Fault("wf_migrate_chunk", when=lambda e: e["chunk"]["number"] == 3,
                                  error=RuntimeError("chunk 3 exploded"), times=100))
    failed = aws_stack.run("migration", chunk_size=CHUNK_SIZE)
    aws_stack.faults.clear()
    before = aws_stack.ledger.progress(failed["run_id"])
    aws_stack.ledger.acquire_lock("rollback-20990101T000000Z-00000000", "rollback")  # another run started

    with pytest.raises(RunInProgress):
        redrive(aws_stack, failed, [3])

    assert aws_stack.ledger.active_run() == "rollback-20990101T000000Z-00000000"
    assert aws_stack.ledger.progress(failed["run_id"]) == before  # still FAILED, nothing counted


def test_a_late_failure_report_does_not_end_a_redriven_run(aws_stack, seeded):
    aws_stack.faults.append(Fault("wf_plan", error=ConfigError("REDIS_URL must be set")))
    failed = aws_stack.run("migration", chunk_size=CHUNK_SIZE)
    run_id = failed["run_id"]
    assert aws_stack.ledger.get_run(run_id)["status"] == "FAILED"
    # Redriven: its first step took the lock back and reopened the run...
    aws_stack.ledger.acquire_lock(run_id, "migration")
    assert aws_stack.ledger.reopen_run(run_id)
    # ...and its execution is RUNNING (a waiting execution stands in for it) when EventBridge, which
    # retries for an hour, delivers the old FAILED report.
    waiting = aws_stack.sfn.create_state_machine(
        name="stands-in-for-the-redriven-execution", roleArn="arn:aws:iam::123456789012:role/test",
        definition=json.dumps({"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 600, "End": True}}}),
    )["stateMachineArn"]
    running = aws_stack.sfn.start_execution(stateMachineArn=waiting, name=run_id)["executionArn"]
    try:
        answers = aws_stack.deliver_status_change({**failed, "executionArn": running})
    finally:
        aws_stack.sfn.stop_execution(executionArn=running)
    assert [(a["ended_here"], a["lock_released"]) for a in answers] == [(False, False)]
    assert aws_stack.ledger.get_run(run_id)["status"] == "RUNNING"
    assert aws_stack.ledger.active_run() == run_id


def test_a_full_run_then_a_rollback_restores_the_database(aws_stack, seeded, pg_engine):
    before = snapshot(pg_engine)
    migrated = aws_stack.run("migration", chunk_size=CHUNK_SIZE)
    assert migrated["status"] == "SUCCEEDED"
    after_migration = aws_stack.ledger.progress(migrated["run_id"])
    aws_stack.flags.on_rollback_accepted()  # what POST /rollback does before it starts the run

    done = aws_stack.run("rollback", chunk_size=5, max_concurrency=4)

    assert done["status"] == "SUCCEEDED", done
    assert snapshot(pg_engine) == before
    run = aws_stack.ledger.get_run(done["run_id"])
    users = after_migration["migrated_users"]
    # A rollback looks at every user id (planned over the users table, as a migration is) and undoes those
    # the ledger names.
    everyone = after_migration["total_users"]
    assert (run["total_users"], run["processed_users"], run["rolled_back_users"], run["tokens_revoked"],
            run["sessions_removed"]) == (everyone, everyone, users, users, after_migration["sessions_migrated"])
    assert run["current_batch"] == run["total_batches"] == math.ceil(everyone / 5)
    assert aws_stack.flag_values()["rollback_available"] == "false"
    assert aws_stack.ledger.active_run() is None


def test_a_plan_that_fails_marks_the_run_failed_before_any_chunk(aws_stack, seeded, pg_engine):
    aws_stack.faults.append(Fault("wf_plan", error=ConfigError("REDIS_URL must be set")))

    done = aws_stack.run("migration", chunk_size=CHUNK_SIZE)

    assert done["status"] == "FAILED"
    assert aws_stack.state_names(done["executionArn"]) == ["Plan chunks"]
    assert done["error"] == "ConfigError"
    run = aws_stack.ledger.get_run(done["run_id"])
    assert (run["status"], run["error"]) == ("FAILED", "ConfigError: REDIS_URL must be set")
    assert aws_stack.invocations_of("wf_migrate_chunk") == []
    assert database_counts(pg_engine)["migrated_users"] == 0
    assert aws_stack.ledger.active_run() is None


def test_a_run_over_no_users_succeeds_with_zero_chunks(aws_stack, pg_engine):
    done = aws_stack.run("migration")

    assert done["status"] == "SUCCEEDED", done
    progress = aws_stack.ledger.progress(done["run_id"])
    assert (progress["total_users"], progress["total_batches"], progress["percentage"]) == (0, 0, 0.0)
    assert aws_stack.ledger.active_run() is None


def test_a_second_run_skips_everyone_the_first_one_migrated(aws_stack, seeded, pg_engine):
    first = aws_stack.run("migration", chunk_size=CHUNK_SIZE)
    second = aws_stack.run("migration", chunk_size=CHUNK_SIZE)

    assert first["status"] == second["status"] == "SUCCEEDED"
    progress = aws_stack.ledger.progress(second["run_id"])
    assert (progress["migrated_users"], progress["skipped_users"], progress["processed_users"]) == (0, USERS, USERS)
    assert database_counts(pg_engine)["migrated_users"] == expected(seeded)["migrated_users"]
