"""Give moto's DynamoDB the atomicity real DynamoDB has.

DynamoDB applies a conditional write atomically: of eight simultaneous ``PutItem`` calls with
``attribute_not_exists(pk)``, exactly one succeeds. The active-run lock and the exactly-once chunk counters
rest on that. moto evaluates the condition and stores the item as two Python steps with no lock between
them, so two threads can both pass the check and both write: the local twin (a threaded HTTP server plus
moto's state machine threads) and the concurrency tests would then see two winners that DynamoDB can never
produce. Serializing moto's item operations behind one lock restores the service's guarantee; nothing of
ours changes behaviour.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

# Every backend entry point that reads or writes items: a reader must not see an item half-updated either.
_ITEM_OPERATIONS = (
    "put_item", "update_item", "delete_item", "get_item", "query", "scan",
    "transact_write_items", "execute_statement", "execute_transaction", "batch_execute_statement",
)
_MARK = "__tokenmigration_atomic__"
_LOCK = threading.RLock()


def make_dynamodb_atomic() -> None:
    """Serialize moto's DynamoDB item operations (idempotent; process-wide, as moto's backends are)."""
    from moto.dynamodb.models import DynamoDBBackend

    with _LOCK:
        for name in _ITEM_OPERATIONS:
            method = getattr(DynamoDBBackend, name, None)
            if method is None or getattr(method, _MARK, False):
                continue
            setattr(DynamoDBBackend, name, _serialized(method))


def _serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    setattr(call, _MARK, True)
    return call
