"""One function per step of the migration and rollback state machines (and the scheduled cleanup).

Every step is safe to run again with the same input, because Step Functions retries and redrives them:
the plan's first phase clears the run's index, each slice of its scan files sessions again harmlessly,
a chunk counts once (the run ledger's per-chunk marker),
finalize and mark_failed act on a run only while it is RUNNING and release only the lock this run holds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from tokenmigration.aws.chunk_list import chunks_key, read_chunks, write_chunks
from tokenmigration.aws.context import Services
from tokenmigration.aws.dynamo import iso, utcnow
from tokenmigration.aws.errors import UnknownRun
from tokenmigration.aws.runs import KINDS, RUNNING, RunKind
from tokenmigration.engine.results import Chunk, ChunkResult, RollbackResult
from tokenmigration.workflow.errors import short_error, transient_errors

# The engine's cleanup (SQLAlchemy) and session index (redis-py) load in the steps that use them: the
# mark-failed function imports this module too and needs neither.
if TYPE_CHECKING:
    from tokenmigration.engine.session_index import SliceCounts

logger = logging.getLogger(__name__)

# Step Functions execution endings, as the run item records them (a timeout is a failure there).
FAILURE_STATUSES: dict[str, str] = {"FAILED": "FAILED", "TIMED_OUT": "FAILED", "ABORTED": "ABORTED"}


class RunIncomplete(RuntimeError):
    """Finalize found chunks that were never counted: the run must not be reported as succeeded."""


@dataclass(frozen=True, slots=True)
class PlanOutcome:
    chunks: dict[str, str]  # where the chunk list is: the Distributed Map's ItemReader Bucket and Key
    total_users: int
    total_batches: int
    plan_problems: int = 0


@dataclass(frozen=True, slots=True)
class PlanStart:
    chunks: dict[str, str]
    total_users: int
    total_batches: int
    nodes: list[str] = field(default_factory=list)  # one resumable scan per node


@dataclass(frozen=True, slots=True)
class SliceOutcome:
    """What the state machine loops on: the same node, the next cursor and slice number, the counts so far."""

    node: str
    node_index: int
    cursor: int
    slice: int
    counts: SliceCounts
    done: bool

    def to_dict(self) -> dict[str, Any]:
        # The cursor as text: a Redis cursor is an unsigned 64-bit number, beyond JSON's safe integers.
        return {"node": self.node, "node_index": self.node_index, "cursor": str(self.cursor),
                "slice": self.slice, "report": self.counts.to_dict(), "done": self.done}


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    result: ChunkResult
    counted: bool  # False: an earlier attempt of this chunk was counted already


@dataclass(frozen=True, slots=True)
class RollbackChunkOutcome:
    result: RollbackResult
    counted: bool


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    run_id: str
    status: str  # the run's status afterwards ("UNKNOWN" when there is no such run)
    error: str  # the short line the run item keeps
    ended_here: bool  # False: the run had ended before (a repeated or late report changes nothing)
    lock_released: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_kind(kind: str) -> RunKind:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind  # type: ignore[return-value]


def resume(services: Services, run_id: str, kind: RunKind) -> None:
    """Every step runs holding the active-run lock of its own run.

    On a first attempt the API took the lock before StartExecution. After a failure the status rule
    released it; when the execution is redriven, its first step takes it back and reopens the run, or
    fails with RunInProgress if another run holds it meanwhile (that run is never disturbed).
    """
    if services.ledger.active_run() == run_id:
        return
    services.ledger.acquire_lock(run_id, kind)
    if services.ledger.reopen_run(run_id):
        logger.info("run %s resumed: its execution was redriven", run_id)


def _require_run(services: Services, run_id: str) -> dict[str, Any]:
    run = services.ledger.get_run(run_id)
    if run is None:
        raise UnknownRun(run_id)
    return run


# --- planning ---------------------------------------------------------------------------------------------


# The plan in bounded slices: one Lambda scans about 33,000 sessions a second, so a single invocation would
# reach Lambda's 900 s limit near 30 million sessions. The state machine runs start_plan once, then loops
# plan_slice per node (all nodes at once) until each says done, then finish_plan.

_chunk_cache: dict[str, list[Chunk]] = {}


def _run_chunks(services: Services, run_id: str) -> list[Chunk]:
    """The chunk list start_plan stored; read once per warm container and run (50,000 chunks: ~3 MB)."""
    if run_id not in _chunk_cache:
        _chunk_cache.clear()
        _chunk_cache[run_id] = read_chunks(services.s3, services.aws.chunks_bucket, run_id)
    return _chunk_cache[run_id]


def start_plan(services: Services, run_id: str, chunk_size: int) -> PlanStart:
    """Chunk the users, store the chunk list, clear what an earlier attempt indexed; the nodes to scan."""
    services.aws.require("chunks_bucket")
    _require_run(services, run_id)
    resume(services, run_id, "migration")
    with transient_errors():
        chunks = services.migrator.plan_chunks(chunk_size)
        nodes = services.migrator.start_index(run_id, chunks)
    _chunk_cache.pop(run_id, None)
    location = write_chunks(services.s3, services.aws.chunks_bucket, run_id, chunks)
    total = sum(chunk.users for chunk in chunks)
    services.ledger.set_plan(run_id, total, len(chunks))
    services.ledger.record_plan_problems(run_id, [])  # an earlier attempt's slices may have written some
    return PlanStart(location, total, len(chunks), nodes)


def plan_slice(services: Services, run_id: str, node: str, node_index: int, cursor: int, slice_number: int,
               counts: SliceCounts, seconds: float | None = None) -> SliceOutcome:
    """Scan one node from ``cursor`` for at most ``seconds`` (PLAN_SLICE_SECONDS) and hand back the next cursor.

    Safe to run again with the same input: the sessions it files are filed again (readers keep one entry
    per session id), its problems overwrite this slice's, and the counts travel in the state machine's
    payload, so a retried slice adds its counts to the same totals it was given.
    """
    services.aws.require("chunks_bucket")
    resume(services, run_id, "migration")
    budget = services.aws.plan_slice_seconds if seconds is None else seconds
    chunks = _run_chunks(services, run_id)
    with transient_errors():
        part = services.migrator.index_slice(run_id, chunks, node, cursor, time.monotonic() + budget,
                                             services.aws.plan_scan_count)
    services.ledger.record_slice_problems(run_id, node_index, slice_number, part.report.problems)
    from tokenmigration.engine.session_index import SliceCounts

    total = SliceCounts()
    total.merge(counts)
    total.add(part.report)
    logger.info("run %s node %s slice %d: %d keys in %d SCAN calls%s", run_id, node, slice_number,
                part.report.keys_seen, part.scan_calls, "; node done" if part.done else "")
    return SliceOutcome(node, node_index, part.cursor, slice_number + 1, total, part.done)


def finish_plan(services: Services, run_id: str, reports: list[SliceCounts]) -> PlanOutcome:
    """Every node is scanned: mark the index complete; the map's chunk list and the run's totals."""
    services.aws.require("chunks_bucket")
    run = _require_run(services, run_id)
    resume(services, run_id, "migration")
    from tokenmigration.engine.session_index import SliceCounts

    total = SliceCounts()
    for report in reports:
        total.merge(report)
    with transient_errors():
        services.migrator.finish_index(run_id, total.keys_seen, int(run.get("total_batches") or 0))
    logger.info("run %s: index complete, %d session keys, kinds %s", run_id, total.keys_seen, dict(total.kinds))
    return PlanOutcome({"Bucket": services.aws.chunks_bucket, "Key": chunks_key(run_id)},
                       int(run.get("total_users") or 0), int(run.get("total_batches") or 0), total.problems)


def plan_rollback(services: Services, run_id: str, chunk_size: int) -> PlanOutcome:
    """Chunks covering every user id this tool may have touched, by any path (Migrator.plan_rollback)."""
    services.aws.require("chunks_bucket")
    _require_run(services, run_id)
    resume(services, run_id, "rollback")
    with transient_errors():
        chunks = services.migrator.plan_rollback(chunk_size)
    location = write_chunks(services.s3, services.aws.chunks_bucket, run_id, chunks)
    total = sum(chunk.users for chunk in chunks)
    services.ledger.set_plan(run_id, total, len(chunks))
    return PlanOutcome(location, total, len(chunks))


# --- chunks -----------------------------------------------------------------------------------------------


def migrate_chunk(services: Services, run_id: str, chunk: Chunk, dry_run: bool) -> ChunkOutcome:
    """Migrate one chunk and count it once, however often Step Functions runs this step for it.

    The engine reports the same counts on every attempt (it reads back what this run wrote), and the
    ledger adds them only the first time, so a retry after the commit neither migrates nor counts twice.
    """
    resume(services, run_id, "migration")
    with transient_errors():
        result = services.migrator.migrate_chunk(chunk, run_id, dry_run)
    counted = services.ledger.record_chunk(run_id, chunk.number, result)
    if not counted:
        logger.info("chunk %s of run %s was counted by an earlier attempt", chunk.number, run_id)
    return ChunkOutcome(result, counted)


def rollback_chunk(services: Services, run_id: str, chunk: Chunk) -> RollbackChunkOutcome:
    resume(services, run_id, "rollback")
    with transient_errors():
        result = services.migrator.rollback_chunk(chunk, run_id)
    counted = services.ledger.record_rollback_chunk(run_id, chunk.number, result, chunk.users)
    return RollbackChunkOutcome(result, counted)


# --- the two endings --------------------------------------------------------------------------------------


def finalize(services: Services, run_id: str, kind: str, dry_run: bool) -> dict[str, Any]:
    """The run succeeded: flags, status, drop the session index, release the lock. Returns its progress.

    Flags are written before the status, so an attempt that fails half-way is simply run again; once the
    run is no longer RUNNING, a repeated finalize only finishes the clean-up (index, lock).
    """
    kind = _check_kind(kind)
    _require_run(services, run_id)
    resume(services, run_id, kind)  # a redrive may start here, after every chunk was counted
    run = _require_run(services, run_id)
    if run["status"] == RUNNING:
        counted, planned = int(run.get("current_batch") or 0), int(run.get("total_batches") or 0)
        if counted < planned:
            raise RunIncomplete(f"only {counted} of {planned} chunks were counted")
        if kind == "migration":
            services.flags.on_migration_finished(dry_run=dry_run)
        else:
            services.flags.on_rollback_finished(succeeded=True)
        if kind == "migration":  # before the end: every chunk is counted, none reads the index again
            _discard_index(services, run_id)
        services.ledger.finish_and_release(run_id, "SUCCEEDED")
    else:
        logger.warning("finalize: run %s is %s already; only releasing what it holds", run_id, run["status"])
        if kind == "migration":
            _discard_index(services, run_id)
        services.ledger.release_lock(run_id)
    return services.ledger.progress(run_id)


def mark_failed(
    services: Services,
    run_id: str,
    kind: str,
    dry_run: bool,
    error: str | None,
    cause: Any = None,
    execution_status: str = "FAILED",
    execution_arn: str | None = None,
) -> FailureOutcome:
    """The run failed (or was stopped, or timed out): record it, release the lock, keep rollback possible.

    Called by the execution-status rule for failed, stopped and timed-out executions (the state machines
    catch nothing, so that a failed execution stays redrivable). The first call ends the run; later ones
    change nothing but a lock this run still holds. A failed migration leaves ``rollback_available`` true, since
    some chunks may have been migrated; a failed rollback leaves it as it was, so it can be run again.
    """
    kind = _check_kind(kind)
    status = FAILURE_STATUSES.get(execution_status)
    if status is None:
        raise ValueError(f"execution status must be one of {tuple(FAILURE_STATUSES)}, got {execution_status!r}")
    summary = short_error(error, cause)
    if execution_arn and _running(services, execution_arn):
        # EventBridge retries delivery for an hour: this report can arrive after the execution was
        # redriven. The run is going on; recording it as failed would release the lock it works under.
        logger.warning("mark_failed: execution of run %s is running again (redriven); report ignored", run_id)
        return FailureOutcome(run_id, RUNNING, summary, ended_here=False, lock_released=False)
    run = services.ledger.get_run(run_id)
    ended_here = False
    if run is not None and run["status"] == RUNNING:
        if kind == "migration":
            services.flags.on_migration_finished(dry_run=dry_run)
        else:
            services.flags.on_rollback_finished(succeeded=False)
        ended_here, released = services.ledger.finish_and_release(run_id, status, summary)
    else:
        if run is None:
            logger.warning("mark_failed: no run %s; releasing its lock only", run_id)
        released = services.ledger.release_lock(run_id)
    # The session index stays: a redriven execution's chunks need it (it expires after the redrive window).
    after = services.ledger.get_run(run_id) if run is not None else None
    return FailureOutcome(run_id, after["status"] if after else "UNKNOWN", summary, ended_here, released)


class LockStillInUse(RuntimeError):
    """An operator asked to release a lock whose run's execution is still running (or that another run holds)."""


def release_stuck_lock(services: Services, run_id: str) -> FailureOutcome:
    """The operator's way out when the status rule never recorded a failure (its target failed for an hour
    and the event went to the dead-letter queue): every /start answers 409 while the lock is held.

    Checks with DescribeExecution that the run's execution is no longer running, then records the ending as
    the status rule would have (FAILED, ABORTED or timed out; rollback stays possible) and releases the lock.
    """
    holder = services.ledger.active_run()
    if holder != run_id:
        raise LockStillInUse(f"the active-run lock is held by {holder!r}, not {run_id!r}: nothing released"
                             if holder else f"the active-run lock is free: nothing to release for {run_id!r}")
    run = services.ledger.get_run(run_id)
    execution_arn = (run or {}).get("execution_arn")
    status = "FAILED"
    if execution_arn:
        try:
            status = services.stepfunctions.describe_execution(executionArn=execution_arn)["status"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise
    if status in ("RUNNING", "PENDING_REDRIVE"):
        raise LockStillInUse(f"the execution of run {run_id} is {status}: stop it first "
                             "(aws stepfunctions stop-execution), or let it end")
    if status == "SUCCEEDED":  # finish ran and the release was lost: only the lock is left to drop
        released = services.ledger.release_lock(run_id)
        return FailureOutcome(run_id, (run or {}).get("status", "UNKNOWN"), "", False, released)
    kind = _check_kind((run or {}).get("kind") or run_id.split("-", 1)[0])
    return mark_failed(services, run_id, kind, bool((run or {}).get("dry_run")),
                       "LockReleasedByOperator", f"execution {status}; the status rule never recorded it",
                       execution_status=status if status in FAILURE_STATUSES else "FAILED")


def _running(services: Services, execution_arn: str) -> bool:
    try:
        return services.stepfunctions.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return False  # past retention, or another account's: nothing can be running it
        raise


def _discard_index(services: Services, run_id: str) -> None:
    """Drop the run's session index; the chunk list says which slices there are."""
    services.aws.require("chunks_bucket")
    try:
        chunks = read_chunks(services.s3, services.aws.chunks_bucket, run_id)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        return  # the plan never wrote one: no chunk was indexed under a number anyone knows
    with transient_errors():
        services.migrator.discard_index(run_id, chunks)


# --- scheduled ----------------------------------------------------------------------------------------------


# Left of the Lambda's time when the walk stops: the page under way, saving the place, the report.
CLEANUP_SAFETY_SECONDS = 60.0


def scheduled_cleanup(services: Services, dry_run: bool = False,
                      remaining_seconds: float | None = None) -> dict[str, Any]:
    """Prune what this tool created and nobody can use any more (engine.cleanup), going on from where the
    previous invocation stopped and stopping in time to say where this one did. The place is kept after every
    committed page, so an invocation that dies anyway (a page slower than the reserve) loses one page's work.
    A dry run starts from the first user and leaves the place alone."""
    from tokenmigration.engine.cleanup import cleanup

    place = services.cleanup_place
    after = None if dry_run else place.get()
    deadline = None if remaining_seconds is None else \
        time.monotonic() + max(0.0, remaining_seconds - CLEANUP_SAFETY_SECONDS)
    with transient_errors():
        report = cleanup(services.engine, services.settings, dry_run=dry_run,
                         has_expires_at=services.migrator.has_expires_at,
                         session_store=services.migrator.session_store, after_user_id=after, deadline=deadline,
                         on_page=lambda user_id: place.save(user_id, at=iso(utcnow())))
    if report["complete"] and not dry_run:  # an unfinished walk's place was saved with its last page
        place.save(None, at=iso(utcnow()))
    return {**report, "started_after_user_id": after}
