"""POST /auth/migration/start: start a migration run (a Step Functions execution named after the run)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from tokenmigration.api.audit import audited
from tokenmigration.api.errors import json_response
from tokenmigration.api.models import StartRequest, StartResponse
from tokenmigration.api.observability import count
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws import run_control
from tokenmigration.aws.context import services

PATH = f"{BASE_PATH}/start"

DESCRIPTION = """\
Takes the active-run lock with one conditional write, records the run, and starts the migration state
machine with an execution named after the run id. Of any number of simultaneous starts exactly one is
accepted; the others get 409 with the `migration_id` of the run that holds the lock. The lock is held until
the state machine ends (it is released again at once if the execution cannot be started: 503).
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id="startMigration",
        summary="Start a migration run",
        description=DESCRIPTION,
        tags=["runs"],
        security=ADMIN,
        responses=responses(
            202, StartResponse, "The run was started.",
            (400, "The body is invalid: `confirm` is not `true`, or a size is out of range."),
            (409, "A run (migration or rollback) is in progress; `migration_id` names it."),
            (503, "Step Functions did not start the execution; the run is marked FAILED and nothing changed."),
        ),
    )
    def start_migration(body: Annotated[StartRequest, Body()]) -> Response[StartResponse]:
        with audited(app, "migration.start", success_status=202, dry_run=body.dry_run,
                     chunk_size=body.chunk_size, max_concurrency=body.max_concurrency) as audit:
            started = run_control.start_migration(services(), dry_run=body.dry_run, chunk_size=body.chunk_size,
                                                  max_concurrency=body.max_concurrency)
            audit.update(run_id=started.run_id, execution_arn=started.execution_arn)
        count("RunsStarted")
        return json_response(202, {
            "success": True,
            "message": "Dry run started" if started.dry_run else "Migration started",
            "migration_id": started.run_id,
            "execution_arn": started.execution_arn,
            "dry_run": started.dry_run,
        })
