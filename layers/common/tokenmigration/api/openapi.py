"""The OpenAPI document of the API, generated from the routes: ``python -m tokenmigration.api.openapi [FILE]``.

``make openapi`` writes ``docs/openapi.json`` with it; a test fails when that file is stale. The document is
Powertools' own (``get_openapi_json_schema`` with every route registered), with what Powertools cannot know
put right: its generic 422 (our validation errors are 400 with ``errors``, declared per route) and its
"Response Validation Error" 500 (ours is ``{"success": false, "message": "internal error"}``) are replaced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, Tag

from tokenmigration import __version__
from tokenmigration.api.models import MAX_USER_ID, ErrorResponse
from tokenmigration.api.resolver import build_app
from tokenmigration.api.routes import ALL
from tokenmigration.api.spec import SIGV4

TITLE = "tokenmigration API"
DESCRIPTION = """\
Moves logged-in users from Express sessions in Redis to Laravel Sanctum tokens and database sessions.
The contract is `docs/api.md`; this document adds what it leaves to the implementation.

Admin routes (all but `/exchange`) require AWS IAM: requests signed with SigV4 for the service `execute-api`.
Unsigned or wrongly signed requests get 403 `{"message": ...}` from API Gateway. Every admin response carries
`success` and `message`; validation errors are 400 with `errors: {field: [messages]}`.
Request bodies are JSON (`Content-Type: application/json` or none); unknown body fields are refused, so a
misspelt option can never change what a call does.
"""
TAGS = [
    Tag(name="runs", description="Migration and rollback runs (Step Functions executions)."),
    Tag(name="users", description="One user at a time."),
    Tag(name="flags", description="Statistics and the feature flags."),
    Tag(name="maintenance", description="Housekeeping."),
    Tag(name="exchange", description="The public session exchange."),
]
SECURITY_SCHEMES = {
    SIGV4: APIKey(
        name="Authorization",
        in_=APIKeyIn.header,
        description="AWS Signature Version 4 (service execute-api); API Gateway's AWS_IAM authorizer.",
        **{"x-amazon-apigateway-authtype": "awsSigv4"},
    ),
}
DEFAULT_PATH = Path("docs/openapi.json")

_POWERTOOLS_ONLY_SCHEMAS = ("HTTPValidationError", "ResponseValidationError", "ValidationError")


def build() -> dict[str, Any]:
    """The document as a dict (every route registered)."""
    app = build_app(*ALL)
    raw = app.get_openapi_json_schema(
        title=TITLE,
        version=__version__,
        description=DESCRIPTION,
        tags=TAGS,
        security_schemes=SECURITY_SCHEMES,
    )
    return _finish(_declared_bodies(json.loads(raw)))


def _declared_bodies(document: dict[str, Any]) -> dict[str, Any]:
    """Request bodies a route parses itself (OAuth-shaped refusals, not Powertools' validation): a route module's
    ``REQUEST_BODY`` model becomes its operation's ``requestBody``."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for module in ALL:
        model = getattr(module, "REQUEST_BODY", None)
        if model is None:
            continue
        schemas.setdefault(model.__name__, model.model_json_schema())
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if operation.get("operationId") == module.OPERATION_ID:
                    operation["requestBody"] = {"required": True, "content": {"application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    return document


def _finish(document: dict[str, Any]) -> dict[str, Any]:
    internal_error = _internal_error_response(document)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            if "500" in responses:
                responses["500"] = internal_error
            operation["responses"] = dict(sorted(responses.items()))
    schemas = document.get("components", {}).get("schemas", {})
    for name in _POWERTOOLS_ONLY_SCHEMAS:  # ordered: ValidationError is used by the other two
        others = {key: value for key, value in schemas.items() if key != name}
        if f'"#/components/schemas/{name}"' not in json.dumps({**document, "components": {"schemas": others}}):
            schemas.pop(name, None)
    return _user_id_bound(_integral_numbers(document))


def _user_id_bound(value: Any) -> Any:
    """The userId bound, exactly: Powertools writes it as a float, 2**63, one past what the route accepts."""
    if isinstance(value, dict):
        if value.get("type") == "integer" and value.get("maximum") == float(MAX_USER_ID):
            value["maximum"] = MAX_USER_ID
        for child in value.values():
            _user_id_bound(child)
    elif isinstance(value, list):
        for child in value:
            _user_id_bound(child)
    return value


def _internal_error_response(document: dict[str, Any]) -> dict[str, Any]:
    document.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        ErrorResponse.__name__, ErrorResponse.model_json_schema()
    )
    return {
        "description": 'Unexpected server error: {"success": false, "message": "internal error"}; '
                       "the details are only in the log.",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}}},
    }


def _integral_numbers(value: Any) -> Any:
    """1.0 -> 1 in bounds Powertools writes as floats (exactly representable ones only)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(item) for item in value]
    return value


def render(document: dict[str, Any] | None = None) -> str:
    return json.dumps(build() if document is None else document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else DEFAULT_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
