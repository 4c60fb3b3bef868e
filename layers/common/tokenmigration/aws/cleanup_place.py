"""Where the scheduled cleanup stopped: one item, ``CLEANUP / PLACE``, in the run ledger's table.

At 100 million users one walk of the ledger takes longer than a Lambda may run; each scheduled invocation
goes on from the user id the previous one reached, and the item goes when a walk is complete (the next one
starts from the first user). No TTL: a place must not vanish between two invocations.
"""

from __future__ import annotations

from typing import Any

from tokenmigration.aws.dynamo import from_item, to_item
from tokenmigration.aws.ledger_keys import CLEANUP_PLACE_KEY


class CleanupPlace:
    def __init__(self, client: Any, table_name: str) -> None:
        self.client, self.table_name = client, table_name

    def get(self) -> int | None:
        """The user id the last walk stopped after, or None: start from the first user."""
        item = self.client.get_item(TableName=self.table_name, Key=to_item(CLEANUP_PLACE_KEY),
                                    ConsistentRead=True).get("Item")
        value = from_item(item).get("after_user_id") if item else None
        return int(value) if value is not None else None

    def save(self, after_user_id: int | None, *, at: str) -> None:
        """Remember where to go on; None (the walk is complete) forgets the place."""
        if after_user_id is None:
            self.client.delete_item(TableName=self.table_name, Key=to_item(CLEANUP_PLACE_KEY))
            return
        self.client.put_item(TableName=self.table_name,
                             Item=to_item({**CLEANUP_PLACE_KEY, "after_user_id": int(after_user_id), "saved_at": at}))
