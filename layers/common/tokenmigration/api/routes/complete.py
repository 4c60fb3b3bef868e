"""POST /auth/migration/complete: Sanctum only from now on (the flags of api.md's `/complete` row)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from tokenmigration.api.audit import audited
from tokenmigration.api.errors import json_response
from tokenmigration.api.models import CompleteResponse, ConfirmRequest
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws import run_control
from tokenmigration.aws.context import services

PATH = f"{BASE_PATH}/complete"

DESCRIPTION = """\
Sets `auth_mode=sanctum`, `sanctum_only=true` and `rollback_available=false`: Express sessions are no longer
accepted and the migration can no longer be rolled back. Refused with 409 while a run holds the active-run
lock.
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id="completeMigration",
        summary="Complete the migration (Sanctum only)",
        description=DESCRIPTION,
        tags=["flags"],
        security=ADMIN,
        responses=responses(
            200, CompleteResponse, "The flags say Sanctum only.",
            (400, "The body is invalid: `confirm` is not `true`."),
            (409, "A run is in progress; `migration_id` names it."),
        ),
    )
    def complete_migration(body: Annotated[ConfirmRequest, Body()]) -> Response[CompleteResponse]:
        with audited(app, "migration.complete") as audit:
            flags = run_control.complete_migration(services())
            audit.update(auth_mode=flags.auth_mode, sanctum_only=flags.sanctum_only)
        return json_response(200, {
            "success": True,
            "message": "Migration completed: only Sanctum tokens are accepted from now on",
            "auth_mode": "sanctum_only",
        })
