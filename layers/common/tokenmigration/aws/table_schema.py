"""The run ledger's DynamoDB table: the one definition the code, the tests and the SAM template share.

One table, string keys ``pk`` (HASH) / ``sk`` (RANGE), on-demand, TTL on ``expires_at`` (epoch seconds).
Items (see ``runs.py``): ``LOCK/ACTIVE``, ``LATEST/RUN``, ``RUN#<id>/RUN``, ``RUN#<id>/CHUNK#<n>``,
``RUN#<id>/ERR#<n>#<seq>``, ``RUN#<id>/ERR#PLAN#<seq>`` and ``CLEANUP/PLACE`` (cleanup_place.py).
"""

from __future__ import annotations

from typing import Any

PARTITION_KEY = "pk"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expires_at"
BILLING_MODE = "PAY_PER_REQUEST"

ATTRIBUTE_DEFINITIONS: list[dict[str, str]] = [
    {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
    {"AttributeName": SORT_KEY, "AttributeType": "S"},
]
KEY_SCHEMA: list[dict[str, str]] = [
    {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
    {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
]

# The Properties of an AWS::DynamoDB::Table (less TableName), so a template check is a dict comparison.
TABLE_PROPERTIES: dict[str, Any] = {
    "AttributeDefinitions": ATTRIBUTE_DEFINITIONS,
    "KeySchema": KEY_SCHEMA,
    "BillingMode": BILLING_MODE,
    "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
}


def create_table(client: Any, table_name: str) -> None:
    """Create the table as the template does (tests, local development); waits until it is active."""
    client.create_table(
        TableName=table_name,
        AttributeDefinitions=ATTRIBUTE_DEFINITIONS,
        KeySchema=KEY_SCHEMA,
        BillingMode=BILLING_MODE,
    )
    client.get_waiter("table_exists").wait(TableName=table_name)
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
    )
