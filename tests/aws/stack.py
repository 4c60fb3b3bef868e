"""The deployed application, in moto, built from template.yaml: the ``aws_stack`` fixture.

What a test gets (``aws_stack: AwsStack``), all read from template.yaml so tests and template cannot drift:

- the DynamoDB run table (AttributeDefinitions, KeySchema, BillingMode and TTL of ``RunsTable``);
- the SSM flag parameters (names and initial values of every ``AWS::SSM::Parameter``);
- the S3 chunk bucket, and moto secrets for the three Secrets Manager parameters;
- both state machines, from ``statemachine/*.asl.json`` with their ``DefinitionSubstitutions`` applied,
  executed by moto's Step Functions interpreter (``execute_state_machine``);
- every ``AWS::Serverless::Function`` as a fake Lambda ARN whose invocations, from the state machines or
  ``aws_stack.invoke(...)``, run OUR handler (``functions/<folder>/app.py``) in this process: moto's Lambda
  would need Docker. Invocations are serialised (one warm container per test), and each result goes
  through JSON as Lambda's would;
- the functions' environment (Globals + each function's Variables, ``!Ref``/``!Sub`` resolved) set in
  ``os.environ``, with ``DATABASE_URL`` / ``REDIS_URL`` pointing at the real test PostgreSQL and Redis
  (``pg_engine`` / ``redis_client`` of tests/conftest.py: tables recreated, Redis flushed, per test).
  ``DATABASE_URL`` set directly wins over ``DATABASE_SECRET_ARN`` (tokenmigration.aws.secrets), so the
  database secret is never read; the Express secrets and the app key are, from moto
  (``aws_stack.express_secrets``, ``aws_stack.app_key``).
- ``tokenmigration.aws.context.reset_services()`` before and after every test.

Helpers: ``start(kind, ...)`` creates the run and takes the lock as the API does, then StartExecution
named after the run; ``wait(arn)`` polls until the execution ends; ``invoke(function, event)`` runs a handler
as Lambda would; ``faults`` makes an invocation fail before or after the handler ran (Retry tests);
``retry_delays`` records the backoff the interpreter asked for (Retry waits are not slept in tests).
Runs in the autouse ``aws`` fixture's ``mock_aws`` (tests/aws/conftest.py).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core.config import default_user_config
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

from tokenmigration.aws.context import reset_services
from tokenmigration.aws.flags import FeatureFlags
from tokenmigration.aws.runs import RunLedger
from tokenmigration.local.template import (
    CfnLoader,
    Deployment,
    FakeLambdaContext,
    Function,
    Resolver,
    deploy,
    function_error,
    load_template,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"

EXPRESS_SECRETS = ("test-express-secret", "older-express-secret")
APP_KEY = "base64:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="  # 32 bytes, as `php artisan key:generate`


# --- template.yaml as data, and Lambda in process: tokenmigration.local.template (shared with the local twin) --


@dataclass
class Fault:
    """Make invocations of ``function`` fail: ``before`` the handler ran, or ``after`` (its work is done)."""

    function: str  # folder or logical id
    when: Callable[[dict[str, Any]], bool] = lambda event: True
    times: int = 1
    after: bool = False
    # Before: the handler "raises" this (errorType = class name). After: the invoke call itself fails as
    # Lambda's API does (Step Functions reports Lambda.<code>), as when the response never came back.
    error: BaseException | None = None
    service_error_code: str = "ServiceException"
    fired: int = 0


# --- the stack -----------------------------------------------------------------------------------------


@dataclass
class AwsStack:
    template: dict[str, Any]
    env: dict[str, str]
    table_name: str
    bucket: str
    flags_path: str
    state_machines: dict[str, str]  # "migration" / "rollback" -> ARN
    functions: dict[str, Function]  # logical id -> Function
    parameters: dict[str, Any]
    sfn: Any
    dynamodb: Any
    ssm: Any
    s3: Any
    ledger: RunLedger
    flags: FeatureFlags
    deployment: Deployment
    express_secrets: tuple[str, ...] = EXPRESS_SECRETS
    app_key: str = APP_KEY
    faults: list[Fault] = field(default_factory=list)
    invocations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    retry_delays: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _in_flight: int = 0

    # --- functions --------------------------------------------------------------------------------------

    def function(self, name: str) -> Function:
        """By logical id (``PlanFunction``), folder (``wf_plan``), physical name or ARN."""
        return self.deployment.function(name)

    def handler(self, name: str) -> Callable[[dict[str, Any], Any], Any]:
        return self.deployment.handler(name)

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        """Run the function's handler as Lambda would: one at a time, the result through JSON."""
        fn = self.function(name)
        with self._lock:
            self._in_flight += 1
            try:
                self.invocations.append((fn.folder, copy.deepcopy(event)))
                result = self.handler(name)(copy.deepcopy(event), FakeLambdaContext(fn.name, fn.arn, fn.memory))
                return json.loads(json.dumps(result))
            finally:
                self._in_flight -= 1

    def invocations_of(self, name: str) -> list[dict[str, Any]]:
        folder = self.function(name).folder
        return [event for f, event in self.invocations if f == folder]

    def _lambda_api(self, parameters: dict[str, Any], region: str, state_credentials: Any) -> dict[str, Any]:
        """moto's Step Functions interpreter calls this where it would call Lambda's Invoke API."""
        fn = self.function(parameters["FunctionName"])
        raw = parameters.get("Payload") or b"{}"
        event = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        fault = self._fault_for(fn, event, after=False)
        if fault is not None:
            return function_error(fault.error or RuntimeError("injected fault"))
        try:
            payload = self.invoke(fn.folder, event)
        except Exception as error:
            return function_error(error)
        fault = self._fault_for(fn, event, after=True)
        if fault is not None:
            raise ClientError({"Error": {"Code": fault.service_error_code, "Message": "injected after the handler ran"},
                               "ResponseMetadata": {"HTTPStatusCode": 500, "RequestId": str(uuid.uuid4())}},
                              "Invoke")
        return {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": payload}

    def _fault_for(self, fn: Function, event: dict[str, Any], after: bool) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (fault.function in (fn.folder, fn.logical_id) and fault.after == after
                        and fault.fired < fault.times and fault.when(event)):
                    fault.fired += 1
                    return fault
        return None

    # --- runs -------------------------------------------------------------------------------------------

    def start(self, kind: str = "migration", *, run_id: str | None = None, dry_run: bool = False,
              chunk_size: int = 2000, max_concurrency: int = 10) -> str:
        """What POST /start (or /rollback) does: lock, run item, StartExecution named after the run."""
        run_id = run_id or f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.ledger.acquire_lock(run_id, kind)  # type: ignore[arg-type]
        self.ledger.create_run(run_id, kind, dry_run)  # type: ignore[arg-type]
        arn = self.sfn.start_execution(
            stateMachineArn=self.state_machines[kind], name=run_id,
            input=json.dumps({"run_id": run_id, "kind": kind, "dry_run": dry_run, "chunk_size": chunk_size,
                              "max_concurrency": max_concurrency}),
        )["executionArn"]
        self.ledger.set_execution(run_id, arn)
        return arn

    def wait(self, execution_arn: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll until the execution has ended (moto runs it on a thread of its own); its description.

        An ending the template's execution-status rule matches is delivered to that rule's function, as
        EventBridge would (moto's Step Functions emits no events).
        """
        deadline = time.monotonic() + timeout
        while True:
            described = self.sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                self.deliver_status_change(described)
                return described
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution_arn} still RUNNING; history: {self.history(execution_arn)[-5:]}")
            time.sleep(0.02)

    def status_rules(self) -> list[tuple[str, dict[str, Any]]]:
        """(function logical id, event pattern) of every EventBridge rule on a function in the template."""
        rules = []
        for logical_id, resource in self.template["Resources"].items():
            for event in (resource.get("Properties", {}).get("Events") or {}).values():
                if event.get("Type") == "EventBridgeRule":
                    rules.append((logical_id, event["Properties"]["Pattern"]))
        return rules

    def deliver_status_change(self, described: dict[str, Any]) -> list[Any]:
        """Send "Step Functions Execution Status Change" to every rule whose pattern matches this ending."""
        event = {
            "version": "0", "id": str(uuid.uuid4()), "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states", "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.env.get("AWS_DEFAULT_REGION", "us-east-1"), "resources": [described["executionArn"]],
            "detail": {
                "executionArn": described["executionArn"], "stateMachineArn": described["stateMachineArn"],
                "name": described["name"], "status": described["status"], "input": described.get("input"),
                "error": described.get("error"), "cause": described.get("cause"),
            },
        }
        answers = []
        for logical_id, pattern in self.status_rules():
            wanted = pattern.get("detail", {})
            if (event["source"] in pattern.get("source", []) and event["detail-type"] in pattern.get("detail-type", [])
                    and described["status"] in wanted.get("status", [])):
                answers.append(self.invoke(logical_id, event))
        return answers

    def run(self, kind: str = "migration", **options: Any) -> dict[str, Any]:
        """start + wait, with the run id in the result."""
        described = self.wait(self.start(kind, **options))
        described["run_id"] = described["name"]
        return described

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        return self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]

    def state_names(self, execution_arn: str) -> list[str]:
        """Top-level states entered, in order (the map's children are not in the parent's history)."""
        return [e["stateEnteredEventDetails"]["name"] for e in self.history(execution_arn)
                if "stateEnteredEventDetails" in e]

    def flag_values(self) -> dict[str, str]:
        params = self.ssm.get_parameters_by_path(Path=self.flags_path.rstrip("/"))["Parameters"]
        return {p["Name"][len(self.flags_path):]: p["Value"] for p in params}

    def stop_everything(self, timeout: float = 30.0) -> None:
        """Stop running executions and wait for in-flight handlers: nothing may touch the next test's data."""
        for arn in self.state_machines.values():
            for execution in self.sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]:
                with contextlib.suppress(ClientError):  # it ended meanwhile
                    self.sfn.stop_execution(executionArn=execution["executionArn"])
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.02)


def build_stack(monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str,
                parameter_overrides: dict[str, Any] | None = None) -> AwsStack:
    template = load_template()
    # Execute state machines for real; must be set before the first Step Functions call.
    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})

    deployment = deploy(database_url, redis_url, express_secrets=EXPRESS_SECRETS, app_key=APP_KEY,
                        parameter_overrides=parameter_overrides, root=ROOT, template=template, extra_env={
                            # Test speed and determinism, not behaviour: no X-Ray outside Lambda, flags re-read
                            # at once, a user row held by another transaction is reported after 200 ms, not 5 s.
                            "POWERTOOLS_TRACE_DISABLED": "true",
                            "FLAGS_MAX_AGE_SECONDS": "0",
                            "MIGRATION_LOCK_TIMEOUT_MS": "200",
                        })
    env = deployment.env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dynamodb, ssm = boto3.client("dynamodb"), boto3.client("ssm")
    table_name = deployment.table_name
    return AwsStack(
        template=template, env=env, table_name=table_name, bucket=env["CHUNKS_BUCKET"],
        flags_path=env["FLAGS_PATH"], state_machines=deployment.state_machines, functions=deployment.functions,
        parameters=deployment.parameters, sfn=boto3.client("stepfunctions"), dynamodb=dynamodb, ssm=ssm,
        s3=boto3.client("s3"),
        ledger=RunLedger(table_name, client=dynamodb),
        flags=FeatureFlags(env["FLAGS_PATH"], max_age=0, ssm_client=ssm),
        deployment=deployment,
    )


@pytest.fixture
def aws_stack(monkeypatch: pytest.MonkeyPatch, pg_engine, redis_client, redis_url: str) -> Iterator[AwsStack]:
    """template.yaml deployed into moto, its Lambdas running our handlers against the test PostgreSQL/Redis."""
    stack = build_stack(monkeypatch, pg_engine.url.render_as_string(hide_password=False), redis_url)
    monkeypatch.setattr(lambda_eval_utils, "_invoke_lambda_function", stack._lambda_api)
    # Retry waits (IntervalSeconds, BackoffRate, JitterStrategy) are recorded, not slept.
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=stack.retry_delays.append))
    reset_services()
    try:
        yield stack
    finally:
        stack.stop_everything()
        reset_services()


def load_event(name: str) -> dict[str, Any]:
    """events/<name>.json"""
    return json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))


__all__ = ["AwsStack", "CfnLoader", "Fault", "Function", "Resolver", "aws_stack", "build_stack", "load_event",
           "load_template"]
