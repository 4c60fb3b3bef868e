"""A run's problems as DynamoDB items, and paging through them.

Keys are deterministic (``<prefix><seq, 6 digits>``, the prefix naming the chunk or the plan), so writing
the problems of a retried chunk overwrites the earlier attempt's items instead of adding to them, and
what the earlier attempt wrote beyond the new list is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from tokenmigration.aws.cursor import decode_cursor, encode_cursor
from tokenmigration.aws.dynamo import av, backoff, from_item, to_item
from tokenmigration.aws.errors import TransientLedgerError
from tokenmigration.aws.ledger_keys import ERROR_PREFIX, key
from tokenmigration.aws.table_schema import TTL_ATTRIBUTE
from tokenmigration.engine.results import Problem

logger = logging.getLogger(__name__)

MAX_PAGE = 100
MAX_PER_PREFIX = 10**6  # the six digits of the sequence number
_MAX_MESSAGE_CHARS = 1000  # a problem message is one line; keeps any one item far below DynamoDB's 400 KB
_BATCH_WRITE_SIZE = 25  # BatchWriteItem's limit
_MAX_ATTEMPTS = 8


class ErrorItems:
    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def replace(self, pk: str, prefix: str, problems: list[Problem], expires_at: int) -> None:
        """Store ``problems`` under ``prefix`` and drop what an earlier attempt left beyond them."""
        if len(problems) > MAX_PER_PREFIX:
            logger.warning("%s %s: %d problems, only the first %d are stored", pk, prefix, len(problems),
                           MAX_PER_PREFIX)
            problems = problems[:MAX_PER_PREFIX]
        items = [_item(pk, f"{prefix}{seq:06d}", problem, expires_at) for seq, problem in enumerate(problems)]
        written = {item["sk"] for item in items}
        stale = [sk for sk in self._sort_keys(pk, prefix) if sk not in written]
        requests = [{"PutRequest": {"Item": to_item(item)}} for item in items]
        requests += [{"DeleteRequest": {"Key": key(pk, sk)}} for sk in stale]
        for start in range(0, len(requests), _BATCH_WRITE_SIZE):
            self._batch_write(requests[start:start + _BATCH_WRITE_SIZE])

    def page(self, pk: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` api.md error objects after ``cursor``, and the cursor of the next page (or None)."""
        check_page_args(limit, cursor)
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": av(pk), ":prefix": av(ERROR_PREFIX)},
            # One more than asked: whether there is a next page is known now, so the last page is never empty.
            "Limit": limit + 1,
        }
        if cursor is not None:
            query["ExclusiveStartKey"] = key(pk, decode_cursor(cursor, ERROR_PREFIX))
        response = self.client.query(**query)
        items = [from_item(item) for item in response.get("Items", [])]
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1]["sk"])
        elif response.get("LastEvaluatedKey"):  # the 1 MB page limit cut the query short
            next_cursor = encode_cursor(response["LastEvaluatedKey"]["sk"]["S"])
        return [_api_error(item) for item in items], next_cursor

    def _sort_keys(self, pk: str, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": av(pk), ":prefix": av(prefix)},
            ProjectionExpression="sk",
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                yield item["sk"]["S"]

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        pending: dict[str, Any] = {self.table_name: requests}
        for attempt in range(_MAX_ATTEMPTS):
            pending = self.client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            if not pending:
                return
            backoff(attempt)  # throttled: DynamoDB hands back what it did not write
        # A chunk's problems all go to its run's partition: a chunk with thousands of them can meet that
        # partition's throughput limit. The state machine retries the step (the items have fixed keys).
        raise TransientLedgerError(f"DynamoDB left {len(pending.get(self.table_name, []))} error items unwritten "
                                   f"after {_MAX_ATTEMPTS} attempts (throttled)")


def check_page_args(limit: int, cursor: str | None) -> None:
    """ValueError for a limit outside 1..100, BadCursor for a cursor this service did not hand out."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer in 1..{MAX_PAGE}")
    if cursor is not None:
        decode_cursor(cursor, ERROR_PREFIX)


def _item(pk: str, sk: str, problem: Problem, expires_at: int) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": pk, "sk": sk, "code": problem.code,
                            "message": problem.message[:_MAX_MESSAGE_CHARS], TTL_ATTRIBUTE: expires_at}
    if problem.user_id is not None:
        item["user_id"] = problem.user_id
    if problem.session_id is not None:
        item["session_id"] = problem.session_id  # redacted by the engine
    return item


def _api_error(item: dict[str, Any]) -> dict[str, Any]:
    """The api.md error object: {user_id, session_id?, code, message}."""
    error: dict[str, Any] = {"user_id": item.get("user_id")}
    if item.get("session_id") is not None:
        error["session_id"] = item["session_id"]
    error["code"] = item["code"]
    error["message"] = item["message"]
    return error
