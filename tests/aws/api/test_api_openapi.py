"""docs/openapi.json is generated from the routes and never stale; the functions, events and routes agree."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tokenmigration.api import build_app, openapi
from tokenmigration.api.routes import ALL

ROOT = Path(__file__).resolve().parents[3]
DOCUMENT = ROOT / "docs" / "openapi.json"

# api.md's routes: (method, path) -> admin (AWS IAM) or public.
API_MD = {
    ("post", "/auth/migration/start"): True,
    ("get", "/auth/migration/progress"): True,
    ("post", "/auth/migration/complete"): True,
    ("post", "/auth/migration/rollback"): True,
    ("get", "/auth/migration/stats"): True,
    ("post", "/auth/migration/cleanup"): True,
    ("get", "/auth/migration/errors"): True,
    ("post", "/auth/migration/user/{userId}"): True,
    ("post", "/auth/migration/user/{userId}/rollback"): True,
    ("post", "/auth/migration/exchange"): False,
    # Beside api.md: the Laravel app's server calls it, signed (docs/api.md, "Server route").
    ("post", "/auth/migration/bridge"): True,
}
FUNCTION_ROUTES = {
    "api_start": ("post", "/auth/migration/start"),
    "api_progress": ("get", "/auth/migration/progress"),
    "api_complete": ("post", "/auth/migration/complete"),
    "api_rollback": ("post", "/auth/migration/rollback"),
    "api_stats": ("get", "/auth/migration/stats"),
    "api_cleanup": ("post", "/auth/migration/cleanup"),
    "api_errors": ("get", "/auth/migration/errors"),
    "api_migrate_user": ("post", "/auth/migration/user/{userId}"),
    "api_rollback_user": ("post", "/auth/migration/user/{userId}/rollback"),
    "api_exchange": ("post", "/auth/migration/exchange"),
    "api_bridge": ("post", "/auth/migration/bridge"),
}


def operations(document: dict) -> dict[tuple[str, str], dict]:
    return {(method, path): op for path, item in document["paths"].items() for method, op in item.items()}


def test_docs_openapi_json_is_up_to_date():
    assert DOCUMENT.exists(), "run `make openapi`"
    assert json.loads(DOCUMENT.read_text(encoding="utf-8")) == openapi.build(), (
        "docs/openapi.json is stale: run `make openapi`"
    )


def test_the_document_has_exactly_the_routes_of_api_md():
    document = openapi.build()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] and document["info"]["version"]
    found = operations(document)
    assert set(found) == set(API_MD)
    for key, admin in API_MD.items():
        if admin:
            assert found[key]["security"] == [{"sigv4": []}], key
        else:
            assert "security" not in found[key], key
    assert document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert "security" not in document  # no global requirement: /exchange is public


def test_admin_operations_document_their_refusals():
    found = operations(openapi.build())
    for key, admin in API_MD.items():
        responses = found[key]["responses"]
        assert "422" not in responses  # Powertools' default; ours is 400 with errors
        schema = responses["500"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
        if admin and key[0] == "post" and key[1] != "/auth/migration/cleanup":
            assert "400" in responses
    assert {"202", "400", "409", "503"} <= set(found[("post", "/auth/migration/start")]["responses"])
    assert {"200", "400", "404", "409"} <= set(found[("post", "/auth/migration/user/{userId}")]["responses"])
    assert {"200", "404"} <= set(found[("get", "/auth/migration/progress")]["responses"])


def test_the_single_user_route_says_it_carries_no_sessions():
    description = operations(openapi.build())[("post", "/auth/migration/user/{userId}")]["description"]
    assert "sessions_migrated" in description and "SCAN" in description


def test_request_bodies_are_documented_strictly():
    schemas = openapi.build()["components"]["schemas"]
    start = schemas["StartRequest"]
    assert start["required"] == ["confirm"] and start["additionalProperties"] is False
    assert start["properties"]["confirm"]["const"] is True
    assert (start["properties"]["chunk_size"]["minimum"], start["properties"]["chunk_size"]["maximum"]) == (1, 10000)
    limits = start["properties"]["max_concurrency"]
    assert (limits["minimum"], limits["maximum"]) == (1, 1000)
    assert "session_id" not in schemas["RunError"]["required"]


def test_every_route_module_registers_one_route():
    for module in ALL:
        app = build_app(module)
        routes = app._static_routes + app._dynamic_routes
        assert len(routes) == 1, module.__name__


@pytest.mark.parametrize(("name", "route"), sorted(FUNCTION_ROUTES.items()))
def test_each_function_folder_holds_only_its_thin_handler(api, name, route):
    folder = ROOT / "functions" / name
    files = sorted(p.name for p in folder.iterdir() if p.name != "__pycache__")
    assert files == ["app.py"]
    tree = ast.parse((folder / "app.py").read_text(encoding="utf-8"))
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions == ["lambda_handler"]
    handler = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    decorators = [ast.unparse(d) for d in handler.decorator_list]
    assert any(d.startswith("logger.inject_lambda_context") for d in decorators)
    assert any(d.startswith("tracer.capture_lambda_handler") for d in decorators)
    assert "metrics.log_metrics" in decorators

    module = api.handler(name)
    routes = module.app._static_routes + module.app._dynamic_routes
    assert len(routes) == 1
    method, path = route
    assert routes[0].method == method.upper()
    assert routes[0].openapi_path == path


@pytest.mark.parametrize(("name", "route"), sorted(FUNCTION_ROUTES.items()))
def test_each_function_has_a_realistic_sample_event(api, name, route):
    event = api.sample_event(name)
    method, path = route
    assert event["httpMethod"] == method.upper()
    assert event["resource"] == path
    assert event["requestContext"]["resourcePath"] == path
    assert event["requestContext"]["requestId"]
    identity = event["requestContext"]["identity"]
    assert identity["sourceIp"]
    if API_MD[route]:
        assert identity["userArn"].startswith("arn:aws:") and identity["accessKey"] and identity["caller"]
    else:
        assert identity["userArn"] is None


def test_every_function_and_event_is_accounted_for():
    functions = {p.name for p in (ROOT / "functions").iterdir() if p.name.startswith("api_")}
    events = {p.stem for p in (ROOT / "events").glob("api_*.json")}
    assert functions == set(FUNCTION_ROUTES) == events


def test_every_sample_event_gets_a_well_formed_answer(api, stack, pg_engine):
    from helpers import add_users
    add_users(pg_engine, [42])
    stack.flags.on_migration_finished()
    for name in sorted(FUNCTION_ROUTES):
        result = api.invoke(name)
        assert result.status < 500, (name, result.body)
        stack.ledger.release_lock(stack.ledger.active_run() or "-")
