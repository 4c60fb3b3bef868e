"""Small helpers for the low-level DynamoDB client: attribute values in, plain Python out."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item from plain values (str, int, bool, None, lists, dicts)."""
    return {key: _serializer.serialize(value) for key, value in values.items()}


def av(value: Any) -> dict[str, Any]:
    return _serializer.serialize(value)


def plain(value: Any) -> Any:
    """Decimals (DynamoDB numbers) become int or float, recursively, so results are JSON-ready."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [plain(v) for v in value]
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: plain(_deserializer.deserialize(value)) for key, value in item.items()}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC ending in Z, whole seconds: the API's timestamp format."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    # fromisoformat reads the trailing Z since Python 3.11.
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cancellation_codes(error: Any) -> list[str]:
    """The per-item reason codes of a TransactionCanceledException ("None" for items that were fine)."""
    reasons = error.response.get("CancellationReasons") or []
    return [str(reason.get("Code", "None")) for reason in reasons]


def error_code(error: Any) -> str:
    """The AWS error code of a botocore ClientError."""
    return str(error.response.get("Error", {}).get("Code", ""))


def backoff(attempt: int) -> None:
    # Full jitter: concurrent functions that collided (on the run item, on throughput) spread out.
    time.sleep(random.uniform(0, min(0.05 * 2**attempt, 2.0)))
