"""The operator's way out of a stuck active-run lock: the status rule's event went to its dead-letter queue, so
the failed run still holds the lock and every /start would answer 409. ``{"release_lock": run_id}`` to the
mark-failed function checks the execution with DescribeExecution first."""

from __future__ import annotations

import threading
import time

import pytest
from stack import AwsStack, Fault

from tokenmigration.config import ConfigError
from tokenmigration.local.template import FakeLambdaContext
from tokenmigration.workflow.steps import LockStillInUse


def _ended_without_the_rule(stack: AwsStack, arn: str) -> dict:
    """Poll until the execution ended, without delivering its status change (what a dead-lettered event is)."""
    deadline = time.monotonic() + 120
    while (described := stack.sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution never ended"
        time.sleep(0.02)
    return described


def _release(stack: AwsStack, run_id: str) -> dict:
    fn = stack.function("wf_mark_failed")
    return stack.handler("wf_mark_failed")({"release_lock": run_id}, FakeLambdaContext(fn.name, fn.arn, fn.memory))


def test_a_failed_run_whose_failure_was_never_recorded_is_released(aws_stack, pg_engine, redis_client):
    aws_stack.faults.append(Fault("wf_plan", error=ConfigError("REDIS_URL must be set")))
    arn = aws_stack.start("migration", chunk_size=5)
    run_id = aws_stack.sfn.describe_execution(executionArn=arn)["name"]
    assert _ended_without_the_rule(aws_stack, arn)["status"] == "FAILED"
    assert aws_stack.ledger.active_run() == run_id  # stuck: nobody recorded the failure

    result = _release(aws_stack, run_id)

    assert result["lock_released"] is True and result["ended_here"] is True and result["status"] == "FAILED"
    run = aws_stack.ledger.get_run(run_id)
    assert run["status"] == "FAILED" and run["error"].startswith("LockReleasedByOperator: execution FAILED")
    assert aws_stack.ledger.active_run() is None
    assert aws_stack.flag_values()["rollback_available"] == "true"  # as the status rule would have left it
    # Done twice, the second time there is nothing to release: said, not silently ignored.
    with pytest.raises(LockStillInUse, match="free"):
        _release(aws_stack, run_id)


def test_a_running_execution_keeps_its_lock(aws_stack, pg_engine, redis_client):
    planning, go_on = threading.Event(), threading.Event()

    def hold(event: dict) -> bool:
        planning.set()
        go_on.wait(60)
        return False  # no fault: the plan then runs normally

    aws_stack.faults.append(Fault("wf_plan", when=hold))
    arn = aws_stack.start("migration", chunk_size=5)
    run_id = aws_stack.sfn.describe_execution(executionArn=arn)["name"]
    try:
        assert planning.wait(60)
        assert aws_stack.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
        with pytest.raises(LockStillInUse, match="RUNNING: stop it first"):
            _release(aws_stack, run_id)
        assert aws_stack.ledger.active_run() == run_id
        assert aws_stack.ledger.get_run(run_id)["status"] == "RUNNING"
    finally:
        go_on.set()
    assert aws_stack.wait(arn)["status"] == "SUCCEEDED"


def test_another_runs_lock_is_never_released(aws_stack, pg_engine, redis_client):
    aws_stack.ledger.acquire_lock("migration-20250302T080000Z-99999999", "migration")
    with pytest.raises(LockStillInUse, match="held by 'migration-20250302T080000Z-99999999'"):
        _release(aws_stack, "migration-20250301T120000Z-0a1b2c3d")
    assert aws_stack.ledger.active_run() == "migration-20250302T080000Z-99999999"
