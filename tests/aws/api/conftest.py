"""The API functions end to end: real handlers (functions/api_*/app.py), API Gateway events from events/,
real PostgreSQL and Redis, and moto (autouse ``aws`` fixture of tests/aws/conftest.py) for DynamoDB, SSM,
S3 and Step Functions."""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

# Before any handler module is imported: Powertools reads these when the Tracer and Metrics are created.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TokenMigrationTest")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tokenmigration")

from tokenmigration.api import observability
from tokenmigration.aws.context import reset_services, services
from tokenmigration.aws.flags import FeatureFlags
from tokenmigration.aws.runs import RunLedger
from tokenmigration.aws.table_schema import create_table

ROOT = Path(__file__).resolve().parents[3]
FUNCTIONS = ROOT / "functions"
EVENTS = ROOT / "events"

API_FUNCTIONS = ("api_start", "api_progress", "api_complete", "api_rollback", "api_stats", "api_cleanup",
                 "api_errors", "api_migrate_user", "api_rollback_user", "api_exchange",
                 "api_bridge")

TABLE = "tokenmigration-api-test"
FLAGS_PATH = "/tokenmigration/test/"
BUCKET = "tokenmigration-chunks-test"
ROLE_ARN = "arn:aws:iam::123456789012:role/tokenmigration-states"
# The smallest valid definition: these tests start executions, the workflow tests run them.
DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})

_UNCHANGED: Any = object()


def load_handler(name: str, module_name: str | None = None) -> ModuleType:
    """Import functions/<name>/app.py as its own module (every function's file is called app.py)."""
    path = FUNCTIONS / name / "app.py"
    spec = importlib.util.spec_from_file_location(module_name or f"functions_{name}_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_handlers: dict[str, ModuleType] = {}


def handler(name: str) -> ModuleType:
    if name not in _handlers:
        _handlers[name] = load_handler(name)
    return _handlers[name]


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))


@dataclass
class LambdaContext:
    function_name: str = "tokenmigration-api"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:tokenmigration-api"
    aws_request_id: str = "6f1c3b2a-0d4e-4f5a-9b8c-7d6e5f4a3b2c"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


@dataclass
class Result:
    status: int
    body: Any
    raw: dict[str, Any]
    event: dict[str, Any]

    @property
    def text(self) -> str:
        return self.raw.get("body") or ""


def build_event(name: str, *, body: Any = _UNCHANGED, user_id: Any = _UNCHANGED, query: Any = _UNCHANGED,
                headers: dict[str, str] | None = None, drop_headers: tuple[str, ...] = (),
                base64: bool = False) -> dict[str, Any]:
    """The function's sample event with changes: ``body`` (str, or anything JSON), ``user_id`` (path text)..."""
    event = copy.deepcopy(load_event(name))
    if body is not _UNCHANGED:
        event["body"] = body if body is None or isinstance(body, str) else json.dumps(body)
    if base64:
        event["isBase64Encoded"] = True
    if user_id is not _UNCHANGED:
        event["pathParameters"] = {"userId": str(user_id)}
        suffix = "/rollback" if name == "api_rollback_user" else ""
        event["path"] = f"/auth/migration/user/{user_id}{suffix}"
        event["requestContext"]["path"] = "/dev" + event["path"]
    if query is not _UNCHANGED:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    for header in drop_headers:
        event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() != header.lower()}
        event["multiValueHeaders"] = {k: v for k, v in event["multiValueHeaders"].items()
                                      if k.lower() != header.lower()}
    for key, value in (headers or {}).items():
        event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() != key.lower()}
        event["multiValueHeaders"] = {k: v for k, v in event["multiValueHeaders"].items() if k.lower() != key.lower()}
        event["headers"][key] = value
        event["multiValueHeaders"][key] = [value]
    return event


def invoke(name: str, event: dict[str, Any] | None = None, module: ModuleType | None = None, **changes: Any
           ) -> Result:
    """Run functions/<name>/app.py's lambda_handler on (a variant of) its sample event."""
    event = build_event(name, **changes) if event is None else event
    raw = (module or handler(name)).lambda_handler(event, LambdaContext(function_name=name))
    assert isinstance(raw, dict) and isinstance(raw.get("statusCode"), int), raw
    text = raw.get("body") or ""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = text
    return Result(raw["statusCode"], body, raw, event)


@dataclass
class Stack:
    """The moto resources and the settings the functions read from the environment."""

    table: str
    flags_path: str
    migration_arn: str
    rollback_arn: str
    dynamodb: Any
    sfn: Any
    ssm: Any
    ledger: RunLedger
    flags: FeatureFlags
    database_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def executions(self, arn: str | None = None) -> list[dict[str, Any]]:
        found = self.sfn.list_executions(stateMachineArn=arn or self.migration_arn)["executions"]
        return [self.sfn.describe_execution(executionArn=e["executionArn"]) for e in found]


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, pg_engine, redis_client, redis_url: str) -> Iterator[Stack]:
    dynamodb = boto3.client("dynamodb")
    create_table(dynamodb, TABLE)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    sfn = boto3.client("stepfunctions")
    migration_arn = sfn.create_state_machine(name="tokenmigration-migration", definition=DEFINITION,
                                             roleArn=ROLE_ARN)["stateMachineArn"]
    rollback_arn = sfn.create_state_machine(name="tokenmigration-rollback", definition=DEFINITION,
                                            roleArn=ROLE_ARN)["stateMachineArn"]
    database_url = pg_engine.url.render_as_string(hide_password=False)
    env = {
        "TABLE_NAME": TABLE,
        "FLAGS_PATH": FLAGS_PATH,
        "MIGRATION_STATE_MACHINE_ARN": migration_arn,
        "ROLLBACK_STATE_MACHINE_ARN": rollback_arn,
        "CHUNKS_BUCKET": BUCKET,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "TokenMigrationTest",
        "MIGRATION_LOCK_TIMEOUT_MS": "200",
        # Flags changed behind the functions' back (as the workflow does) are seen at once.
        "FLAGS_MAX_AGE_SECONDS": "0",
        # The exchange verifies connect.sid cookies with these (first signs, any verifies).
        "EXPRESS_SESSION_SECRETS": "current-express-secret,previous-express-secret",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("DATABASE_SECRET_ARN", "EXPRESS_SECRETS_ARN", "APP_KEY_SECRET_ARN", "POWERTOOLS_DEV",
                 "LARAVEL_APP_KEY", "LARAVEL_SESSION_COOKIE"):
        monkeypatch.delenv(name, raising=False)
    reset_services()
    ssm = boto3.client("ssm")
    yield Stack(TABLE, FLAGS_PATH, migration_arn, rollback_arn, dynamodb, sfn, ssm,
                RunLedger(TABLE, client=dynamodb), FeatureFlags(FLAGS_PATH, max_age=0, ssm_client=ssm), database_url)
    reset_services()


@pytest.fixture
def warm(stack: Stack) -> Stack:
    """Build the shared services once (a warm container), so threads never create boto3 clients at once."""
    svc = services()
    for name in ("ledger", "flags", "stepfunctions", "dynamodb", "engine", "migrator"):
        getattr(svc, name)
    return stack


class LogCapture:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def audit(self) -> list[dict[str, Any]]:
        return [record["audit"] for record in self.records() if "audit" in record]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Everything the functions' Powertools logger writes during the test."""
    stream = io.StringIO()
    log_handler = observability.logger.registered_handler
    previous = log_handler.setStream(stream)
    try:
        yield LogCapture(stream)
    finally:
        log_handler.setStream(previous)


class Api:
    """What the tests call: ``api.invoke("api_start", body={...})`` and friends."""

    functions = API_FUNCTIONS
    invoke = staticmethod(invoke)
    event = staticmethod(build_event)
    sample_event = staticmethod(load_event)
    handler = staticmethod(handler)
    load_handler = staticmethod(load_handler)


@pytest.fixture
def api(stack: Stack) -> Api:
    return Api()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Read-only routes count no metric; observability.py silences Powertools' warning about that, but
    # pytest resets warning filters for every test.
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:No application metrics to publish"))
