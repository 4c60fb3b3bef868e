"""The table the code expects is the one ``table_schema`` creates (and the SAM template must declare)."""

from __future__ import annotations

from tokenmigration.aws.table_schema import (
    ATTRIBUTE_DEFINITIONS,
    KEY_SCHEMA,
    TABLE_PROPERTIES,
    TTL_ATTRIBUTE,
)


def test_created_table_matches_the_definition(dynamodb):
    name = dynamodb.list_tables()["TableNames"][0]
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == KEY_SCHEMA == [
        {"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(ATTRIBUTE_DEFINITIONS, key=str)
    assert all(a["AttributeType"] == "S" for a in table["AttributeDefinitions"])
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    assert TTL_ATTRIBUTE == "expires_at"
    assert TABLE_PROPERTIES["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
