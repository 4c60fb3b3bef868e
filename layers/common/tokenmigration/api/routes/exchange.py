"""POST /auth/migration/exchange: the public session exchange (RFC 8693 shape).

A client that still holds a live Express session trades it for a Sanctum token (and, with the Laravel app
key configured, a Laravel session cookie). The whole protocol lives in ``tokenmigration.exchange``; this
route reads the raw request (JSON or form body, or the cookie), checks the ``exchange_enabled`` flag and
shapes the answer. Nothing about the request is logged: it carries a credential.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from tokenmigration.api.errors import json_response
from tokenmigration.api.models import OAuthError, TokenResponse
from tokenmigration.api.spec import BASE_PATH
from tokenmigration.aws.context import services
from tokenmigration.exchange import ExchangeDisabled, ExchangeError
from tokenmigration.exchange.request import client_address

PATH = f"{BASE_PATH}/exchange"

DESCRIPTION = """\
Public (no IAM; API Gateway method throttling applies). A client that still holds a live Express session
trades it for a Sanctum token, in the shape of OAuth 2.0 Token Exchange (RFC 8693). The session comes as the
`connect.sid` cookie (name configurable) or as a JSON or form body: `grant_type` =
`urn:ietf:params:oauth:grant-type:token-exchange`, `subject_token` = the cookie value, `subject_token_type` =
`urn:tokenmigration:express-session`. A user not migrated yet is migrated on the spot (a user holding tokens
the app made too: a migration token is minted next to them); a migrated user's
migration token gets a fresh secret (same token id), so a retried exchange ends with one working token.
With the Laravel app key configured the answer also sets the Laravel session cookie of the user's migrated
session. Every bad session answers the same 401 `invalid_grant`; repeated failures from one client address get
429: the source IP, or behind proxies the right-most untrusted entry of `EXCHANGE_TRUSTED_PROXY_HEADER` (e.g.
`X-Forwarded-For`, with `EXCHANGE_TRUSTED_PROXY_HOPS` trusted proxies appending to it).
"""


def _answer(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response:
    return json_response(status, body, headers=headers)


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id="exchangeSession",
        summary="Exchange an Express session for a Sanctum token",
        description=DESCRIPTION,
        tags=["exchange"],
        responses={
            200: {"description": "The token (and a Set-Cookie for the Laravel session when configured).",
                  "content": {"application/json": {"model": TokenResponse}}},
            400: {"description": "Malformed request.", "content": {"application/json": {"model": OAuthError}}},
            401: {"description": "Not a live, signed, logged-in Express session of an existing user.",
                  "content": {"application/json": {"model": OAuthError}}},
            403: {"description": "The exchange is switched off (exchange_enabled flag).",
                  "content": {"application/json": {"model": OAuthError}}},
            409: {"description": "The user's row is held by another transaction: retry (`user_locked`).",
                  "content": {"application/json": {"model": OAuthError}}},
            429: {"description": "Too many failed attempts from this source.",
                  "content": {"application/json": {"model": OAuthError}}},
        },
    )
    def exchange() -> Response[dict[str, Any]]:  # OAuth-shaped answers (documented above)
        container = services()
        event = app.current_event
        try:
            if not container.flags.read().exchange_enabled:
                raise ExchangeDisabled()
            service = container.exchange
            headers = event.multi_value_headers or event.headers
            settings = container.settings
            source = client_address(headers, event.request_context.identity.source_ip,
                                    settings.exchange_trusted_proxy_header, settings.exchange_trusted_proxy_hops)
            request = service.parse(headers, event.body, event.is_base64_encoded, source=source)
            result = service.exchange(request)
        except ExchangeError as refused:
            return _answer(refused.status, refused.body(), refused.headers())
        return _answer(HTTPStatus.OK, result.body(), result.headers())
