"""The active-run lock: one conditional write decides, releasing someone else's lock does nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tokenmigration.aws.errors import RunInProgress
from tokenmigration.aws.runs import RunLedger


def test_eight_simultaneous_acquirers_one_winner(ledger: RunLedger):
    contenders = [f"migration-{n}" for n in range(8)]
    start = threading.Barrier(len(contenders))

    def attempt(run_id: str) -> str | None:
        start.wait()  # all eight call at once
        try:
            ledger.acquire_lock(run_id, "migration")
        except RunInProgress as refused:
            return refused.active_run_id
        return None

    with ThreadPoolExecutor(max_workers=len(contenders)) as pool:
        outcomes = dict(zip(contenders, pool.map(attempt, contenders), strict=True))

    winners = [run_id for run_id, holder in outcomes.items() if holder is None]
    assert len(winners) == 1
    # Every loser is told who holds it.
    assert {holder for holder in outcomes.values() if holder is not None} == set(winners)
    assert ledger.active_run() == winners[0]


def test_acquire_is_one_conditional_write(ledger: RunLedger, dynamodb):
    calls: list[tuple[str, dict]] = []
    dynamodb.meta.events.register("provide-client-params.dynamodb.*",
                                  lambda params, model, **_: calls.append((model.name, params)))
    ledger.acquire_lock("migration-a", "migration")
    with pytest.raises(RunInProgress) as refused:
        ledger.acquire_lock("rollback-b", "rollback")
    assert refused.value.active_run_id == "migration-a"
    # No read before the write (check-then-set), and the refusal needed no second read either.
    assert [name for name, _ in calls] == ["PutItem", "PutItem"]
    assert all("attribute_not_exists(pk)" in params["ConditionExpression"] for _, params in calls)


def test_the_holder_may_acquire_again(ledger: RunLedger):
    ledger.acquire_lock("migration-a", "migration")
    ledger.acquire_lock("migration-a", "migration")  # a retried start
    assert ledger.active_run() == "migration-a"


def test_release_by_a_non_holder_is_a_no_op(ledger: RunLedger):
    assert ledger.release_lock("nobody") is False  # no lock at all
    ledger.acquire_lock("migration-a", "migration")
    assert ledger.release_lock("migration-b") is False
    assert ledger.active_run() == "migration-a"
    assert ledger.release_lock("migration-a") is True
    assert ledger.active_run() is None
    assert ledger.release_lock("migration-a") is False  # twice is fine
    ledger.acquire_lock("rollback-c", "rollback")
    assert ledger.active_run() == "rollback-c"


def test_kind_is_checked(ledger: RunLedger):
    with pytest.raises(ValueError, match="kind"):
        ledger.acquire_lock("x", "cleanup")


class WatchedLock:
    """moto_atomicity's lock, telling when a second caller has to wait for it."""

    def __init__(self, inner, contended: threading.Event) -> None:
        self.inner, self.contended = inner, contended

    def __enter__(self) -> WatchedLock:
        if not self.inner.acquire(blocking=False):
            self.contended.set()
            self.inner.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.release()


def test_the_lock_holds_even_when_both_writers_read_before_either_writes(ledger: RunLedger, monkeypatch):
    """DynamoDB's conditional write is atomic; plain moto's is a read, a check and a store. The first contender
    is held right after its read until the second is in too: either waiting for moto_atomicity's lock (what
    DynamoDB's atomicity means here) or past its own read (where plain moto lets both read "no lock", and both
    win). The race is forced, never left to the scheduler: if the second never comes in, the test fails."""
    from moto.dynamodb.models.table import Table

    from tokenmigration.local import moto_atomicity

    second_is_in = threading.Event()
    monkeypatch.setattr(moto_atomicity, "_LOCK", WatchedLock(moto_atomicity._LOCK, second_is_in))
    readers: list[str] = []
    forced: list[bool] = []
    read = Table.get_item

    def get_item_then_wait(self, *args, **kwargs):
        current = read(self, *args, **kwargs)
        readers.append(threading.current_thread().name)
        if len(readers) == 1:
            forced.append(second_is_in.wait(timeout=60))  # a bound for a hung test, not a timing assertion
        else:
            second_is_in.set()
        return current

    monkeypatch.setattr(Table, "get_item", get_item_then_wait)

    def attempt(run_id: str) -> bool:
        try:
            ledger.acquire_lock(run_id, "migration")
        except RunInProgress:
            return False
        return True

    with ThreadPoolExecutor(max_workers=2) as pool:
        won = list(pool.map(attempt, ["migration-a", "migration-b"]))

    assert forced == [True], "the second contender never came in while the first was held: no race was forced"
    assert sorted(won) == [False, True]
