"""template.yaml, offline: the SAM transform succeeds, cfn-lint finds no error, every api.md route is there with
the right auth, no IAM statement uses a wildcard action, every function's code exists, the table is the one
table_schema.py defines, the flags start as api.md says, the environment names are the ones the code reads.

The "every handler exists" check is strict on purpose: it covers the API functions (functions/api_*) too.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_file
from samtranslator.translator.transform import transform
from stack import ROOT, TEMPLATE, load_template

from tokenmigration.aws.flags import DEFAULT_FLAGS, FLAG_NAMES
from tokenmigration.aws.settings import AwsSettings
from tokenmigration.aws.table_schema import TABLE_PROPERTIES
from tokenmigration.config import Settings

BASE = "/auth/migration"
# docs/api.md's routes (the test below checks this list against the project's own copy of the contract).
ADMIN_ROUTES = {
    ("post", "/start"): "ApiStartFunction",
    ("get", "/progress"): "ApiProgressFunction",
    ("post", "/complete"): "ApiCompleteFunction",
    ("post", "/rollback"): "ApiRollbackFunction",
    ("get", "/stats"): "ApiStatsFunction",
    ("post", "/cleanup"): "ApiCleanupFunction",
    ("get", "/errors"): "ApiErrorsFunction",
    ("post", "/user/{userId}"): "ApiMigrateUserFunction",
    ("post", "/user/{userId}/rollback"): "ApiRollbackUserFunction",
}
PUBLIC_ROUTES = {("post", "/exchange"): "ApiExchangeFunction"}
# The Laravel app's server calls it (docs/api.md's server route), signed like the admin routes.
BRIDGE_ROUTES = {("post", "/bridge"): "ApiBridgeFunction"}
IAM_ROUTES = {**ADMIN_ROUTES, **BRIDGE_ROUTES}
API_MD = ROOT / "docs" / "api.md"
API_ENV = {"TABLE_NAME", "FLAGS_PATH", "MIGRATION_STATE_MACHINE_ARN", "ROLLBACK_STATE_MACHINE_ARN", "CHUNKS_BUCKET",
           "DATABASE_SECRET_ARN"}
PARAMETERS = {
    "DatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:tm/db-AbCdEf",
    "ExpressSecretsArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:tm/express-AbCdEf",
    "AppKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:tm/appkey-AbCdEf",
    "RedisSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:tm/redis-AbCdEf",
    "LaravelSessionCookie": "laravel_session",
    "SubnetIds": ["subnet-0a", "subnet-0b"],
    "SecurityGroupIds": ["sg-0a"],
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _resources(template: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


class _NoIam:
    """The transform asks IAM for managed policy names only when a template uses one by name; ours does not."""

    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def transformed(template) -> dict[str, Any]:
    # What `sam package` does first: local code and definitions become S3 objects (or inline definitions).
    packaged = copy.deepcopy(template)
    for name, resource in packaged["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            props["CodeUri"] = f"s3://artifacts/{name}.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = f"s3://artifacts/{name}.zip"
        elif resource["Type"] == "AWS::Serverless::StateMachine":
            props["Definition"] = json.loads((ROOT / props.pop("DefinitionUri")).read_text())
    # Module scope runs outside the autouse ``aws`` fixture: the transform only needs a region name.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        return transform(packaged, PARAMETERS, _NoIam())


def test_the_sam_transform_succeeds(transformed):
    kinds = {r["Type"] for r in transformed["Resources"].values()}
    assert not any(kind.startswith("AWS::Serverless::") for kind in kinds)
    assert {"AWS::Lambda::Function", "AWS::StepFunctions::StateMachine", "AWS::ApiGateway::RestApi",
            "AWS::Scheduler::Schedule", "AWS::Events::Rule", "AWS::DynamoDB::Table", "AWS::S3::Bucket",
            "AWS::SSM::Parameter", "AWS::Lambda::LayerVersion"} <= kinds


def test_cfn_lint_finds_no_error():
    matches = lint_file(TEMPLATE)
    errors = [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


# --- the API ----------------------------------------------------------------------------------------------------


def _api_body(transformed) -> dict[str, Any]:
    (api,) = _resources(transformed, "AWS::ApiGateway::RestApi").values()
    return api["Properties"]["Body"]


def test_every_route_of_api_md_is_there_with_its_method(transformed):
    paths = _api_body(transformed)["paths"]
    declared = {(method, path.removeprefix(BASE)) for path, methods in paths.items() for method in methods
                if method != "options"}
    assert declared == set(ADMIN_ROUTES) | set(PUBLIC_ROUTES) | set(BRIDGE_ROUTES)


def test_the_route_list_is_api_md():
    """The contract ships in the repository (docs/api.md): no skip, whatever lies beside the clone."""
    spec = API_MD.read_text(encoding="utf-8")
    admin = {(m.lower(), p.split("?")[0])
             for m, p in re.findall(r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s+`(/[^`]*)`", spec, re.M)}
    public = {(m.lower(), p) for m, p in re.findall(r"^## Public route: `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)`",
                                                    spec, re.M)}
    server = {(m.lower(), p) for m, p in re.findall(r"^## Server route: `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)`",
                                                    spec, re.M)}
    assert admin == set(ADMIN_ROUTES)
    assert public == set(PUBLIC_ROUTES)
    assert server == set(BRIDGE_ROUTES)


def test_each_route_is_served_by_its_function(template):
    routes = {}
    for name, fn in _resources(template, "AWS::Serverless::Function").items():
        for event in fn["Properties"].get("Events", {}).values():
            if event["Type"] == "Api":
                routes[(event["Properties"]["Method"], event["Properties"]["Path"].removeprefix(BASE))] = name
    assert routes == {**ADMIN_ROUTES, **PUBLIC_ROUTES, **BRIDGE_ROUTES}


def test_admin_routes_and_the_bridge_need_iam_and_the_exchange_does_not(transformed):
    paths = _api_body(transformed)["paths"]
    for (method, path) in IAM_ROUTES:
        operation = paths[BASE + path][method]
        assert [list(s) for s in operation["security"]] == [["AWS_IAM"]], path
        # InvokeRole NONE: API Gateway calls the function with its own permission, not the caller's.
        assert "credentials" not in operation["x-amazon-apigateway-integration"], path
    exchange = paths[BASE + "/exchange"]["post"]
    assert not any("AWS_IAM" in s for s in exchange.get("security", []))


def test_the_exchange_is_the_only_route_without_iam(transformed):
    unsigned = {(method, path.removeprefix(BASE)) for path, methods in _api_body(transformed)["paths"].items()
                for method, operation in methods.items()
                if method != "options" and [list(s) for s in operation.get("security", [])] != [["AWS_IAM"]]}
    assert unsigned == {("post", "/exchange")}


def test_the_bridge_is_signed_in_the_template_itself(template):
    # Not only through the API's default: a route-level "Authorizer: NONE" must never appear on it.
    (event,) = template["Resources"]["ApiBridgeFunction"]["Properties"]["Events"].values()
    assert "Auth" not in event["Properties"]
    assert template["Resources"]["MigrationApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"


def test_the_exchange_has_its_own_throttling(template):
    settings = template["Resources"]["MigrationApi"]["Properties"]["MethodSettings"]
    by_path = {(s["ResourcePath"], s["HttpMethod"]): s for s in settings}
    for path in ("/~1auth~1migration~1exchange", "/~1auth~1migration~1bridge"):
        limits = by_path[(path, "POST")]
        assert limits["ThrottlingRateLimit"] == {"Ref": "ExchangeThrottlingRateLimit"}
        assert limits["ThrottlingBurstLimit"] == {"Ref": "ExchangeThrottlingBurstLimit"}
    assert by_path[("/*", "*")]["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    auth = template["Resources"]["MigrationApi"]["Properties"]["Auth"]
    assert auth == {"DefaultAuthorizer": "AWS_IAM", "InvokeRole": "NONE"}


# --- least privilege ----------------------------------------------------------------------------------------


def _statements(transformed) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in transformed["Resources"].items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props["PolicyDocument"])
        for document in documents:
            for statement in document["Statement"]:
                yield name, statement


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_iam_statement_uses_a_wildcard_action(transformed):
    statements = list(_statements(transformed))
    assert len(statements) > 30
    for role, statement in statements:
        assert "NotAction" not in statement, role
        for action in _listed(statement["Action"]):
            assert isinstance(action, str) and "*" not in action, (role, action)


def test_only_xray_gets_every_resource(transformed):
    # X-Ray's trace APIs and the vended log delivery of the state machines' logging have no resource-level
    # permissions; everything else is scoped.
    log_delivery = {"logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
                    "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
                    "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"}
    for role, statement in _statements(transformed):
        if "*" in _listed(statement.get("Resource")):
            actions = set(_listed(statement["Action"]))
            assert (all(a.startswith("xray:") for a in actions)
                    or (actions <= log_delivery and role.endswith("StateMachineRole"))), (role, statement)


def test_the_state_machines_invoke_exactly_their_functions(template):
    for name, machine in _resources(template, "AWS::Serverless::StateMachine").items():
        props = machine["Properties"]
        substituted = {v["Fn::GetAtt"][0] for v in props["DefinitionSubstitutions"].values() if "Fn::GetAtt" in v}
        invoked = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in props["Policies"]
                   if "LambdaInvokePolicy" in p}
        assert invoked == substituted, name
        placeholders = set(re.findall(r"\$\{(\w+)\}", (ROOT / props["DefinitionUri"]).read_text()))
        assert placeholders == set(props["DefinitionSubstitutions"]), name


# --- functions and their code ---------------------------------------------------------------------------


def test_every_function_has_its_code_and_handler(template):
    # Strict: an API function whose folder is missing fails here too.
    default_handler = template["Globals"]["Function"]["Handler"]
    for name, fn in _resources(template, "AWS::Serverless::Function").items():
        props = fn["Properties"]
        folder = ROOT / props["CodeUri"]
        assert props["CodeUri"].startswith("functions/") and folder.is_dir(), (name, props["CodeUri"])
        module, attribute = props.get("Handler", default_handler).rsplit(".", 1)
        source = folder / f"{module}.py"
        assert source.is_file(), (name, source)
        tree = ast.parse(source.read_text(encoding="utf-8"))
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert attribute in defined, (name, source)


def test_every_function_folder_is_deployed(template):
    declared = {Path(fn["Properties"]["CodeUri"]).name for fn in _resources(template, "AWS::Serverless::Function")
                .values()}
    on_disk = {p.name for p in (ROOT / "functions").iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert on_disk == declared


def test_globals_are_the_lambda_runtime_and_powertools(template):
    fn = template["Globals"]["Function"]
    assert (fn["Runtime"], fn["Architectures"], fn["Tracing"]) == ("python3.13", ["arm64"], "Active")
    assert fn["Layers"] == [{"Ref": "CommonLayer"}]
    assert set(fn["VpcConfig"]) == {"SubnetIds", "SecurityGroupIds"}
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL", "POWERTOOLS_METRICS_NAMESPACE"} <= set(
        fn["Environment"]["Variables"])
    layer = template["Resources"]["CommonLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/common"
    assert layer["Metadata"]["BuildMethod"] == "python3.13"


class _Recording(dict):
    """An environment that remembers every name the settings code asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def test_every_environment_variable_is_one_the_code_reads(template):
    env = _Recording()
    Settings.from_env(env)
    AwsSettings.from_env(env)
    known = env.asked | {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL", "POWERTOOLS_METRICS_NAMESPACE",
                         "POWERTOOLS_TRACE_DISABLED"}  # read by Powertools and tokenmigration.tracing
    blocks = [template["Globals"]["Function"]["Environment"]["Variables"]]
    blocks += [fn["Properties"].get("Environment", {}).get("Variables", {})
               for fn in _resources(template, "AWS::Serverless::Function").values()]
    for block in blocks:
        assert set(block) <= known, set(block) - known


def test_api_functions_get_the_contracts_environment(template):
    globals_env = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for name in {*ADMIN_ROUTES.values(), *PUBLIC_ROUTES.values(), *BRIDGE_ROUTES.values()}:
        own = set(template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {}))
        assert globals_env | own >= API_ENV, name
    for name in ("ApiExchangeFunction", "ApiBridgeFunction"):
        variables = template["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert {"EXPRESS_SECRETS_ARN", "APP_KEY_SECRET_ARN"} <= set(variables), name


def test_only_the_functions_that_use_redis_get_its_secret_and_may_read_it(template):
    """REDIS_URL (it may carry an auth token) comes from Secrets Manager, never a plain variable."""
    assert "RedisUrl" not in template["Parameters"] and "REDIS_URL" not in template["Globals"]["Function"][
        "Environment"]["Variables"]
    users = {"ApiExchangeFunction", "ApiBridgeFunction", "PlanFunction", "MigrateChunkFunction", "FinalizeFunction"}
    for name, resource in _resources(template, "AWS::Serverless::Function").items():
        props = resource["Properties"]
        env = props.get("Environment", {}).get("Variables", {})
        readable = [p["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"] for p in props["Policies"]
                    if "AWSSecretsManagerGetSecretValuePolicy" in p]
        has = env.get("REDIS_SECRET_ARN") == {"Ref": "RedisSecretArn"}
        assert has == ({"Ref": "RedisSecretArn"} in readable), name
        if name in users:
            assert has, name


# --- data ------------------------------------------------------------------------------------------------


def test_the_table_is_the_one_table_schema_defines(template):
    (table,) = _resources(template, "AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert {k: props[k] for k in TABLE_PROPERTIES} == TABLE_PROPERTIES
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_the_flags_start_as_api_md_deploys_them(template):
    values = {}
    for resource in _resources(template, "AWS::SSM::Parameter").values():
        props = resource["Properties"]
        name = props["Name"]["Fn::Sub"]
        assert name.startswith("/tokenmigration/${Stage}/"), name
        values[name.rsplit("/", 1)[1]] = props["Value"]
    expected = {n: (v if isinstance(v, str) else ("true" if v else "false"))
                for n, v in ((n, getattr(DEFAULT_FLAGS, n)) for n in FLAG_NAMES)}
    assert values == expected == {"auth_mode": "dual", "sanctum_only": "false", "rollback_available": "false",
                                  "exchange_enabled": "true"}
    assert template["Globals"]["Function"]["Environment"]["Variables"]["FLAGS_PATH"] == {
        "Fn::Sub": "/tokenmigration/${Stage}/"}


def test_the_chunk_bucket_is_private_encrypted_and_expires(template):
    (bucket,) = _resources(template, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert props["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] > 14  # past the redrive window


def test_the_outputs(template):
    assert {"ApiUrl", "MigrationStateMachineArn", "RollbackStateMachineArn", "TableName"} <= set(template["Outputs"])


def test_the_cleanup_runs_on_a_schedule(template):
    events = template["Resources"]["ScheduledCleanupFunction"]["Properties"]["Events"]
    assert [e["Type"] for e in events.values()] == ["ScheduleV2"]


def test_samconfig_has_dev_and_prod():
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for env in ("dev", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        assert f"Stage={env}" in deploy["parameter_overrides"]
        assert deploy["stack_name"] == f"tokenmigration-{env}"


def _actions(function: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for policy in function["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            action = statement["Action"]
            found.update([action] if isinstance(action, str) else action)
        if isinstance(policy, dict):
            found.update(f"sam:{name}" for name in policy if name != "Statement")
    return found


def test_api_functions_get_only_what_their_route_does(template):
    functions = {name: _actions(f) for name, f in _resources(template, "AWS::Serverless::Function").items()
                 if name.startswith("Api")}
    assert {n for n, a in functions.items() if "states:StartExecution" in a} == {
        "ApiStartFunction", "ApiRollbackFunction"}
    assert {n for n, a in functions.items() if "ssm:PutParameter" in a} == {
        "ApiCompleteFunction", "ApiRollbackFunction"}
    assert {n for n, a in functions.items() if "sam:DynamoDBCrudPolicy" in a} == {
        "ApiStartFunction", "ApiCompleteFunction", "ApiRollbackFunction"}
    for name in ("ApiCleanupFunction", "ApiMigrateUserFunction", "ApiRollbackUserFunction", "ApiExchangeFunction",
                 "ApiBridgeFunction"):
        assert not {a for a in functions[name] if "DynamoDB" in a}, name


def test_the_bridge_reads_the_exchanges_secrets_and_the_flags_and_nothing_more(template):
    def grants(name: str) -> tuple[set[str], list[Any]]:
        policies = template["Resources"][name]["Properties"]["Policies"]
        secrets = [p["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"] for p in policies
                   if "AWSSecretsManagerGetSecretValuePolicy" in p]
        return _actions(template["Resources"][name]), sorted(secrets, key=json.dumps)

    bridge_actions, bridge_secrets = grants("ApiBridgeFunction")
    exchange_actions, exchange_secrets = grants("ApiExchangeFunction")
    assert bridge_secrets == exchange_secrets == sorted(
        [{"Ref": "DatabaseSecretArn"}, {"Ref": "ExpressSecretsArn"}, {"Ref": "AppKeySecretArn"},
         {"Ref": "RedisSecretArn"}], key=json.dumps)
    assert bridge_actions == exchange_actions == {
        "sam:AWSSecretsManagerGetSecretValuePolicy", "ssm:GetParametersByPath", "ssm:GetParameter",
        "ssm:GetParameters"}


def test_the_exchange_gets_the_laravel_cookie_settings_it_requires(template):
    # With an app key the exchange must know the cookie's name: a missing one would fail every call.
    for name in ("ApiExchangeFunction", "ApiBridgeFunction"):
        variables = template["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert {"APP_KEY_SECRET_ARN", "LARAVEL_SESSION_COOKIE", "LARAVEL_SESSION_DOMAIN",
                "LARAVEL_SESSION_SECURE"} <= set(variables), name
    assert "Default" not in template["Parameters"]["LaravelSessionCookie"]  # configured, never derived
