"""GET /auth/migration/stats: the migration's state from the database, and the feature flags."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from tokenmigration.api.errors import json_response
from tokenmigration.api.models import StatsResponse
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws import run_control
from tokenmigration.aws.context import services
from tokenmigration.aws.flags import as_api_dict
from tokenmigration.engine.reporting import stats

PATH = f"{BASE_PATH}/stats"

DESCRIPTION = """\
`stats` is computed from the database (not from run counters): counted exactly when the users table is small
enough to count within the time limit, else the database planner's estimates with `exact: false`.
`feature_flags.migration_in_progress` is true exactly while a run holds the active-run lock; the other flags
are read from SSM (cached for a few seconds).
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.get(
        PATH,
        operation_id="getStats",
        summary="Migration statistics and feature flags",
        description=DESCRIPTION,
        tags=["flags"],
        security=ADMIN,
        responses=responses(200, StatsResponse, "Statistics and flags."),
    )
    def get_stats() -> Response[StatsResponse]:
        svc = services()
        in_progress = run_control.active_run(svc) is not None
        return json_response(200, {
            "success": True,
            "message": "Migration statistics",
            "stats": stats(svc.engine, bounded=True),
            "feature_flags": as_api_dict(svc.flags.read(), in_progress=in_progress),
        })
