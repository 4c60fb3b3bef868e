"""Starting runs and finishing the migration: what ``/start``, ``/rollback`` and ``/complete`` do.

A run starts in this order:

1. ``run_id = new_run_id(kind)``;
2. ``ledger.acquire_lock(run_id, kind)``: one conditional write, so of N simultaneous starts exactly one
   gets the lock and the others get ``RunInProgress`` naming the holder;
3. ``ledger.create_run``;
4. ``StartExecution`` of the kind's state machine, named after the run (the console shows the run id),
   with ``{"run_id", "kind", "dry_run", "chunk_size", "max_concurrency"}`` as input;
5. ``ledger.set_execution``.

If anything after the lock fails, the run is marked FAILED and the lock released again, so a failed start
never blocks the next one; a StartExecution failure surfaces as ``ExecutionNotStarted`` (the API answers
503). From then on the state machine owns the lock and releases it when it ends.

``migration_in_progress`` / ``is_in_progress`` is ``ledger.active_run() is not None``: the lock, never a
flag that could drift.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from tokenmigration.aws.dynamo import error_code
from tokenmigration.aws.errors import ConcurrencyAboveBudget, ExecutionNotStarted, RollbackUnavailable
from tokenmigration.aws.flags import FeatureFlags, Flags
from tokenmigration.aws.run_limits import (  # re-exported: callers know them from here
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    MAX_CHUNK_SIZE,
    MAX_CONCURRENCY,
)
from tokenmigration.aws.runs import RunKind, RunLedger
from tokenmigration.aws.settings import AwsSettings
from tokenmigration.engine.runs import new_run_id

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_MAX_CONCURRENCY", "MAX_CHUNK_SIZE", "MAX_CONCURRENCY",
           "ExecutionNotStarted"]




class ControlPlane(Protocol):
    """What run control needs: ``tokenmigration.aws.context.Services`` has it."""

    @property
    def ledger(self) -> RunLedger: ...

    @property
    def flags(self) -> FeatureFlags: ...

    @property
    def stepfunctions(self) -> Any: ...

    @property
    def aws(self) -> AwsSettings: ...


@dataclass(frozen=True, slots=True)
class StartedRun:
    run_id: str
    kind: RunKind
    dry_run: bool
    execution_arn: str
    chunk_size: int
    max_concurrency: int


def execution_input(run_id: str, kind: RunKind, dry_run: bool, chunk_size: int, max_concurrency: int) -> dict:
    """The state machines' input document (the workflow side reads exactly these keys)."""
    return {"run_id": run_id, "kind": kind, "dry_run": bool(dry_run), "chunk_size": int(chunk_size),
            "max_concurrency": int(max_concurrency)}


def active_run(control: ControlPlane) -> str | None:
    """The run holding the active-run lock, if any: the one source of "a run is in progress"."""
    return control.ledger.active_run()


def start_migration(
    control: ControlPlane,
    *,
    dry_run: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> StartedRun:
    """Start a migration run; ``RunInProgress`` while any run holds the lock."""
    control.aws.require("migration_state_machine_arn")
    _check_sizes(chunk_size, max_concurrency, control.aws.max_concurrency_limit)
    run_id = new_run_id("migration")
    control.ledger.acquire_lock(run_id, "migration")
    return _launch(control, run_id, "migration", dry_run, chunk_size, max_concurrency,
                   control.aws.migration_state_machine_arn)  # type: ignore[arg-type]


def start_rollback(
    control: ControlPlane,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> StartedRun:
    """Start a rollback run.

    ``RollbackUnavailable`` unless the ``rollback_available`` flag is set; ``RunInProgress`` while any run
    holds the lock. Once the lock is ours the flags switch back to ``dual`` (``on_rollback_accepted``:
    Express sessions work again at once) and the rollback state machine revokes what the runs created.
    If the execution then fails to start, the flags stay ``dual`` with ``rollback_available`` still set,
    which is what a failed rollback run leaves too: the rollback can simply be requested again.
    """
    control.aws.require("rollback_state_machine_arn")
    _check_sizes(chunk_size, max_concurrency, control.aws.max_concurrency_limit)
    # Read past the cache: a migration that just finished set rollback_available a moment ago.
    if not control.flags.read(force_fetch=True).rollback_available:
        raise RollbackUnavailable()
    run_id = new_run_id("rollback")
    control.ledger.acquire_lock(run_id, "rollback")
    try:
        # /complete may have withdrawn the rollback between the check and the lock.
        if not control.flags.read(force_fetch=True).rollback_available:
            raise RollbackUnavailable()
    except BaseException:
        control.ledger.release_lock(run_id)
        raise
    return _launch(control, run_id, "rollback", False, chunk_size, max_concurrency,
                   control.aws.rollback_state_machine_arn,  # type: ignore[arg-type]
                   before_start=control.flags.on_rollback_accepted)


def complete_migration(control: ControlPlane) -> Flags:
    """``/complete``: Sanctum only from now on. ``RunInProgress`` while a run holds the lock.

    The flags flip under the active-run lock, so no run can start between the check and the flip.
    """
    holder = f"complete-{secrets.token_hex(6)}"
    control.ledger.acquire_lock(holder, "complete")  # one conditional write: RunInProgress if a run holds it
    try:
        control.flags.on_complete()
    finally:
        control.ledger.release_lock(holder)
    return control.flags.read(force_fetch=True)


def _launch(
    control: ControlPlane,
    run_id: str,
    kind: RunKind,
    dry_run: bool,
    chunk_size: int,
    max_concurrency: int,
    state_machine_arn: str,
    before_start: Any = None,
) -> StartedRun:
    ledger = control.ledger
    try:
        ledger.create_run(run_id, kind, dry_run)
        if before_start is not None:
            before_start()
    except BaseException:
        _abandon(ledger, run_id, "the run could not be recorded")
        raise
    try:
        response = control.stepfunctions.start_execution(
            stateMachineArn=state_machine_arn,
            name=run_id,
            input=json.dumps(execution_input(run_id, kind, dry_run, chunk_size, max_concurrency)),
        )
        execution_arn = str(response["executionArn"])
    except (ClientError, BotoCoreError, KeyError) as error:
        reason = error_code(error) if isinstance(error, ClientError) else type(error).__name__
        logger.error("StartExecution of run %s failed: %s", run_id, error)
        _abandon(ledger, run_id, f"StartExecution failed: {reason}")
        raise ExecutionNotStarted(run_id, reason or "StartExecution failed") from None
    except BaseException:
        _abandon(ledger, run_id, "StartExecution failed")
        raise
    try:
        ledger.set_execution(run_id, execution_arn)
    except Exception:
        # The execution runs and holds the lock: the missing ARN on the run item costs only a console link.
        logger.exception("run %s started as %s but its execution ARN was not recorded", run_id, execution_arn)
    logger.info("run %s (%s) started: %s", run_id, kind, execution_arn)
    return StartedRun(run_id, kind, bool(dry_run), execution_arn, int(chunk_size), int(max_concurrency))


def _abandon(ledger: RunLedger, run_id: str, error: str) -> None:
    """Mark the run FAILED and release its lock, each best effort: the lock must not outlive a failed start."""
    try:
        if ledger.get_run(run_id) is not None:
            ledger.finish_run(run_id, "FAILED", error=error)
    except Exception:
        logger.exception("run %s: could not mark the failed start", run_id)
    finally:
        try:
            ledger.release_lock(run_id)
        except Exception:
            logger.exception("run %s: could not release the active-run lock after a failed start", run_id)


def _check_sizes(chunk_size: int, max_concurrency: int, limit: int | None = None) -> None:
    for name, value, maximum in (("chunk_size", chunk_size, MAX_CHUNK_SIZE),
                                 ("max_concurrency", max_concurrency, MAX_CONCURRENCY)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            raise ValueError(f"{name} must be an integer in 1..{maximum}, got {value!r}")
    if limit is not None and max_concurrency > limit:
        raise ConcurrencyAboveBudget(max_concurrency, limit)
