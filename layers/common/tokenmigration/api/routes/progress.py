"""GET /auth/migration/progress: a run's counters (default: the latest run) and the database's view."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query

from tokenmigration.api.errors import json_response
from tokenmigration.api.models import ProgressResponse, RunId
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws import run_control
from tokenmigration.aws.context import services
from tokenmigration.engine.reporting import stats

PATH = f"{BASE_PATH}/progress"

DESCRIPTION = """\
`progress` comes from the run ledger (counted exactly once per chunk); `stats` is computed from the database,
at most once a minute while a run is in progress (each computation counts the whole users table, which would
compete with the run when polled every second; `progress` stays live).
`is_in_progress` is true exactly while a run holds the active-run lock. `can_rollback` is
`rollback_available` and no run in progress. With no run ever started, `progress` is null.
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.get(
        PATH,
        operation_id="getProgress",
        summary="Progress of a run",
        description=DESCRIPTION,
        tags=["runs"],
        security=ADMIN,
        responses=responses(
            200, ProgressResponse, "The run's progress (null before the first run).",
            (400, "`migration_id` is not a run id."),
            (404, "No run has that id."),
        ),
    )
    def get_progress(
        migration_id: Annotated[RunId, Query(description="Any run id, migration or rollback; default: the latest run.")]
        = None,
    ) -> Response[ProgressResponse]:
        svc = services()
        run_id = migration_id or svc.ledger.latest_run_id()
        progress = svc.ledger.progress(run_id) if run_id else None
        active = run_control.active_run(svc)
        flags = svc.flags.read()
        if progress is None:
            message = "No migration has been started yet"
        else:
            message = f"{progress['kind'].capitalize()} {progress['migration_id']} is {progress['status']}"
        return json_response(200, {
            "success": True,
            "message": message,
            "progress": progress,
            "stats": svc.running_stats.get() if active is not None else stats(svc.engine, bounded=True),
            "is_in_progress": active is not None,
            "can_rollback": flags.rollback_available and active is None,
        })
