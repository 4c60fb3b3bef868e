"""What the routes declare for the OpenAPI document: the base path, the IAM security, documented responses."""

from __future__ import annotations

from typing import Any

from tokenmigration.api.errors import INTERNAL_ERROR_MESSAGE
from tokenmigration.api.models import ConflictResponse, ErrorResponse, ValidationErrorResponse

BASE_PATH = "/auth/migration"

# The security scheme of the admin routes (see tokenmigration.api.openapi): AWS SigV4 through API Gateway.
SIGV4 = "sigv4"
ADMIN: list[dict[str, list[str]]] = [{SIGV4: []}]

_REFUSAL_MODELS: dict[int, type] = {
    400: ValidationErrorResponse,
    404: ErrorResponse,
    409: ConflictResponse,
    503: ErrorResponse,
}


def _json(model: Any) -> dict[str, Any]:
    return {"application/json": {"model": model}}


def responses(status: int, model: Any, description: str, *refusals: tuple[int, str] | tuple[int, str, Any]
              ) -> dict[int, dict[str, Any]]:
    """The ``responses=`` of a route: its success, its refusals (status, description[, model]), and 500."""
    documented: dict[int, dict[str, Any]] = {status: {"description": description, "content": _json(model)}}
    for refusal in refusals:
        code, text = refusal[0], refusal[1]
        refusal_model = refusal[2] if len(refusal) > 2 else _REFUSAL_MODELS[code]
        documented[code] = {"description": text, "content": _json(refusal_model)}
    documented[500] = {"description": f"Unexpected server error: {{\"success\": false, \"message\": "
                                      f"\"{INTERNAL_ERROR_MESSAGE}\"}}; the details are only in the log.",
                       "content": _json(ErrorResponse)}
    return documented
