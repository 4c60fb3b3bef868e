"""template.yaml as data, deployed into moto: the resources, the functions' environment and the state machines.

Shared by ``tokenmigration local serve`` and the tests' ``aws_stack`` fixture (tests/aws/stack.py), so that the
local twin and the tests build the stack the same way, from the template, and cannot drift from it.
Everything here expects moto's ``mock_aws`` to be active (the boto3 clients it creates talk to moto).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import yaml

REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/tokenmigration-local"


def find_root() -> Path:
    """The project directory (template.yaml, functions/, statemachine/): TOKENMIGRATION_ROOT, the checkout this
    package lives in, or the current directory or one of its parents."""
    given = os.environ.get("TOKENMIGRATION_ROOT")
    candidates = [Path(given)] if given else []
    candidates.append(Path(__file__).resolve().parents[4])
    cwd = Path.cwd().resolve()
    candidates += [cwd, *cwd.parents]
    for candidate in candidates:
        if (candidate / "template.yaml").is_file() and (candidate / "functions").is_dir():
            return candidate
    raise FileNotFoundError("template.yaml not found: run from the project directory or set TOKENMIGRATION_ROOT")


# --- template.yaml as data ---------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags, turned into their long form (``!Ref X`` -> ``{"Ref": "X"}``)."""


def _tag(name: str) -> Callable[[CfnLoader, yaml.Node], Any]:
    def construct(loader: CfnLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


CfnLoader.add_constructor("!Ref", _tag("Ref"))
CfnLoader.add_constructor("!Condition", _tag("Condition"))
for _short in ("Sub", "GetAtt", "Join", "Select", "Split", "If", "Equals", "Not", "And", "Or", "FindInMap",
               "Base64", "Cidr", "GetAZs", "ImportValue"):
    CfnLoader.add_constructor(f"!{_short}", _tag(f"Fn::{_short}"))


def load_template(path: Path | None = None) -> dict[str, Any]:
    path = path or find_root() / "template.yaml"
    return yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)


_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


class Resolver:
    """Resolves Ref / Fn::Sub / Fn::GetAtt / Fn::Join against parameters and physical resource ids."""

    def __init__(self, parameters: dict[str, Any], refs: dict[str, Any], attributes: dict[str, Any],
                 region: str = REGION, account: str = ACCOUNT) -> None:
        self.values = {"AWS::Region": region, "AWS::AccountId": account, "AWS::Partition": PARTITION,
                       "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "tokenmigration-local",
                       **parameters, **refs}
        self.attributes = attributes

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.values[arg]
            if key == "Fn::GetAtt":
                return self.attributes[".".join(arg)]
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self(arg[1]))
                return _SUB_VARIABLE.sub(lambda m: str(extra.get(m.group(1), self._sub(m.group(1)))), text)
            if key == "Fn::Join":
                return str(arg[0]).join(str(part) for part in self(arg[1]))
        return {key: self(item) for key, item in value.items()}

    def _sub(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        return self.attributes[name]


# --- Lambda, in process ---------------------------------------------------------------------------------


@dataclass
class FakeLambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


@dataclass(frozen=True)
class Function:
    logical_id: str
    folder: str  # functions/<folder>/
    name: str  # the physical function name
    arn: str
    handler: str
    memory: int


_modules: dict[Path, ModuleType] = {}
_modules_guard = threading.Lock()


def load_handler_module(path: Path) -> ModuleType:
    """Import functions/<folder>/app.py under a name of its own (every function's file is app.py), once."""
    with _modules_guard:
        if path not in _modules:
            spec = importlib.util.spec_from_file_location(f"wf_stack_{path.parent.name}_app", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _modules[path] = module
        return _modules[path]


def function_error(error: BaseException) -> dict[str, Any]:
    """Lambda's answer for an unhandled exception: FunctionError, and the runtime's error document."""
    stack = traceback.format_exception(type(error), error, error.__traceback__)
    document = {"errorMessage": str(error), "errorType": type(error).__name__, "requestId": str(uuid.uuid4()),
                "stackTrace": [line.rstrip() for line in stack]}
    return {"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST", "Payload": document}


def physical_ids(template: dict[str, Any], stage: str, region: str = REGION, account: str = ACCOUNT
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Function]]:
    """Ref values and GetAtt attributes of every resource, and the functions, before anything exists."""
    refs: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    functions: dict[str, Function] = {}
    globals_fn = template.get("Globals", {}).get("Function", {})
    for logical_id, resource in template["Resources"].items():
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::DynamoDB::Table":
            refs[logical_id] = f"tokenmigration-{stage}-{logical_id.lower()}"
        elif kind == "AWS::S3::Bucket":
            refs[logical_id] = f"tokenmigration-{stage}-{logical_id.lower()}"
            attributes[f"{logical_id}.Arn"] = f"arn:{PARTITION}:s3:::{refs[logical_id]}"
        elif kind == "AWS::Serverless::Function":
            name = f"tokenmigration-{stage}-{logical_id}"
            arn = f"arn:{PARTITION}:lambda:{region}:{account}:function:{name}"
            refs[logical_id], attributes[f"{logical_id}.Arn"] = name, arn
            folder = Path(props["CodeUri"]).name
            functions[logical_id] = Function(logical_id, folder, name, arn,
                                             props.get("Handler", globals_fn.get("Handler", "app.lambda_handler")),
                                             int(props.get("MemorySize", globals_fn.get("MemorySize", 128))))
        elif kind == "AWS::Serverless::StateMachine":
            name = props["Name"]
            if isinstance(name, dict):  # !Sub tokenmigration-${Stage}-...
                name = name["Fn::Sub"].replace("${Stage}", stage)
            refs[logical_id] = f"arn:{PARTITION}:states:{region}:{account}:stateMachine:{name}"
            attributes[f"{logical_id}.Name"] = name
        else:
            refs[logical_id] = f"{logical_id}-{stage}"
    return refs, attributes, functions


# --- the deployment ---------------------------------------------------------------------------------------


@dataclass
class Deployment:
    template: dict[str, Any]
    root: Path
    env: dict[str, str]  # what every function's environment holds (Globals + each function's Variables)
    parameters: dict[str, Any]
    refs: dict[str, Any]
    attributes: dict[str, Any]
    functions: dict[str, Function]  # logical id -> Function
    table_name: str
    state_machines: dict[str, str]  # "migration" / "rollback" -> ARN
    region: str = REGION
    account: str = ACCOUNT

    @property
    def stage(self) -> str:
        return str(self.parameters["Stage"])

    def function(self, name: str) -> Function:
        """By logical id (``PlanFunction``), folder (``wf_plan``), physical name or ARN."""
        for fn in self.functions.values():
            if name in (fn.logical_id, fn.folder, fn.name, fn.arn):
                return fn
        raise KeyError(f"no function {name!r} in template.yaml")

    def handler(self, name: str) -> Callable[[dict[str, Any], Any], Any]:
        fn = self.function(name)
        module_name, attribute = fn.handler.rsplit(".", 1)
        module = load_handler_module(self.root / "functions" / fn.folder / f"{module_name}.py")
        return getattr(module, attribute)


def deploy(database_url: str, redis_url: str, *, express_secrets: tuple[str, ...], app_key: str,
           extra_env: Mapping[str, str] = (), parameter_overrides: Mapping[str, Any] | None = None,
           region: str = REGION, account: str = ACCOUNT, root: Path | None = None,
           template: dict[str, Any] | None = None) -> Deployment:
    """Create template.yaml's resources in moto (mock_aws must be active, with Step Functions'
    ``execute_state_machine`` switched on before this first Step Functions call) and return the functions'
    environment, which the caller puts in ``os.environ``: ``DATABASE_URL`` / ``REDIS_URL`` set directly, so the
    database secret is never read; the Express secrets and the app key are, from moto's Secrets Manager."""
    root = root or find_root()
    template = template or load_template(root / "template.yaml")
    secrets = boto3.client("secretsmanager", region_name=region)
    stage_default = template["Parameters"]["Stage"].get("Default")
    stage = str((parameter_overrides or {}).get("Stage", stage_default))
    secret_arns = {
        # Never read while DATABASE_URL is set; there so the variable is what a deployment has.
        "DatabaseSecretArn": secrets.create_secret(Name=f"tokenmigration/{stage}/database", SecretString=json.dumps(
            {"engine": "postgres", "host": "unused.invalid", "username": "u", "password": "p", "dbname": "d"}))["ARN"],
        "ExpressSecretsArn": secrets.create_secret(Name=f"tokenmigration/{stage}/express",
                                                   SecretString=json.dumps(list(express_secrets)))["ARN"],
        "AppKeySecretArn": secrets.create_secret(Name=f"tokenmigration/{stage}/app-key", SecretString=app_key)["ARN"],
        # Never read while REDIS_URL is set, like the database's.
        "RedisSecretArn": secrets.create_secret(Name=f"tokenmigration/{stage}/redis", SecretString=redis_url)["ARN"],
    }
    parameters = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    # The parameters a deployment must be given; a local one takes Laravel's usual cookie name.
    # The caller's overrides win over these local defaults (one dict: a name in both is not an error).
    parameters.update({**secret_arns, "RedisUrl": redis_url, "SubnetIds": ["subnet-0local"],
                       "SecurityGroupIds": ["sg-0local"], "LaravelSessionCookie": "laravel_session",
                       **(parameter_overrides or {})})
    refs, attributes, functions = physical_ids(template, stage, region, account)
    resolve = Resolver(parameters, refs, attributes, region, account)
    resources = template["Resources"]

    # DynamoDB: the table exactly as the template declares it.
    dynamodb = boto3.client("dynamodb", region_name=region)
    (table_id, table), = ((k, v) for k, v in resources.items() if v["Type"] == "AWS::DynamoDB::Table")
    props = table["Properties"]
    dynamodb.create_table(TableName=refs[table_id], AttributeDefinitions=props["AttributeDefinitions"],
                          KeySchema=props["KeySchema"], BillingMode=props["BillingMode"])
    dynamodb.update_time_to_live(TableName=refs[table_id], TimeToLiveSpecification=props["TimeToLiveSpecification"])

    s3 = boto3.client("s3", region_name=region)
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::S3::Bucket":
            if region == "us-east-1":
                s3.create_bucket(Bucket=refs[logical_id])
            else:
                s3.create_bucket(Bucket=refs[logical_id],
                                 CreateBucketConfiguration={"LocationConstraint": region})

    ssm = boto3.client("ssm", region_name=region)
    for resource in resources.values():
        if resource["Type"] == "AWS::SSM::Parameter":
            p = resolve(resource["Properties"])
            ssm.put_parameter(Name=p["Name"], Value=p["Value"], Type=p["Type"])

    # The environment: Globals, then every function's own (all of them share this process).
    env: dict[str, str] = {}
    variables = [template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})]
    variables += [r["Properties"].get("Environment", {}).get("Variables", {}) for r in resources.values()
                  if r["Type"] == "AWS::Serverless::Function"]
    for block in variables:
        for name, value in resolve(block).items():
            if name in env and env[name] != str(value):
                raise AssertionError(f"functions disagree on {name}: the in-process stack cannot host both")
            env[name] = str(value)
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "AWS_REGION": region,
                "AWS_DEFAULT_REGION": region})
    env.update(extra_env)

    sfn = boto3.client("stepfunctions", region_name=region)
    state_machines: dict[str, str] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::StateMachine":
            continue
        p = resource["Properties"]
        definition = (root / p["DefinitionUri"]).read_text(encoding="utf-8")
        for key, value in resolve(p.get("DefinitionSubstitutions", {})).items():
            definition = definition.replace("${" + key + "}", str(value))
        leftover = re.findall(r"\$\{[^}]+\}", definition)
        if leftover:
            raise AssertionError(f"{p['DefinitionUri']}: no substitution for {leftover}")
        arn = sfn.create_state_machine(name=attributes[f"{logical_id}.Name"], definition=definition,
                                       roleArn=f"arn:{PARTITION}:iam::{account}:role/tokenmigration-states",
                                       type=p.get("Type", "STANDARD"))["stateMachineArn"]
        if arn != refs[logical_id]:
            raise AssertionError(f"{logical_id}: moto made {arn}, the template's ARN is {refs[logical_id]}")
        kind = "migration" if "migration" in p["DefinitionUri"] else "rollback"
        state_machines[kind] = arn

    return Deployment(template=template, root=root, env=env, parameters=parameters, refs=refs,
                      attributes=attributes, functions=functions, table_name=refs[table_id],
                      state_machines=state_machines, region=region, account=account)
