"""tokenmigration.aws.run_control directly: the start sequence and its failure paths."""

from __future__ import annotations

import json

import pytest

from tokenmigration.aws import run_control
from tokenmigration.aws.context import services
from tokenmigration.aws.errors import RollbackUnavailable, RunInProgress


def test_execution_input_is_the_shared_contract():
    assert run_control.execution_input("migration-1", "migration", True, 500, 3) == {
        "run_id": "migration-1", "kind": "migration", "dry_run": True, "chunk_size": 500, "max_concurrency": 3,
    }


@pytest.mark.parametrize(("chunk_size", "max_concurrency"), [(0, 10), (10_001, 10), (2000, 0), (2000, 1001),
                                                             (True, 10), (2000, 2.0), ("5", 10)])
def test_sizes_are_checked(stack, chunk_size, max_concurrency):
    with pytest.raises(ValueError):
        run_control.start_migration(services(), chunk_size=chunk_size, max_concurrency=max_concurrency)
    assert stack.ledger.active_run() is None


def test_start_migration(stack):
    started = run_control.start_migration(services(), dry_run=True, chunk_size=100, max_concurrency=4)
    assert started.kind == "migration" and started.dry_run is True
    assert stack.ledger.active_run() == started.run_id == run_control.active_run(services())
    [execution] = stack.executions()
    assert json.loads(execution["input"])["chunk_size"] == 100
    with pytest.raises(RunInProgress) as refused:
        run_control.start_migration(services())
    assert refused.value.active_run_id == started.run_id


def test_a_run_that_cannot_be_recorded_releases_the_lock(stack, monkeypatch):
    svc = services()

    def broken(*_args, **_kwargs):
        raise RuntimeError("DynamoDB said no")

    monkeypatch.setattr(svc.ledger, "create_run", broken)
    with pytest.raises(RuntimeError):
        run_control.start_migration(svc)
    assert stack.ledger.active_run() is None
    assert stack.executions() == []


def test_a_lost_execution_arn_does_not_fail_the_start(stack, monkeypatch):
    svc = services()

    def broken(*_args, **_kwargs):
        raise RuntimeError("throttled")

    monkeypatch.setattr(svc.ledger, "set_execution", broken)
    started = run_control.start_migration(svc)
    assert stack.ledger.active_run() == started.run_id
    assert "execution_arn" not in stack.ledger.get_run(started.run_id)


def test_rollback_withdrawn_between_the_check_and_the_lock(stack, monkeypatch):
    svc = services()
    stack.flags.on_migration_finished()
    original = svc.ledger.acquire_lock

    def acquire_then_complete(run_id, kind):
        original(run_id, kind)
        stack.flags.on_complete()  # /complete slipped in just before the lock was taken

    monkeypatch.setattr(svc.ledger, "acquire_lock", acquire_then_complete)
    with pytest.raises(RollbackUnavailable):
        run_control.start_rollback(svc)
    assert stack.ledger.active_run() is None
    assert stack.executions(stack.rollback_arn) == []


def test_complete_reads_the_lock(stack):
    stack.ledger.acquire_lock("rollback-x", "rollback")
    with pytest.raises(RunInProgress) as refused:
        run_control.complete_migration(services())
    assert refused.value.active_run_id == "rollback-x"
    stack.ledger.release_lock("rollback-x")
    flags = run_control.complete_migration(services())
    assert (flags.auth_mode, flags.sanctum_only, flags.rollback_available) == ("sanctum", True, False)
