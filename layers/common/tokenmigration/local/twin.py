"""The deployed application on this machine: template.yaml's resources in moto (in-process ``mock_aws``), the
state machines run by moto's Step Functions interpreter, and every Lambda (API routes and workflow steps) run
by our own handler in this process, against the configured (or embedded) database and Redis."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import os
import secrets
import socket
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tokenmigration.local.moto_atomicity import make_dynamodb_atomic
from tokenmigration.local.template import ACCOUNT, Deployment, FakeLambdaContext, deploy, function_error

DEFAULT_EXPRESS_SECRET = "tokenmigration-local-express-secret"
# Variables that describe the deployment: the template's values win over the caller's environment.
_DEPLOYMENT_VARIABLES = ("TABLE_NAME", "FLAGS_PATH", "CHUNKS_BUCKET", "MIGRATION_STATE_MACHINE_ARN",
                         "ROLLBACK_STATE_MACHINE_ARN", "DATABASE_SECRET_ARN", "EXPRESS_SECRETS_ARN",
                         "APP_KEY_SECRET_ARN", "AWS_REGION", "AWS_DEFAULT_REGION", "DATABASE_URL", "REDIS_URL")
# Nothing from this machine's AWS configuration may send the in-process clients anywhere but moto.
_AWS_REDIRECTS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN",
                  "AWS_WEB_IDENTITY_TOKEN_FILE")


def random_credentials() -> tuple[str, str]:
    """An access key id and secret shaped like IAM's (AKIA + 16, 40 characters)."""
    alphabet = string.ascii_uppercase + string.digits
    key_id = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    secret = base64.b64encode(secrets.token_bytes(30)).decode().replace("+", "A").replace("/", "B")
    return key_id, secret


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedRedis:
    """fakeredis behind a real TCP port, so every thread (and moto's) reaches the same data by REDIS_URL."""

    server: Any
    thread: threading.Thread
    url: str

    @classmethod
    def start(cls, host: str = "127.0.0.1") -> EmbeddedRedis:
        from fakeredis import TcpFakeServer

        server = TcpFakeServer((host, 0))
        server.daemon_threads = True
        server.block_on_close = False
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name="embedded-redis", daemon=True)
        thread.start()
        return cls(server, thread, f"redis://{host}:{server.server_address[1]}/0")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LocalTwin:
    """Start with ``with LocalTwin(...) as twin:`` (or start()/stop()); ``twin.invoke(logical_id, event)`` runs
    a function as Lambda would. Invocations are serialised per side (one warm container for the API's functions,
    one for the workflow's), so a request is never stuck behind a chunk of a running migration."""

    def __init__(self, *, database_url: str | None = None, redis_url: str | None = None, region: str | None = None,
                 account: str = ACCOUNT, data_dir: Path | str = ".tokenmigration", sqlite_name: str = "local.sqlite",
                 log_level: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.database_url = database_url if database_url is not None else (os.environ.get("DATABASE_URL") or None)
        self.redis_url = redis_url if redis_url is not None else (os.environ.get("REDIS_URL") or None)
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
        self.account = account
        self.data_dir = Path(data_dir)
        self.sqlite_name = sqlite_name
        self.log_level = log_level
        self.extra_env = dict(extra_env or {})
        self.database_label = "DATABASE_URL"
        self.redis_label = "REDIS_URL"
        self.deployment: Deployment | None = None
        self.invocations = 0
        self._lock = threading.Lock()
        self._api_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._api_functions: set[str] = set()
        self._in_flight = 0
        self._embedded_redis: EmbeddedRedis | None = None
        self._undo: list[Callable[[], None]] = []
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()
        self._delivered: set[str] = set()

    # --- lifetime ---------------------------------------------------------------------------------------

    def __enter__(self) -> LocalTwin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalTwin:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from aws_lambda_powertools.utilities import parameters
        from moto import mock_aws
        from moto.core.config import default_user_config
        from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

        self._prepare_database()
        if not self.redis_url:
            self._embedded_redis = EmbeddedRedis.start()
            self._undo.append(self._embedded_redis.stop)
            self.redis_url = self._embedded_redis.url
            self.redis_label = "in-process Redis (embedded default)"

        saved_env = dict(os.environ)
        # The functions' Powertools Logger sets the package logger's level from LogLevel: give it back on stop,
        # or a process that ran a twin (a test session) stops seeing the package's INFO records.
        package_logger = logging.getLogger("tokenmigration")
        self._undo.append(partial(package_logger.setLevel, package_logger.level))

        def restore_env() -> None:
            os.environ.clear()
            os.environ.update(saved_env)

        self._undo.append(restore_env)
        for name in _AWS_REDIRECTS:
            os.environ.pop(name, None)
        os.environ["AWS_DEFAULT_REGION"] = self.region
        parameters.clear_caches()
        self._undo.append(parameters.clear_caches)

        mock = mock_aws()
        mock.start()
        self._undo.append(mock.stop)
        make_dynamodb_atomic()  # the threaded server's simultaneous starts must meet DynamoDB's atomic lock
        previous = default_user_config.get("stepfunctions")
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        self._undo.append(lambda: default_user_config.__setitem__("stepfunctions", previous or {}))
        original = lambda_eval_utils._invoke_lambda_function
        lambda_eval_utils._invoke_lambda_function = self._lambda_api
        self._undo.append(lambda: setattr(lambda_eval_utils, "_invoke_lambda_function", original))

        secrets_env = os.environ.get("EXPRESS_SESSION_SECRETS", "").strip()
        self.express_secrets = tuple(s.strip() for s in secrets_env.split(",") if s.strip()) or (
            DEFAULT_EXPRESS_SECRET,)
        self.app_key = os.environ.get("LARAVEL_APP_KEY", "").strip() or (
            "base64:" + base64.b64encode(secrets.token_bytes(32)).decode())
        overrides = {"LogLevel": self.log_level} if self.log_level else {}
        if os.environ.get("LARAVEL_SESSION_COOKIE", "").strip():
            overrides["LaravelSessionCookie"] = os.environ["LARAVEL_SESSION_COOKIE"].strip()
        extra = {"POWERTOOLS_TRACE_DISABLED": "true", **self.extra_env}
        deployment = deploy(self.database_url, self.redis_url, express_secrets=self.express_secrets,
                            app_key=self.app_key, extra_env=extra, parameter_overrides=overrides,
                            region=self.region, account=self.account)
        env = dict(deployment.env)
        for name, value in os.environ.items():
            # The operator's own settings (EXPRESS_SESSION_PREFIX, LARAVEL_SESSION_LIFETIME, ...) win over the
            # template's defaults, as they would in a deployment's parameters.
            if name in env and name not in _DEPLOYMENT_VARIABLES and name not in extra:
                env[name] = value
        deployment.env.clear()
        deployment.env.update(env)
        os.environ.update(env)
        self.deployment = deployment
        self._api_functions = {
            logical_id for logical_id, resource in deployment.template["Resources"].items()
            if any(event.get("Type") == "Api"
                   for event in (resource.get("Properties", {}).get("Events") or {}).values())
        }

        from tokenmigration.aws.context import reset_services, services
        from tokenmigration.db.connection import make_engine

        reset_services()
        self._undo.append(reset_services)
        # One warm container: build the shared services once (no two threads create boto3 clients at once),
        # with a pool that HTTP threads and the state machine's invocations can share.
        svc = services()
        svc.__dict__["engine"] = make_engine(svc.settings.database_url, pool_size=4, max_overflow=4)
        for name in ("ledger", "flags", "stepfunctions", "dynamodb", "s3", "migrator"):
            getattr(svc, name)
        self._watcher = threading.Thread(target=self._watch_executions, name="execution-status-rule", daemon=True)
        self._watcher.start()

    def _prepare_database(self) -> None:
        if self.database_url:
            return
        from tokenmigration.db.connection import make_engine
        from tokenmigration.db.upgrade import create_laravel_tables, upgrade

        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = (self.data_dir / self.sqlite_name).resolve()
        self.database_url = f"sqlite:///{path}"
        self.database_label = f"SQLite file {path} (embedded default)"
        engine = make_engine(self.database_url)
        try:
            create_laravel_tables(engine)
            upgrade(engine)
        finally:
            engine.dispose()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.deployment is not None:
            self._stop_executions()
            deadline = time.monotonic() + timeout
            while self._in_flight and time.monotonic() < deadline:
                time.sleep(0.02)
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        while self._undo:
            with contextlib.suppress(Exception):
                self._undo.pop()()
        self.deployment = None

    def _stop_executions(self) -> None:
        from botocore.exceptions import ClientError

        with contextlib.suppress(Exception):
            sfn = self._sfn()
            for arn in self.deployment.state_machines.values():
                for execution in sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]:
                    with contextlib.suppress(ClientError):
                        sfn.stop_execution(executionArn=execution["executionArn"])

    def _sfn(self) -> Any:
        from tokenmigration.aws.context import services

        return services().stepfunctions

    # --- Lambda ---------------------------------------------------------------------------------------------

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        """Run the function's handler as Lambda would: one at a time, the event and result through JSON."""
        assert self.deployment is not None, "the twin is not running"
        fn = self.deployment.function(name)
        handler = self.deployment.handler(name)
        with self._lock_of(fn.logical_id):
            with self._count_lock:
                self._in_flight += 1
                self.invocations += 1
            try:
                result = handler(copy.deepcopy(event), FakeLambdaContext(fn.name, fn.arn, fn.memory))
                return json.loads(json.dumps(result))
            finally:
                with self._count_lock:
                    self._in_flight -= 1

    def _lock_of(self, logical_id: str) -> threading.Lock:
        """The API's functions share one "container" and the workflow's another: a request never queues behind
        a chunk of a running migration (on AWS they are separate Lambdas), while each side stays serial,
        as the Powertools metrics the API functions share and moto's backends expect."""
        return self._api_lock if logical_id in self._api_functions else self._lock

    def _lambda_api(self, parameters: dict[str, Any], region: str, state_credentials: Any) -> dict[str, Any]:
        """moto's Step Functions interpreter calls this where it would call Lambda's Invoke API."""
        assert self.deployment is not None
        fn = self.deployment.function(parameters["FunctionName"])
        raw = parameters.get("Payload") or b"{}"
        event = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        try:
            payload = self.invoke(fn.logical_id, event)
        except Exception as error:
            return function_error(error)
        return {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": payload}

    # --- EventBridge: the execution-status rules of the template --------------------------------------------

    def status_rules(self) -> list[tuple[str, dict[str, Any]]]:
        assert self.deployment is not None
        rules = []
        for logical_id, resource in self.deployment.template["Resources"].items():
            for event in (resource.get("Properties", {}).get("Events") or {}).values():
                if event.get("Type") == "EventBridgeRule":
                    rules.append((logical_id, event["Properties"]["Pattern"]))
        return rules

    def _watch_executions(self) -> None:
        """moto's Step Functions emits no events: deliver "Execution Status Change" for every ending a rule of
        the template matches, once per execution and status, as EventBridge would."""
        while not self._stopping.wait(0.5):
            with contextlib.suppress(Exception):
                self.deliver_status_changes()

    def deliver_status_changes(self) -> int:
        assert self.deployment is not None
        sfn = self._sfn()
        rules = self.status_rules()
        wanted = {status for _, pattern in rules for status in pattern.get("detail", {}).get("status", [])}
        delivered = 0
        for arn in self.deployment.state_machines.values():
            for status in wanted:
                for execution in sfn.list_executions(stateMachineArn=arn, statusFilter=status)["executions"]:
                    key = f"{execution['executionArn']}#{status}#{execution.get('redriveCount', 0)}"
                    if key in self._delivered:
                        continue
                    self._delivered.add(key)
                    described = sfn.describe_execution(executionArn=execution["executionArn"])
                    event = {
                        "version": "0", "id": str(uuid.uuid4()),
                        "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
                        "account": self.account, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "region": self.region, "resources": [described["executionArn"]],
                        "detail": {"executionArn": described["executionArn"],
                                   "stateMachineArn": described["stateMachineArn"], "name": described["name"],
                                   "status": described["status"], "input": described.get("input"),
                                   "error": described.get("error"), "cause": described.get("cause")},
                    }
                    for logical_id, pattern in rules:
                        if described["status"] in pattern.get("detail", {}).get("status", []):
                            self.invoke(logical_id, event)
                            delivered += 1
        return delivered
