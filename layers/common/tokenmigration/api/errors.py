"""How every refusal and failure becomes a response: domain errors 4xx, validation 400, the rest 500.

api.md: every admin response carries ``success`` and ``message``; validation errors are 400 with
``errors: {field: [messages]}``; unknown user or run 404; conflicting state 409; nothing a client can
send produces a 5xx, and a 5xx body never carries a stack trace or a secret (details go to the log).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from tokenmigration.aws import errors as aws_errors
from tokenmigration.engine import errors as engine_errors

INTERNAL_ERROR_MESSAGE = "internal error"
_LOCATIONS = {"body", "query", "path", "header", "cookie"}


class ApiError(Exception):
    """A refusal the route decided on itself: status, message, and extra body fields."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


class FieldError(ApiError):
    """A 400 about one request field that only the domain could judge (a paging cursor, say)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(HTTPStatus.BAD_REQUEST, f"The request is invalid: {field} {message}",
                         errors={field: [message]})


# Domain errors by the status api.md gives them (looked up along the exception's MRO).
DOMAIN_STATUS: dict[type[Exception], int] = {
    engine_errors.UnknownUser: HTTPStatus.NOT_FOUND,
    engine_errors.AlreadyMigrated: HTTPStatus.CONFLICT,
    engine_errors.HoldsTokens: HTTPStatus.CONFLICT,
    engine_errors.NotMigrated: HTTPStatus.CONFLICT,
    # Another transaction holds the user's row: a conflict of the moment, worth retrying.
    engine_errors.UserBusy: HTTPStatus.CONFLICT,
    aws_errors.UnknownRun: HTTPStatus.NOT_FOUND,
    aws_errors.RunInProgress: HTTPStatus.CONFLICT,
    aws_errors.RollbackUnavailable: HTTPStatus.BAD_REQUEST,
    aws_errors.BadCursor: HTTPStatus.BAD_REQUEST,
    aws_errors.ConcurrencyAboveBudget: HTTPStatus.BAD_REQUEST,
    # Step Functions refused to start the run: not the client's doing, and nothing changed.
    aws_errors.ExecutionNotStarted: HTTPStatus.SERVICE_UNAVAILABLE,
}


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception ends a request with (500 for anything not foreseen)."""
    if isinstance(exc, ApiError):
        return int(exc.status)
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return int(DOMAIN_STATUS[cls])
    return int(HTTPStatus.INTERNAL_SERVER_ERROR)


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=int(status), content_type=content_types.APPLICATION_JSON, body=body,
                    headers=headers)


def failure(status: int, message: str, **fields: Any) -> Response:
    return json_response(status, {"success": False, "message": message, **fields})


def domain_error_response(exc: Exception) -> Response:
    """404 / 409 / 400 for the engine's and the control plane's refusals."""
    if isinstance(exc, ApiError):
        return failure(exc.status, exc.message, **exc.fields)
    if isinstance(exc, aws_errors.BadCursor):
        return domain_error_response(FieldError("cursor", "is not valid"))
    if isinstance(exc, aws_errors.ConcurrencyAboveBudget):
        return domain_error_response(FieldError("max_concurrency", str(exc)))
    if isinstance(exc, aws_errors.RunInProgress):
        return failure(HTTPStatus.CONFLICT, f"A run is in progress: {exc.active_run_id}",
                       migration_id=exc.active_run_id)
    if isinstance(exc, aws_errors.ExecutionNotStarted):
        return failure(HTTPStatus.SERVICE_UNAVAILABLE, f"The run could not be started: {exc}",
                       migration_id=exc.run_id)
    return failure(status_of(exc), str(exc))


def internal_error_response() -> Response:
    return failure(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR_MESSAGE)


# --- request validation ---------------------------------------------------------------------------------


def field_name(loc: Iterable[Any]) -> str:
    """("body", "confirm") -> "confirm", ("path", "userId") -> "userId", ("body",) / ("body", 17) -> "body"."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        location, parts = parts[0], parts[1:]
    else:
        location = "body"
    names = [str(part) for part in parts if isinstance(part, str)]
    return ".".join(names) if names else location


def field_message(error: dict[str, Any]) -> str:
    """A short message for one pydantic / Powertools error, without the input it refused."""
    kind = error.get("type", "")
    if kind == "missing":
        return "is required"
    if kind == "json_invalid":
        return "is not valid JSON"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return "must be a JSON object"
    message = str(error.get("msg") or "is invalid")
    return message.removeprefix("Value error, ")


def validation_errors(errors: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for error in errors:
        messages = fields.setdefault(field_name(error.get("loc", ())), [])
        message = field_message(error)
        if message not in messages:
            messages.append(message)
    return fields


def validation_error_response(errors: Iterable[dict[str, Any]]) -> Response:
    fields = validation_errors(errors) or {"body": ["is invalid"]}
    first_field, first_messages = next(iter(fields.items()))
    message = f"The request is invalid: {first_field} {first_messages[0]}"
    others = sum(len(messages) for messages in fields.values()) - 1
    if others:
        message += f" (and {others} more error{'s' if others > 1 else ''})"
    return failure(HTTPStatus.BAD_REQUEST, message, errors=fields)
