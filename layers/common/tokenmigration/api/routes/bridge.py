"""POST /auth/migration/bridge: the Laravel app's server asks which Laravel session carries a browser's Express
login (IAM; the contract is docs/api.md's "Server route", the package is integrations/laravel/).

The protocol lives in ``tokenmigration.exchange`` (``ExchangeService.bridge``); this route checks the flags,
parses the body and shapes the answer. Nothing about the request is logged: it carries a credential.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from tokenmigration.api.errors import json_response
from tokenmigration.api.models import BridgeOffError, BridgeRequestBody, BridgeResponse, OAuthError
from tokenmigration.api.spec import ADMIN, BASE_PATH
from tokenmigration.aws.context import services
from tokenmigration.exchange import BridgeOff, ExchangeError, parse_bridge_request

PATH = f"{BASE_PATH}/bridge"
OPERATION_ID = "bridgeSession"
REQUEST_BODY = BridgeRequestBody  # parsed by tokenmigration.exchange.bridge; documented in docs/openapi.json

DESCRIPTION = """\
AWS IAM: called by the Laravel app's own server (its role needs `execute-api:Invoke` on this route), never by
a browser. Body: `{"session_cookie": "<connect.sid value as the browser sent it>", "client_ip"?: "<the
browser's IP>"}`. Answers the id of the Laravel session row carrying this very Express session: created and
ledgered if needed (exactly one per Express session, whoever carries it first: a run, the exchange or this
route), its payload logged in to guard `web`. A user not migrated yet is migrated on the spot (a user holding
tokens the app made too); no token is rotated or returned. The app switches the request's session to
`session_id`, so the same request continues as the user.

Refusals: 400 `invalid_request` (malformed body); 401 `invalid_grant`, one body for every bad session (forged,
expired, anonymous, unknown user); 403 `bridge_off` while `exchange_enabled` is false or `auth_mode` is
`sanctum` (the caller stops calling for a while); 409 `user_locked` (retry); 429 `slow_down` with
`Retry-After` when the browser's address or its Express session failed too often (failures only, counted per
`client_ip` and per Express session id, never per caller).
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id=OPERATION_ID,
        summary="The Laravel session of a browser's Express login (for the Laravel app's server)",
        description=DESCRIPTION,
        tags=["exchange"],
        security=ADMIN,
        responses={
            200: {"description": "The Laravel session carrying this Express session.",
                  "content": {"application/json": {"model": BridgeResponse}}},
            400: {"description": "Malformed body.", "content": {"application/json": {"model": OAuthError}}},
            401: {"description": "Not a live, signed, logged-in Express session of an existing user.",
                  "content": {"application/json": {"model": OAuthError}}},
            403: {"description": "The exchange is switched off or the app is token-only (`bridge_off`); or, from "
                                 "API Gateway, an unsigned or wrongly signed request (`{\"message\": ...}`).",
                  "content": {"application/json": {"model": BridgeOffError}}},
            409: {"description": "The user's row is held by another transaction: retry.",
                  "content": {"application/json": {"model": OAuthError}}},
            429: {"description": "Too many failures for this browser address or Express session (`slow_down`).",
                  "content": {"application/json": {"model": OAuthError}}},
        },
    )
    def bridge() -> Response[dict[str, Any]]:  # OAuth-shaped answers (documented above)
        container = services()
        event = app.current_event
        try:
            flags = container.flags.read()
            if not flags.exchange_enabled or flags.auth_mode != "dual":
                raise BridgeOff(flags.auth_mode, flags.exchange_enabled)
            request = parse_bridge_request(event.body, event.is_base64_encoded)
            result = container.exchange.bridge(request)
        except ExchangeError as refused:
            return json_response(refused.status, refused.body(), refused.headers())
        return json_response(HTTPStatus.OK, result.body(), result.headers())
