"""Running a transaction again when the database chose it as a deadlock victim."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLOCK_ATTEMPTS = 3


def retry_deadlocks(attempt: Callable[[], T]) -> T:
    """Run ``attempt`` (one whole transaction) again when the database chose it as a deadlock victim.

    InnoDB can still pick a victim among workers on disjoint chunks (index pages, the auto-increment
    lock), and an exchange, a cleanup page and a rollback chunk may meet on one user's rows; the victim's
    transaction is rolled back whole, so running it again is safe (every caller is idempotent) and usually
    succeeds at once. PostgreSQL's deadlock_detected is treated the same.
    """
    for tries_left in range(DEADLOCK_ATTEMPTS - 1, -1, -1):
        try:
            return attempt()
        except Exception as exc:
            if tries_left == 0 or not is_deadlock(exc):
                raise
    raise AssertionError("unreachable")


def is_deadlock(exc: Exception) -> bool:
    text_ = str(exc)
    return "(1213," in text_ or "40P01" in text_
