"""Refusals of the control plane. The API layer maps them: UnknownRun 404, RunInProgress 409, the rest 400."""

from __future__ import annotations


class ServiceError(Exception):
    code = "service_error"


class RunInProgress(ServiceError):
    """Another run (migration or rollback) holds the active-run lock."""

    code = "run_in_progress"

    def __init__(self, active_run_id: str | None) -> None:
        super().__init__(f"run {active_run_id} is in progress")
        self.active_run_id = active_run_id


class TransientLedgerError(Exception):
    """The run ledger's table turned a chunk's count or its problems away for now: the count's transaction kept
    colliding with other chunks' on the run item, or DynamoDB throttled the writes. Nothing was counted; the
    state machines retry the step under this name (the chunk's database work is idempotent, the count happens
    once, and problems are written under fixed keys)."""


class UnknownRun(ServiceError):
    code = "unknown_run"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r}")
        self.run_id = run_id


class BadCursor(ServiceError):
    """A paging cursor that this service did not hand out (or that was mangled on the way back)."""

    code = "bad_cursor"

    def __init__(self, message: str = "cursor is not valid") -> None:
        super().__init__(message)


class RollbackUnavailable(ServiceError):
    code = "rollback_unavailable"

    def __init__(self, message: str = "Rollback is not available") -> None:
        # The default is the api.md refusal text, word for word.
        super().__init__(message)


class ConcurrencyAboveBudget(ServiceError):
    """``max_concurrency`` above the chunk function's reserved concurrency: the extra children would only be
    throttled, and the database's connection budget is sized for the reserved concurrency."""

    code = "max_concurrency_above_budget"

    def __init__(self, requested: int, limit: int) -> None:
        super().__init__(f"must be at most {limit} (the chunk function's reserved concurrency, "
                         f"ChunkReservedConcurrency), got {requested}")
        self.requested = requested
        self.limit = limit


class ExecutionNotStarted(ServiceError):
    """Step Functions did not start the run's execution; the run is FAILED and the lock released."""

    code = "execution_not_started"

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"the state machine did not start run {run_id} ({reason}); nothing changed, try again")
        self.run_id = run_id
        self.reason = reason
