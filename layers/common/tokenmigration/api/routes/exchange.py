"""POST /auth/migration/exchange: the public session exchange (RFC 8693 shape).

Declared here so the template and the OpenAPI document have the route; its own issue implements it.
Until then it answers 501 ``{"error": "not_implemented"}``.
"""

from __future__ import annotations

from http import HTTPStatus

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from tokenmigration.api.errors import json_response
from tokenmigration.api.models import OAuthError
from tokenmigration.api.spec import BASE_PATH

PATH = f"{BASE_PATH}/exchange"

DESCRIPTION = """\
Public (no IAM): a client that still holds a live Express session trades it for a Sanctum token, in the
shape of OAuth 2.0 Token Exchange (RFC 8693). Not implemented yet: answers 501.
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id="exchangeSession",
        summary="Exchange an Express session for a Sanctum token",
        description=DESCRIPTION,
        tags=["exchange"],
        responses={501: {"description": "Not implemented yet.",
                         "content": {"application/json": {"model": OAuthError}}}},
    )
    def exchange() -> Response[OAuthError]:
        return json_response(HTTPStatus.NOT_IMPLEMENTED, {"error": "not_implemented"})
