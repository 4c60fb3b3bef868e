"""The API Gateway resolver every API function uses: validation, error mapping, and nothing that can 5xx
on client input.

``build_app(*route_modules)`` makes a resolver with the routes of the given modules (each module of
``tokenmigration.api.routes`` has a ``register(app)``): a function registers only its own route, the
OpenAPI builder registers all of them.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from http import HTTPStatus
from types import ModuleType
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import OpenAPIRequestValidationMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)

from tokenmigration.api.errors import (
    DOMAIN_STATUS,
    INTERNAL_ERROR_MESSAGE,
    ApiError,
    domain_error_response,
    failure,
    internal_error_response,
    validation_error_response,
)
from tokenmigration.api.observability import count, logger

_JSON_MEDIA_TYPES = ("application/json",)


class JsonBodyValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, reading bodies as JSON only and never failing on a bad body.

    Powertools parses form-encoded bodies too; the admin routes take JSON, and ``curl -d '{...}'`` (sent
    as form-encoded) would otherwise get a confusing "confirm is required". A body that is not valid
    base64, not UTF-8, nested too deep or holding a number too long to convert raises something other
    than JSONDecodeError in Powertools, which would become a 500: all of those are a 400 here.
    """

    def _get_body(self, app: Any) -> Any:
        content_type = app.current_event.headers.get("content-type", "") or ""
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type and media_type not in _JSON_MEDIA_TYPES and not media_type.endswith("+json"):
            raise RequestValidationError([
                {"type": "content_type", "loc": ("body",), "msg": "must be sent as application/json"},
            ])
        try:
            body = app.current_event.json_body
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
            # JSONDecodeError is a ValueError; so is "exceeds the limit for integer string conversion".
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "is not valid JSON"}],
                                         ) from None
        if body is not None and not isinstance(body, dict):
            # Powertools would take the first element of a JSON array as the body (its form-field rule).
            raise RequestValidationError([{"type": "model_type", "loc": ("body",), "msg": "must be a JSON object"}])
        return body


class MigrationResolver(APIGatewayRestResolver):
    def __init__(self) -> None:
        # debug=False always: POWERTOOLS_DEV must never put tracebacks into response bodies.
        super().__init__(enable_validation=True, response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR,
                         debug=False)
        self._request_validation_middleware = JsonBodyValidation()
        _register_error_handlers(self)

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        try:
            return super().resolve(event, context)
        except Exception:
            # Routes and exception handlers cannot get here; an event API Gateway did not build could.
            logger.exception("the request could not be resolved")
            count("InternalErrors")
            return {
                "statusCode": int(HTTPStatus.INTERNAL_SERVER_ERROR),
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"success": False, "message": INTERNAL_ERROR_MESSAGE}),
                "isBase64Encoded": False,
            }


def _register_error_handlers(app: APIGatewayRestResolver) -> None:
    @app.exception_handler(RequestValidationError)
    def _invalid_request(exc: RequestValidationError) -> Response:
        count("ValidationErrors")
        return validation_error_response(exc.errors())

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_content_type(exc: RequestUnsupportedContentType) -> Response:
        count("ValidationErrors")
        return validation_error_response([{"type": "content_type", "loc": ("body",),
                                           "msg": "must be sent as application/json"}])

    @app.exception_handler([ApiError, *DOMAIN_STATUS])
    def _refused(exc: Exception) -> Response:
        return domain_error_response(exc)

    @app.not_found
    def _not_found(exc: NotFoundError) -> Response:
        return failure(HTTPStatus.NOT_FOUND, "Not found")

    @app.exception_handler(ResponseValidationError)
    def _bad_response(exc: ResponseValidationError) -> Response:
        # A route answered with something its model does not allow: our bug, never the client's.
        logger.error("response failed its model", extra={"validation_errors": _locations(exc.errors())})
        count("InternalErrors")
        return internal_error_response()

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error")
        count("InternalErrors")
        return internal_error_response()


def _locations(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Types and places only: the values could be anything the route was about to send.
    return [{"loc": list(error.get("loc", ())), "type": error.get("type")} for error in errors]


def build_app(*route_modules: ModuleType) -> MigrationResolver:
    """A resolver with the routes of ``route_modules`` (modules of ``tokenmigration.api.routes``)."""
    app = MigrationResolver()
    for module in route_modules:
        module.register(app)
    return app
