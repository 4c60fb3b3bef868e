"""POST /auth/migration/rollback: back to Express sessions, and a run that revokes what the tool created."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from tokenmigration.api.audit import audited
from tokenmigration.api.errors import json_response
from tokenmigration.api.models import ConfirmRequest, ErrorResponse, RollbackResponse, ValidationErrorResponse
from tokenmigration.api.observability import count
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws import run_control
from tokenmigration.aws.context import services

PATH = f"{BASE_PATH}/rollback"

DESCRIPTION = """\
Only while `rollback_available` is true (a migration run finished and `/complete` was not called). Takes the
active-run lock like `/start`, switches the flags back to `auth_mode=dual`, `sanctum_only=false` at once (Express
sessions work again), and starts the rollback state machine, which removes every token and session row this
tool created, whatever the path that created it. `rollback_available` turns false when that run succeeds.
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id="rollbackMigration",
        summary="Roll the migration back",
        description=DESCRIPTION,
        tags=["runs"],
        security=ADMIN,
        responses=responses(
            202, RollbackResponse, "The rollback run was started.",
            (400, "The body is invalid, or `Rollback is not available` (then without `errors`).",
             ValidationErrorResponse | ErrorResponse),
            (409, "A run is in progress; `migration_id` names it."),
            (503, "Step Functions did not start the execution; the lock is released, rollback stays available."),
        ),
    )
    def rollback_migration(body: Annotated[ConfirmRequest, Body()]) -> Response[RollbackResponse]:
        with audited(app, "migration.rollback", success_status=202) as audit:
            started = run_control.start_rollback(services())
            audit.update(run_id=started.run_id, execution_arn=started.execution_arn)
        count("RollbacksStarted")
        return json_response(202, {
            "success": True,
            "message": "Rollback started: Express sessions are accepted again",
            "auth_mode": "dual",
            "rollback_id": started.run_id,
            "execution_arn": started.execution_arn,
        })
