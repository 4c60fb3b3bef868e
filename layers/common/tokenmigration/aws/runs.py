"""The run ledger in DynamoDB: the active-run lock, one item per run with its counters, chunk markers
that make counting idempotent, and the per-user problems a run reported.

Items (keys ``pk`` / ``sk``, all strings; every item but the lock carries the TTL ``expires_at``):

- ``LOCK / ACTIVE``: the run that holds the active-run lock (no TTL: a lock must never vanish mid-run).
- ``LATEST / RUN``: pointer to the most recently created run.
- ``RUN#<id> / RUN``: the run, its status, timestamps and counters.
- ``RUN#<id> / CHUNK#<n, 9 digits>``: chunk n was counted (written in the same transaction as the counters).
- ``RUN#<id> / ERR#<n, 9 digits>#<seq, 6 digits>`` and ``ERR#PLAN#<seq>``: problems, keyed deterministically
  so a retried chunk overwrites its earlier report instead of adding to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

import boto3
from botocore.exceptions import ClientError

from tokenmigration.aws.cursor import encode_cursor
from tokenmigration.aws.dynamo import av, backoff, cancellation_codes, error_code, from_item, iso, to_item, utcnow
from tokenmigration.aws.error_items import ErrorItems, check_page_args
from tokenmigration.aws.errors import RunInProgress, TransientLedgerError, UnknownRun
from tokenmigration.aws.ledger_keys import (
    ERROR_PREFIX,
    LATEST_KEY,
    LOCK_KEY,
    PLAN_ERROR_PREFIX,
    RUN_SK,
    chunk_error_prefix,
    chunk_sk,
    key,
    plan_slice_error_prefix,
    run_pk,
)
from tokenmigration.aws.progress import progress_from_run, run_error_entry
from tokenmigration.aws.settings import AwsSettings
from tokenmigration.aws.table_schema import TTL_ATTRIBUTE
from tokenmigration.engine.results import ChunkResult, Problem, RollbackResult

logger = logging.getLogger(__name__)

RunKind = Literal["migration", "rollback"]
KINDS: tuple[str, ...] = ("migration", "rollback")
# Holders of the active-run lock that are not runs: /complete takes it for the moment it flips the flags.
LOCK_ONLY_KINDS: tuple[str, ...] = ("complete",)
RUNNING = "RUNNING"
TERMINAL_STATUSES: tuple[str, ...] = ("SUCCEEDED", "FAILED", "ABORTED")

MIGRATION_COUNTERS: tuple[str, ...] = (
    "processed_users", "migrated_users", "skipped_users", "failed_migrations", "sessions_migrated",
)
# A rollback counts users it looked at (processed_users, so percentage works), users it undid,
# tokens and sessions it removed. These stay out of the progress object, whose shape api.md fixes.
ROLLBACK_COUNTERS: tuple[str, ...] = ("processed_users", "rolled_back_users", "tokens_revoked", "sessions_removed")
ALL_COUNTERS: tuple[str, ...] = (
    "total_users", "total_batches", "current_batch", *MIGRATION_COUNTERS, *ROLLBACK_COUNTERS[1:],
)

_MAX_RUN_ERROR_CHARS = 2000
_MAX_ATTEMPTS = 8
_CONTENTION = frozenset({"TransactionConflict", "ThrottlingError"})


class RunLedger:
    def __init__(
        self,
        table_name: str,
        retention_days: int = 90,
        client: Any = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.table_name = table_name
        self.retention_days = retention_days
        self._client = client
        # Injected by tests to move time without sleeping; must return an aware UTC datetime.
        self._clock = clock

    @classmethod
    def from_settings(cls, aws: AwsSettings, client: Any = None) -> RunLedger:
        aws.require("table_name")
        return cls(aws.table_name, aws.run_retention_days, client)  # type: ignore[arg-type]

    @property
    def client(self) -> Any:
        # Created on first use so a module-level RunLedger costs nothing at import time.
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client

    @property
    def _errors(self) -> ErrorItems:
        return ErrorItems(self.client, self.table_name)

    def _now(self) -> str:
        return iso(self._clock())

    def _expires_at(self) -> int:
        return int((self._clock() + timedelta(days=self.retention_days)).timestamp())

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.table_name, Key=key(pk, sk), ConsistentRead=True).get("Item")
        return from_item(item) if item else None

    # --- the active-run lock -------------------------------------------------------------------------

    def acquire_lock(self, run_id: str, kind: str) -> None:
        """Take the active-run lock in one conditional write; raise RunInProgress when another run holds it.

        Re-acquiring by the run that holds it succeeds, so a retried start does not lock itself out.
        """
        if kind not in LOCK_ONLY_KINDS:
            _check_kind(kind)
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=to_item({**LOCK_KEY, "run_id": run_id, "kind": kind, "acquired_at": self._now()}),
                ConditionExpression="attribute_not_exists(pk) OR run_id = :run",
                ExpressionAttributeValues={":run": av(run_id)},
                # The holder comes back with the refusal: no second read, no window for it to change.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            holder = error.response.get("Item")
            active = from_item(holder).get("run_id") if holder else self.active_run()
            raise RunInProgress(active) from None

    def release_lock(self, run_id: str) -> bool:
        """Release the lock if ``run_id`` holds it. Anything else (no lock, another holder) is a no-op."""
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key=to_item(LOCK_KEY),
                ConditionExpression="run_id = :run",
                ExpressionAttributeValues={":run": av(run_id)},
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def active_run(self) -> str | None:
        lock = self._get(LOCK_KEY["pk"], LOCK_KEY["sk"])
        return lock.get("run_id") if lock else None

    # --- runs --------------------------------------------------------------------------------------

    def create_run(self, run_id: str, kind: RunKind, dry_run: bool, execution_arn: str | None = None) -> bool:
        """Create the run item and point LATEST at it. A run that already exists is left alone (False)."""
        _check_kind(kind)
        now, expires_at = self._now(), self._expires_at()
        run: dict[str, Any] = {
            "pk": run_pk(run_id), "sk": RUN_SK, "run_id": run_id, "kind": kind, "status": RUNNING,
            "dry_run": bool(dry_run), "started_at": now, "updated_at": now,
            **dict.fromkeys(ALL_COUNTERS, 0), TTL_ATTRIBUTE: expires_at,
        }
        if execution_arn:
            run["execution_arn"] = execution_arn
        try:
            self.client.transact_write_items(TransactItems=[
                {"Put": {
                    "TableName": self.table_name, "Item": to_item(run),
                    # Never reset the counters of a run that exists (a retried start with the same id).
                    "ConditionExpression": "attribute_not_exists(pk)",
                }},
                {"Put": {
                    "TableName": self.table_name,
                    "Item": to_item({**LATEST_KEY, "run_id": run_id, TTL_ATTRIBUTE: expires_at}),
                }},
            ])
        except ClientError as error:
            if error_code(error) == "TransactionCanceledException" and cancellation_codes(error)[:1] == [
                "ConditionalCheckFailed"
            ]:
                logger.info("run %s exists already; not created again", run_id)
                return False
            raise
        return True

    def _update_run(self, run_id: str, sets: dict[str, Any]) -> None:
        names = {f"#a{i}": name for i, name in enumerate(sets)}
        values = {f":a{i}": av(value) for i, value in enumerate(sets.values())}
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=key(run_pk(run_id), RUN_SK),
                UpdateExpression="SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(sets))),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise UnknownRun(run_id) from None
            raise

    def set_execution(self, run_id: str, execution_arn: str) -> None:
        self._update_run(run_id, {"execution_arn": execution_arn})

    def set_plan(self, run_id: str, total_users: int, total_batches: int) -> None:
        if total_users < 0 or total_batches < 0:
            raise ValueError("total_users and total_batches must not be negative")
        self._update_run(run_id, {"total_users": int(total_users), "total_batches": int(total_batches)})

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> bool:
        """End a RUNNING run. False (and nothing changes) when it had ended already: the first end wins."""
        try:
            self.client.update_item(**self._ending(run_id, status, error))
        except ClientError as failure:
            if error_code(failure) != "ConditionalCheckFailedException":
                raise
            if self.get_run(run_id) is None:
                raise UnknownRun(run_id) from None
            return False
        return True

    def finish_and_release(self, run_id: str, status: str, error: str | None = None) -> tuple[bool, bool]:
        """End the run and release the lock it holds in one transaction: nobody sees the run ended while its
        lock still refuses the next /start (a watcher that starts a run as soon as the last one ends met a 409
        naming a run /progress showed as finished). When either part does not apply (the run had ended, the lock
        is not its), each is done on its own, as finish_run and release_lock do. Returns (ended, released)."""
        try:
            self.client.transact_write_items(TransactItems=[
                {"Update": self._ending(run_id, status, error)},
                {"Delete": {"TableName": self.table_name, "Key": to_item(LOCK_KEY),
                            "ConditionExpression": "run_id = :run", "ExpressionAttributeValues": {":run": av(run_id)}}},
            ])
        except ClientError as failure:
            if error_code(failure) != "TransactionCanceledException":
                raise
            return self.finish_run(run_id, status, error), self.release_lock(run_id)
        return True, True

    def _ending(self, run_id: str, status: str, error: str | None) -> dict[str, Any]:
        """The conditional update that ends a RUNNING run."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        now = self._now()
        sets = "#status = :status, finished_at = :now, updated_at = :now"
        values: dict[str, Any] = {":status": av(status), ":now": av(now), ":running": av(RUNNING)}
        if error:
            sets += ", #error = :error"
            values[":error"] = av(error[:_MAX_RUN_ERROR_CHARS])
        return {
            "TableName": self.table_name,
            "Key": key(run_pk(run_id), RUN_SK),
            "UpdateExpression": "SET " + sets,
            "ConditionExpression": "attribute_exists(pk) AND #status = :running",
            "ExpressionAttributeNames": {"#status": "status", **({"#error": "error"} if error else {})},
            "ExpressionAttributeValues": values,
        }

    def reopen_run(self, run_id: str) -> bool:
        """A redriven execution goes on with a run recorded as FAILED or ABORTED: RUNNING again.

        False when the run was not ended that way (running, succeeded, or no such run).
        """
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=key(run_pk(run_id), RUN_SK),
                UpdateExpression="SET #status = :running, updated_at = :now REMOVE finished_at, #error",
                ConditionExpression="attribute_exists(pk) AND #status IN (:failed, :aborted)",
                ExpressionAttributeNames={"#status": "status", "#error": "error"},
                ExpressionAttributeValues={":running": av(RUNNING), ":now": av(self._now()),
                                           ":failed": av("FAILED"), ":aborted": av("ABORTED")},
            )
        except ClientError as failure:
            if error_code(failure) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        run = self._get(run_pk(run_id), RUN_SK)
        if run is None:
            return None
        run.pop("pk", None)
        run.pop("sk", None)
        return run

    def latest_run_id(self) -> str | None:
        latest = self._get(LATEST_KEY["pk"], LATEST_KEY["sk"])
        return latest.get("run_id") if latest else None

    def progress(self, run_id: str) -> dict[str, Any]:
        run = self.get_run(run_id)
        if run is None:
            raise UnknownRun(run_id)
        return progress_from_run(run)

    # --- counting chunks exactly once --------------------------------------------------------------

    def record_chunk(self, run_id: str, chunk_number: int, result: ChunkResult) -> bool:
        """Count a migrated chunk; False (and nothing changes) when this chunk was counted before."""
        counts = {
            "processed_users": result.processed_users,
            "migrated_users": result.migrated_users,
            "skipped_users": result.skipped_users,
            "failed_migrations": result.failed_users,
            "sessions_migrated": result.sessions_migrated,
        }
        return self._record(run_id, chunk_number, counts, result.problems)

    def record_rollback_chunk(self, run_id: str, chunk_number: int, result: RollbackResult, users: int) -> bool:
        """Count a rolled-back chunk of ``users`` planned users; False when it was counted before."""
        counts = {
            "processed_users": users,
            "rolled_back_users": result.users,
            "tokens_revoked": result.tokens_revoked,
            "sessions_removed": result.sessions_removed,
        }
        return self._record(run_id, chunk_number, counts, None)  # a rollback reports no per-user problems

    def _record(
        self, run_id: str, chunk_number: int, counts: dict[str, int], problems: list[Problem] | None
    ) -> bool:
        if self._chunk_counted(run_id, chunk_number):
            # A retry of a chunk that was counted: its rerun saw the work done (all skipped), and that
            # report must not overwrite the problems of the attempt that counted.
            return False
        # Problems first: if this fails the chunk is not counted, and its retry writes both.
        if problems is not None:
            self._errors.replace(run_pk(run_id), chunk_error_prefix(chunk_number), problems, self._expires_at())
        return self._count(run_id, chunk_number, counts)

    def _chunk_counted(self, run_id: str, chunk_number: int) -> bool:
        # Two plain consistent reads, not TransactGetItems: DynamoDB cancels a transactional read of an item
        # that a write transaction has in flight, and every chunk's count writes the run item. The marker's
        # conditional Put in _count stays the guarantee, so a stale "not counted" here costs nothing.
        def exists(sk: str) -> bool:
            return "Item" in self.client.get_item(TableName=self.table_name, Key=key(run_pk(run_id), sk),
                                                  ConsistentRead=True, ProjectionExpression="pk")

        if not exists(RUN_SK):
            raise UnknownRun(run_id)
        return exists(chunk_sk(chunk_number))

    def _count(self, run_id: str, chunk_number: int, counts: dict[str, int]) -> bool:
        now = self._now()
        marker = {
            "pk": run_pk(run_id), "sk": chunk_sk(chunk_number), "chunk": chunk_number, "recorded_at": now,
            **counts, TTL_ATTRIBUTE: self._expires_at(),
        }
        adds = {"current_batch": 1, **counts}
        names = {f"#c{i}": name for i, name in enumerate(adds)}
        values = {f":c{i}": av(int(value)) for i, value in enumerate(adds.values())}
        transaction = [
            # The marker is the "counted once" guarantee: a second attempt fails this condition and
            # cancels the whole transaction, counters included.
            {"Put": {"TableName": self.table_name, "Item": to_item(marker),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {
                "TableName": self.table_name,
                "Key": key(run_pk(run_id), RUN_SK),
                "UpdateExpression": "ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(adds)))
                                    + " SET updated_at = :now",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {**values, ":now": av(now)},
            }},
        ]
        for attempt in range(_MAX_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=transaction)
                return True
            except ClientError as error:
                if error_code(error) != "TransactionCanceledException":
                    raise
                codes = [*cancellation_codes(error), "None", "None"]
                if codes[0] == "ConditionalCheckFailed":
                    return False
                if codes[1] == "ConditionalCheckFailed":
                    raise UnknownRun(run_id) from None
                # Many chunk functions update the one run item: DynamoDB cancels a transaction that
                # collides with another in flight (TransactionConflict), or that the item's partition cannot
                # take now (ThrottlingError). Those are worth retrying, here and then by the state machine.
                if not _CONTENTION.intersection(codes):
                    raise
                if attempt == _MAX_ATTEMPTS - 1:
                    raise TransientLedgerError(
                        f"chunk {chunk_number} of run {run_id} was not counted: the run ledger refused "
                        f"{_MAX_ATTEMPTS} times ({', '.join(c for c in codes if c != 'None')})") from error
                backoff(attempt)
        raise AssertionError("unreachable")

    # --- problems ------------------------------------------------------------------------------------

    def record_plan_problems(self, run_id: str, problems: Iterable[Problem]) -> None:
        """Problems the plan found (sessions no chunk owns: bad values, unknown user ids)."""
        if self.get_run(run_id) is None:
            raise UnknownRun(run_id)
        self._errors.replace(run_pk(run_id), PLAN_ERROR_PREFIX, list(problems), self._expires_at())

    def record_slice_problems(self, run_id: str, node_index: int, slice_number: int,
                              problems: Iterable[Problem]) -> None:
        """Problems one slice of the plan's scan found; ``record_plan_problems(run_id, [])`` clears them all."""
        self._errors.replace(run_pk(run_id), plan_slice_error_prefix(node_index, slice_number), list(problems),
                             self._expires_at())

    def errors(
        self, run_id: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a run's problems, in chunk order (plan problems last), and the next page's cursor."""
        check_page_args(limit, cursor)  # bad input is reported as such, even for an unknown run
        run = self.get_run(run_id)
        if run is None:
            raise UnknownRun(run_id)
        entry = run_error_entry(run) if cursor is None else None
        if entry is None:
            return self._errors.page(run_pk(run_id), limit, cursor)
        # The run's own failure leads the first page, within its limit: a failed run is never "no problems".
        if limit == 1:
            more, _ = self._errors.page(run_pk(run_id), 1, None)
            return [entry], (encode_cursor(ERROR_PREFIX) if more else None)
        problems, next_cursor = self._errors.page(run_pk(run_id), limit - 1, None)
        return [entry, *problems], next_cursor


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
