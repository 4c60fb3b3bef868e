"""The run ledger: run items, counting each chunk exactly once, finishing, problems."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from tokenmigration.aws.errors import UnknownRun
from tokenmigration.aws.runs import RunLedger
from tokenmigration.engine.results import ChunkResult, Problem, RollbackResult


def chunk_result(number: int, **counts: int) -> ChunkResult:
    values = {"processed_users": 10, "migrated_users": 7, "skipped_users": 2, "failed_users": 1,
              "sessions_migrated": 12, **counts}
    return ChunkResult(chunk=number, skip_reasons=Counter(already_migrated=2),
                       problems=[Problem("user_locked", "row held by another transaction", user_id=number * 100 + 1)],
                       **values)


def raw_item(ledger: RunLedger, pk: str, sk: str) -> dict | None:
    """The item as DynamoDB holds it, bypassing the ledger's conversions."""
    return ledger.client.get_item(TableName=ledger.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item")


def test_create_run(ledger: RunLedger, clock):
    assert ledger.latest_run_id() is None
    assert ledger.create_run("migration-1", "migration", dry_run=True, execution_arn="arn:exec:1") is True
    run = ledger.get_run("migration-1")
    assert run["status"] == "RUNNING" and run["kind"] == "migration" and run["dry_run"] is True
    assert run["started_at"] == run["updated_at"] == "2025-03-01T12:00:00Z"
    assert run["execution_arn"] == "arn:exec:1" and run.get("finished_at") is None
    for counter in ("total_users", "processed_users", "migrated_users", "skipped_users", "failed_migrations",
                    "sessions_migrated", "current_batch", "total_batches", "tokens_revoked", "sessions_removed"):
        assert run[counter] == 0 and type(run[counter]) is int
    assert run["expires_at"] == int(clock.now.timestamp()) + 90 * 86400
    assert ledger.latest_run_id() == "migration-1"
    assert raw_item(ledger, "LATEST", "RUN")["expires_at"] == {"N": str(run["expires_at"])}

    ledger.create_run("rollback-2", "rollback", dry_run=False)
    assert ledger.latest_run_id() == "rollback-2"
    assert ledger.get_run("rollback-2").get("execution_arn") is None
    ledger.set_execution("rollback-2", "arn:exec:2")
    assert ledger.get_run("rollback-2")["execution_arn"] == "arn:exec:2"


def test_creating_a_run_again_resets_nothing(ledger: RunLedger):
    ledger.create_run("migration-1", "migration", dry_run=False)
    ledger.set_plan("migration-1", 10, 1)
    ledger.record_chunk("migration-1", 0, chunk_result(0))
    assert ledger.create_run("migration-1", "migration", dry_run=False) is False
    assert ledger.get_run("migration-1")["processed_users"] == 10


def test_unknown_runs_are_refused(ledger: RunLedger):
    for call in (lambda: ledger.set_plan("nope", 1, 1), lambda: ledger.set_execution("nope", "arn"),
                 lambda: ledger.record_chunk("nope", 0, chunk_result(0)), lambda: ledger.progress("nope"),
                 lambda: ledger.finish_run("nope", "FAILED"), lambda: ledger.record_plan_problems("nope", []),
                 lambda: ledger.errors("nope")):
        with pytest.raises(UnknownRun):
            call()
    assert ledger.get_run("nope") is None


def test_a_chunk_counts_exactly_once(ledger: RunLedger, clock):
    ledger.create_run("m", "migration", dry_run=False)
    ledger.set_plan("m", total_users=20, total_batches=2)
    clock.advance(30)
    assert ledger.record_chunk("m", 0, chunk_result(0)) is True
    clock.advance(30)
    # The chunk Lambda retried, or the execution redriven: its rerun finds the work done.
    rerun = chunk_result(0, migrated_users=0, skipped_users=10, failed_users=0, sessions_migrated=0)
    assert ledger.record_chunk("m", 0, rerun) is False
    run = ledger.get_run("m")
    assert (run["processed_users"], run["migrated_users"], run["skipped_users"], run["failed_migrations"],
            run["sessions_migrated"], run["current_batch"]) == (10, 7, 2, 1, 12, 1)
    assert run["updated_at"] == "2025-03-01T12:00:30Z"  # the refused retry changed nothing
    marker = raw_item(ledger, "RUN#m", "CHUNK#000000000")
    assert marker["migrated_users"] == {"N": "7"}

    assert ledger.record_chunk("m", 1, chunk_result(1)) is True
    run = ledger.get_run("m")
    assert (run["processed_users"], run["migrated_users"], run["current_batch"]) == (20, 14, 2)
    # The counted attempt's problem is kept; the refused retry did not overwrite it.
    errors, _ = ledger.errors("m")
    assert [e["user_id"] for e in errors] == [1, 101]


def test_rollback_chunks_count_their_own_counters(ledger: RunLedger):
    ledger.create_run("r", "rollback", dry_run=False)
    ledger.set_plan("r", total_users=50, total_batches=1)
    result = RollbackResult(chunk=0, users=40, tokens_revoked=40, sessions_removed=55)
    assert ledger.record_rollback_chunk("r", 0, result, users=50) is True
    assert ledger.record_rollback_chunk("r", 0, result, users=50) is False
    run = ledger.get_run("r")
    assert (run["processed_users"], run["rolled_back_users"], run["tokens_revoked"], run["sessions_removed"],
            run["current_batch"], run["migrated_users"]) == (50, 40, 40, 55, 1, 0)
    assert ledger.progress("r")["percentage"] == 100.0


def test_finish_run_first_end_wins(ledger: RunLedger, clock):
    ledger.create_run("m", "migration", dry_run=False)
    clock.advance(60)
    assert ledger.finish_run("m", "FAILED", error="chunk 3: database unavailable") is True
    clock.advance(60)
    assert ledger.finish_run("m", "FAILED", error="again") is False
    assert ledger.finish_run("m", "SUCCEEDED") is False
    run = ledger.get_run("m")
    assert (run["status"], run["finished_at"], run["updated_at"], run["error"]) == (
        "FAILED", "2025-03-01T12:01:00Z", "2025-03-01T12:01:00Z", "chunk 3: database unavailable")
    with pytest.raises(ValueError):
        ledger.finish_run("m", "DONE")


def test_finish_and_release_ends_the_run_and_frees_the_lock_in_one_write(ledger: RunLedger, clock):
    """A watcher that starts the next run as soon as /progress shows the last one ended must not meet a 409 for
    it: the run's end and the lock's release are one transaction. Where one part does not apply, the other
    still happens, as finish_run and release_lock alone would do it."""
    calls = []
    real = ledger.client.transact_write_items
    ledger.client.transact_write_items = lambda **kw: calls.append(kw) or real(**kw)

    ledger.create_run("a", "migration", dry_run=False)
    ledger.acquire_lock("a", "migration")
    clock.advance(60)
    assert ledger.finish_and_release("a", "SUCCEEDED") == (True, True)
    assert ledger.get_run("a")["status"] == "SUCCEEDED" and ledger.active_run() is None
    assert [len(c["TransactItems"]) for c in calls[1:]] == [2]  # one write: the end and the release

    assert ledger.finish_and_release("a", "FAILED") == (False, False)  # ended already, lock free: nothing
    assert ledger.get_run("a")["status"] == "SUCCEEDED"

    ledger.create_run("b", "migration", dry_run=False)
    ledger.acquire_lock("b", "migration")
    ledger.create_run("c", "migration", dry_run=False)
    assert ledger.finish_and_release("c", "FAILED", error="boom") == (True, False)  # b's lock stays b's
    assert ledger.active_run() == "b" and ledger.get_run("c")["error"] == "boom"
    ledger.finish_run("b", "ABORTED")
    assert ledger.finish_and_release("b", "FAILED") == (False, True)  # ended already: the lock still goes
    assert ledger.active_run() is None and ledger.get_run("b")["status"] == "ABORTED"
    with pytest.raises(UnknownRun):
        ledger.finish_and_release("nope", "FAILED")


def test_problems_are_stored_as_error_items(ledger: RunLedger):
    ledger.create_run("m", "migration", dry_run=False)
    result = chunk_result(3)
    result.problems.append(Problem("bad_session", "not JSON", session_id="abcdefgh…"))
    ledger.record_chunk("m", 3, result)
    first = raw_item(ledger, "RUN#m", "ERR#000000003#000000")
    second = raw_item(ledger, "RUN#m", "ERR#000000003#000001")
    assert first["user_id"] == {"N": "301"} and first["code"] == {"S": "user_locked"}
    assert second["session_id"] == {"S": "abcdefgh…"} and "user_id" not in second
    assert "expires_at" in first


def test_plan_problems_are_replaced_not_added(ledger: RunLedger):
    ledger.create_run("m", "migration", dry_run=False)
    ledger.record_plan_problems("m", [Problem("unknown_user", f"user {n} does not exist", user_id=n)
                                      for n in range(30)])  # more than one BatchWriteItem
    errors, _ = ledger.errors("m", limit=100)
    assert len(errors) == 30
    # A retried plan found fewer: what the first attempt wrote beyond them is gone.
    ledger.record_plan_problems("m", [Problem("unknown_user", "user 7 does not exist", user_id=7)])
    errors, cursor = ledger.errors("m", limit=100)
    assert errors == [{"user_id": 7, "code": "unknown_user", "message": "user 7 does not exist"}]
    assert cursor is None


def test_numbers_come_back_as_python_numbers(ledger: RunLedger):
    ledger.create_run("m", "migration", dry_run=False)
    ledger.set_plan("m", 3, 1)
    run = ledger.get_run("m")
    assert not any(isinstance(value, Decimal) for value in run.values())
    assert not any(isinstance(value, Decimal) for value in ledger.progress("m").values())


def test_chunk_numbers_are_checked(ledger: RunLedger):
    ledger.create_run("m", "migration", dry_run=False)
    with pytest.raises(ValueError):
        ledger.record_chunk("m", -1, chunk_result(0))


class ContendedTable:
    """The moto client, with what moto does not simulate: DynamoDB cancelling transactions on an item another
    transaction has in flight (every chunk's count writes the run item) or that it throttles. A transactional
    read meets the same conflict, so the ledger must not need one."""

    def __init__(self, client, refusals: int, code: str = "TransactionConflict") -> None:
        self._client, self.refusals, self.code = client, refusals, code

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _cancelled(self, operation: str, items: int):
        from botocore.exceptions import ClientError

        reasons = [{"Code": "None"}] * (items - 1) + [{"Code": self.code}]
        return ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                            "CancellationReasons": reasons}, operation)

    def transact_get_items(self, **kw):
        raise self._cancelled("TransactGetItems", len(kw["TransactItems"]))

    def transact_write_items(self, **kw):
        if self.refusals > 0:
            self.refusals -= 1
            raise self._cancelled("TransactWriteItems", len(kw["TransactItems"]))
        return self._client.transact_write_items(**kw)


@pytest.mark.parametrize("code", ["TransactionConflict", "ThrottlingError"])
def test_a_chunk_count_that_meets_contention_is_retried_and_counted_once(ledger: RunLedger, monkeypatch, code):
    import tokenmigration.aws.runs as runs

    monkeypatch.setattr(runs, "backoff", lambda attempt: None)
    ledger.create_run("m", "migration", dry_run=False)
    ledger._client = ContendedTable(ledger.client, refusals=3, code=code)
    assert ledger.record_chunk("m", 0, chunk_result(0)) is True
    assert ledger.record_chunk("m", 0, chunk_result(0)) is False  # read without a transaction: no conflict
    assert (ledger.get_run("m")["current_batch"], ledger.get_run("m")["migrated_users"]) == (1, 7)


def test_a_chunk_count_refused_every_time_is_a_transient_error_and_counts_nothing(ledger: RunLedger, monkeypatch):
    """After the ledger's own attempts, the step fails under a name the state machines retry."""
    import tokenmigration.aws.runs as runs
    from tokenmigration.aws.errors import TransientLedgerError

    monkeypatch.setattr(runs, "backoff", lambda attempt: None)
    ledger.create_run("m", "migration", dry_run=False)
    contended = ContendedTable(ledger.client, refusals=runs._MAX_ATTEMPTS)
    ledger._client = contended
    with pytest.raises(TransientLedgerError, match=r"chunk 4 of run m was not counted.*TransactionConflict"):
        ledger.record_chunk("m", 4, chunk_result(4))
    assert ledger.get_run("m")["current_batch"] == 0
    assert ledger.record_chunk("m", 4, chunk_result(4)) is True  # the state machine's retry counts it once
    assert ledger.get_run("m")["current_batch"] == 1


class ThrottledBatches:
    """The moto client, with DynamoDB's answer to a partition over its throughput: BatchWriteItem hands back
    (UnprocessedItems) what it did not write, here all of it for the first ``refusals`` calls."""

    def __init__(self, client, refusals: int) -> None:
        self._client, self.refusals = client, refusals

    def __getattr__(self, name):
        return getattr(self._client, name)

    def batch_write_item(self, **kw):
        if self.refusals > 0:
            self.refusals -= 1
            return {"UnprocessedItems": kw["RequestItems"]}
        return self._client.batch_write_item(**kw)


def test_a_chunks_problems_throttled_every_time_are_a_transient_error_and_count_nothing(ledger: RunLedger,
                                                                                        monkeypatch):
    import tokenmigration.aws.error_items as error_items
    from tokenmigration.aws.errors import TransientLedgerError

    monkeypatch.setattr(error_items, "backoff", lambda attempt: None)
    ledger.create_run("m", "migration", dry_run=False)
    ledger._client = ThrottledBatches(ledger.client, refusals=error_items._MAX_ATTEMPTS)
    with pytest.raises(TransientLedgerError, match="error items unwritten"):
        ledger.record_chunk("m", 2, chunk_result(2))
    assert ledger.get_run("m")["current_batch"] == 0  # problems first: the chunk was not counted
    ledger._client = ThrottledBatches(ledger.client._client, refusals=2)  # throttled twice, then written
    assert ledger.record_chunk("m", 2, chunk_result(2)) is True
    assert [e["user_id"] for e in ledger.errors("m")[0]] == [201]
