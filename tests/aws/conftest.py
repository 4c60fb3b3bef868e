"""Everything AWS is moto, in memory: no network, no real credentials, no sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

# template.yaml deployed into moto, its Lambdas running our handlers: the ``aws_stack`` fixture (stack.py).
from stack import aws_stack  # noqa: F401

from tokenmigration.aws.runs import RunLedger
from tokenmigration.aws.table_schema import create_table
from tokenmigration.local.moto_atomicity import make_dynamodb_atomic

TABLE = "tokenmigration-runs-test"


@pytest.fixture(autouse=True)
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Fake credentials, and nothing from this machine's AWS config can point boto3 elsewhere.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "POWERTOOLS_PARAMETERS_MAX_AGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    # Powertools keeps module-level providers (and their boto3 clients) across calls: start clean.
    parameters.clear_caches()
    # Conditional writes race in plain moto; DynamoDB's do not, and the concurrency tests rely on that.
    make_dynamodb_atomic()
    with mock_aws():
        yield
    parameters.clear_caches()


class Clock:
    """An injected clock the tests move by hand (the ledger's timestamps and TTLs come from it)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def dynamodb() -> Any:
    client = boto3.client("dynamodb")
    create_table(client, TABLE)
    return client


@pytest.fixture
def ledger(dynamodb: Any, clock: Clock) -> RunLedger:
    return RunLedger(TABLE, retention_days=90, client=dynamodb, clock=clock)
